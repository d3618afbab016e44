"""eval.compile and `textclf predict --compile`: the trained model's torch.compile version
(inductor, weights frozen in) scores as the model does, to the precision's rounding, in the
evaluate stage and in predict; a compiler that fails is one error naming the knob."""

import json
import shutil

import numpy as np
import pytest
import torch
from support import tiny
from support.tensors import run_params

from textclf.core.errors import ParamsError
from textclf.core.families import FAMILIES
from textclf.modeling.classifier import build_classifier
from textclf.modeling.inference import compiled_scorer


def test_a_compiler_that_fails_is_one_error_naming_the_knob(tiny_dirs, data_dir, monkeypatch):
    from torch._inductor.exc import InductorError

    def no_compiler(model):
        def compiled(*args, **kwargs):
            raise InductorError(RuntimeError("Failed to find C++ compiler. Please install one"),
                                "")
        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    clf = build_classifier(run_params(tiny_dirs["gpt2"], data_dir), FAMILIES["gpt2"], 2).eval()
    forward = compiled_scorer(clf)
    batch = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3)}
    with pytest.raises(ParamsError, match=r"eval.compile \(predict --compile\): torch.compile "
                                          r"failed: .*C\+\+ compiler.*; score without it") as e:
        forward(batch)
    assert "\n" not in str(e.value)


def test_an_error_of_the_model_itself_is_not_taken_for_the_compiler(monkeypatch):
    def broken(model):
        def compiled(*args, **kwargs):
            raise ValueError("a bug in the model")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    forward = compiled_scorer(torch.nn.Identity())
    with pytest.raises(ValueError, match="a bug in the model"):
        forward({"input_ids": torch.zeros(1, 1), "attention_mask": torch.ones(1, 1)})


def predictions(run_dir) -> np.ndarray:
    lines = (run_dir / "outputs/evaluate/predictions.jsonl").read_text().splitlines()
    return np.array([json.loads(line)["probs"] for line in lines])


@pytest.mark.slow
def test_the_compiled_model_scores_as_the_model_in_evaluate_and_predict(tiny_dirs, data_dir,
                                                                        tmp_path, capsys):
    """GPT-2 with its last-token block, 12 test texts in batches of 8 of two widths: evaluate
    with eval.compile true against false, then `textclf predict --compile` on the same texts."""
    from torch._dynamo.utils import counters

    from textclf.cli.predict import main
    from textclf.modeling.device import native_bf16_cpu

    run = tiny.run_stages(tmp_path / "run", tiny.tiny_params(tiny_dirs["gpt2"], data_dir),
                          in_process=True)
    eager = predictions(run)
    compiled = tmp_path / "compiled"
    shutil.copytree(run, compiled)  # the same prepared data and model; evaluated again
    torch._dynamo.reset()
    counters.clear()
    tiny.run_stages(compiled, tiny.tiny_params(tiny_dirs["gpt2"], data_dir,
                                               eval={"compile": True}),
                    stages=("evaluate",), in_process=True)
    # the tiny model's bf16 products round at 2^-8; fp32's at 2^-24, summed differently
    tolerance = 2e-2 if native_bf16_cpu() else 1e-5
    np.testing.assert_allclose(predictions(compiled), eager, rtol=0, atol=tolerance)
    assert counters["stats"]["unique_graphs"] >= 1  # compiled, not run as it is
    run_json = json.loads((compiled / "outputs/evaluate/run.json").read_text())
    assert run_json["compiled"] is True

    texts = [json.loads(line)["text"] for line in
             (run / "data/prepared/test_texts.jsonl").read_text().splitlines()]
    capsys.readouterr()  # the stages' log lines
    with pytest.raises(SystemExit) as exit_:
        main(["--model-dir", str(run / "models"), "--batch-size", "8", "--compile", *texts])
    assert exit_.value.code == 0
    predicted = [list(json.loads(line)["probs"].values())
                 for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose(predicted, eager, rtol=0, atol=tolerance)
