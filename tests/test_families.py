"""The export of every family in the family table, with every method it takes: pipeline() loads
it with the evaluate stage's probabilities, and `textclf predict --model-dir` reads it as it reads
models/. GPT-2 and GPT-NeoX with a linear head export as their stock class; every other family
and the attention head as textclf's own class (textclf.export.hf_model), which stock
transformers refuses, loaded after `import textclf.export` or with trust_remote_code=True.

One case per new family runs by default (seconds each); the rest, the attention head of every
family, the fresh-process loading and one `dvc exp run` per kind of model are slow."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import tiny
from test_attention_export import attention_export
from test_export import PIPELINE, SHORT_TEXTS, evaluate_probabilities, trained_model_dir
from test_export_loading import WRONG_WAYS, fresh_process

import textclf.export  # noqa: F401  registers textclf's exported class
from textclf.core.data import clean_text
from textclf.core.errors import UnsupportedModelError
from textclf.core.families import FAMILIES
from textclf.export.hf_export import check_export, export_model
from textclf.export.hf_model import AUTO_MAP, MODEL_TYPE, MODULE
from textclf.modeling.classifier import load_model
from textclf.predictor import load_predictor

STOCK = {"gpt2": "GPT2ForSequenceClassification", "gpt_neox": "GPTNeoXForSequenceClassification"}
# One case per family runs by default (the original three have theirs in test_export.py); the
# leading-space tokenizers (Qwen2, Gemma) and the zero-shot prompt among them
DEFAULT = {("llama", "lora"), ("qwen2", "zero_shot"), ("mistral", "finetune"),
           ("gemma3_text", "zero_shot"), ("phi3", "lora"), ("roberta", "finetune"),
           ("xlm-roberta", "lora"), ("distilbert", "finetune"), ("deberta-v2", "lora"),
           ("modernbert", "finetune")}
CASES = [pytest.param(family, method, marks=() if (family, method) in DEFAULT
                      else pytest.mark.slow)
         for family, fam in FAMILIES.items()
         for method in ("finetune", "lora", *(("zero_shot",) if fam.causal else ()))]


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    """The fixture's test reviews (all cut at test_export's MAX_TOKENS) and short ones."""
    rows = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    return [clean_text(r["text"]) for r in rows] + SHORT_TEXTS


@pytest.fixture(scope="module")
def exported(tiny_dirs, data_dir, texts, tmp_path_factory):
    """(family, method) -> (models dir, export dir, notes, check), each built on first use."""
    root = tmp_path_factory.mktemp("family_exports")
    done = {}

    def get(family: str, method: str):
        if (family, method) not in done:
            run = root / f"{family}_{method}"
            models = trained_model_dir(tiny_dirs[family], data_dir, run / "models", family,
                                       method, "left" if FAMILIES[family].causal else "right")
            model, info = load_model(models)
            notes = export_model(model, info, run / "export")
            check = check_export(run / "export", model, info, texts)
            done[family, method] = (models, run / "export", notes, check)
        return done[family, method]

    return get


def pipeline_probabilities(export_dir: Path, texts: list[str], batch_size: int) -> np.ndarray:
    """The class probabilities of pipeline("text-classification") in this process (textclf's
    class registered by `import textclf.export`), in label order."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(export_dir), truncation=True,
                        top_k=None, device="cpu")
    config = classify.model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    rows = classify(texts, batch_size=batch_size)
    return np.array([[{r["label"]: r["score"] for r in row}[n] for n in names] for row in rows])


@pytest.mark.parametrize("family, method", CASES)
def test_export_gives_evaluate_probabilities(exported, texts, family, method):
    models, export_dir, notes, check = exported(family, method)
    config = json.loads((export_dir / "config.json").read_text())
    if family in STOCK:  # the head's bias folded into the final norm's
        assert notes.architecture == STOCK[family] and not notes.remote_code
        assert notes.bias_folded_into == f"{FAMILIES[family].final_norm}.bias"
    else:
        assert notes.architecture == "TextclfForSequenceClassification" and notes.remote_code
        assert config["model_type"] == MODEL_TYPE and config["auto_map"] == AUTO_MAP
        assert config["base_config"]["model_type"] == family
        assert config["pooling"] == FAMILIES[family].pooling
        assert (export_dir / f"{MODULE}.py").is_file()
    assert check.max_diff < 1e-4 and check.n_cut > 0
    reference = evaluate_probabilities(models, texts)
    for batch_size in (1, 4):  # one text at a time, and padded batches
        np.testing.assert_allclose(pipeline_probabilities(export_dir, texts, batch_size),
                                   reference, rtol=0, atol=1e-4, err_msg=f"batch {batch_size}")
    from_export = load_predictor(export_dir, "cpu", "fp32").probabilities(texts, batch_size=8)
    np.testing.assert_allclose(from_export, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("how", ["last", "mean"])
def test_the_exported_pooling_is_trainings(how):
    """hf_model.py holds its own copy of the pooling (it runs without textclf): the same
    vectors as textclf.modeling.classifier.pool, padding on the right, the left or both."""
    import torch

    from textclf.export import hf_model
    from textclf.modeling import classifier

    hidden = torch.randn(4, 6, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1],
                         [0, 1, 1, 1, 1, 0]])
    torch.testing.assert_close(hf_model.pool(hidden, mask, how),
                               classifier.pool(hidden, mask, how), rtol=0, atol=0)


@pytest.mark.parametrize("family, method", [("gpt2", "finetune"), ("qwen2", "zero_shot"),
                                            ("gemma3_text", "zero_shot")])
def test_the_leading_space_is_the_exported_tokenizers_own(exported, tiny_dirs, family, method):
    """Training encodes " " + text where the tokenizer does not mark the first word itself; the
    export's tokenizer puts the space there (a Prepend normalizer before its own), so its
    first word gets training's token, not the one it gets at the start of a string."""
    from transformers import AutoTokenizer

    _, export_dir, notes, _ = exported(family, method)
    assert notes.leading_space
    normalizer = json.loads((export_dir / "tokenizer.json").read_text())["normalizer"]
    first = normalizer if normalizer["type"] == "Prepend" else normalizer["normalizers"][0]
    assert first == {"type": "Prepend", "prepend": " "}
    base = AutoTokenizer.from_pretrained(tiny_dirs[family])
    plain, spaced = base(["movie", " movie"], add_special_tokens=False)["input_ids"]
    assert plain != spaced  # the tiny vocabulary tells the two apart
    ids = AutoTokenizer.from_pretrained(export_dir)("movie")["input_ids"]
    assert any(ids[i:i + len(spaced)] == spaced for i in range(len(ids))), ids


@pytest.mark.slow
# tests/test_attention_export.py runs GPT-2, BERT and GPT-NeoX; here one decoder and two
# encoders of the new families (the class is one for all, the base models differ)
@pytest.mark.parametrize("family", ["llama", "deberta-v2", "modernbert"])
def test_attention_head_export_of_other_families(tiny_dirs, data_dir, tmp_path, family):
    models, export_dir, notes, check = attention_export(tiny_dirs[family], data_dir, tmp_path,
                                                        family, "lora")
    assert notes.architecture == "TextclfForSequenceClassification" and check.max_diff < 1e-4
    config = json.loads((export_dir / "config.json").read_text())
    assert config["attention_heads"] == 2 and config["base_config"]["model_type"] == family
    texts = ["Great film.", "Dull, dull, dull.", "An hour too long, but the acting is superb."]
    reference = load_predictor(models, "cpu", "fp32").probabilities(texts, batch_size=8)
    np.testing.assert_allclose(pipeline_probabilities(export_dir, texts, 2), reference, rtol=0,
                               atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("family, method", [("llama", "lora"), ("deberta-v2", "finetune")])
def test_own_class_needs_textclf_or_remote_code_in_a_fresh_process(exported, texts, tmp_path,
                                                                    family, method):
    """Without textclf, stock transformers refuses the export each way a user may load it;
    with trust_remote_code=True the copied modelling file gives evaluate's probabilities."""
    models, export_dir, _, _ = exported(family, method)
    result = fresh_process(WRONG_WAYS, export_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for way, outcome in json.loads(result.stdout.splitlines()[-1]).items():
        assert outcome.startswith("raised ValueError") and "trust_remote_code" in outcome, \
            f"{way}: {outcome}"
    env = {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}  # without textclf
    result = subprocess.run([sys.executable, "-c", PIPELINE, str(export_dir)],
                            input=json.dumps(texts), capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["class"] == "TextclfForSequenceClassification"
    for size, probs in out["probs"].items():
        np.testing.assert_allclose(probs, evaluate_probabilities(models, texts), rtol=0,
                                   atol=1e-4, err_msg=f"batch {size}")


def test_an_unsupported_family_gets_the_one_line_error(exported, tmp_path):
    models, _, _, _ = exported("distilbert", "finetune")
    model, info = load_model(models)
    with pytest.raises(UnsupportedModelError) as error:
        export_model(model, dataclasses.replace(info, family="t5"), tmp_path / "export")
    message = str(error.value)
    assert "model family 't5' is not supported" in message and "\n" not in message
    assert f"supported: {', '.join(FAMILIES)}" in message


@pytest.mark.slow
def test_dvc_exp_run_through_export_and_predict(tiny_dirs, data_dir, tmp_path):
    """`dvc exp run -S model=<tiny dir>` in a fresh repository runs every stage, export
    included, for a decoder (LoRA) and an encoder; the export's pipeline() (in a fresh process)
    and `python -m textclf.cli.predict --model-dir export` give evaluate's predictions.jsonl.
    (Zero-shot of these families is exported and checked in-process above; through DVC, with
    GPT-2, in test_pipeline_dvc.py.)"""
    from test_export_loading import WITH_TEXTCLF

    project = tiny.dvc_project(tmp_path / "project", tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, data={"max_tokens": 24},
        train={"epochs": 1, "mixed_precision": "fp32"}))
    env = {**tiny.ENV, "PYTHONPATH": str(project / "src"),
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    for family, method in [("qwen2", "lora"), ("modernbert", "finetune")]:
        tiny.sh(project, "dvc", "exp", "run", "-S", f"model={tiny_dirs[family]}",
                "-S", f"method={method}")
        config = json.loads((project / "export/config.json").read_text())
        assert config["base_config"]["model_type"] == family
        assert config["textclf"]["method"] == method
        texts = [json.loads(line)["text"] for line in
                 (project / "data/prepared/test_texts.jsonl").read_text().splitlines()]
        evaluated = [json.loads(line)["probs"] for line in
                     (project / "outputs/evaluate/predictions.jsonl").read_text().splitlines()]
        (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
        result = subprocess.run(
            [sys.executable, "-m", "textclf.cli.predict", "--model-dir", "export", "--file",
             str(tmp_path / "texts.txt"), "--batch-size", "8", "--device", "cpu",
             "--mixed-precision", "fp32"], capture_output=True, text=True, env=env, cwd=project)
        assert result.returncode == 0, result.stderr[-3000:]
        predicted = [list(json.loads(line)["probs"].values())
                     for line in result.stdout.splitlines()]
        np.testing.assert_allclose(predicted, evaluated, rtol=0, atol=1e-4,
                                   err_msg=f"predict, {family} {method}")
        result = subprocess.run([sys.executable, "-c", WITH_TEXTCLF, "export"],
                                input=json.dumps(texts), capture_output=True, text=True,
                                env=env, cwd=project)
        assert result.returncode == 0, result.stderr[-3000:]
        np.testing.assert_allclose(json.loads(result.stdout.splitlines()[-1])["probs"],
                                   evaluated, rtol=0, atol=1e-4,
                                   err_msg=f"pipeline, {family} {method}")
