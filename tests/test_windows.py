"""Whole texts scored as overlapping windows (eval.long_texts: windows): the windows over a
text, how their scores combine, a mock model with known logits, and the real stages and predict
on tiny models: texts within the limit score exactly as truncated, the others whole."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny

from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.batching import Collator
from textclf.modeling.inference import softmax
from textclf.modeling.windows import (
    Windows,
    combine_windows,
    whole_text_logits,
    window_starts,
)

EVAL_BATCH = 8  # tiny.tiny_params' eval.batch_size


@pytest.mark.parametrize("length, budget, stride, starts", [
    (3, 4, 2, [0]),  # within the budget: one window, the text
    (4, 4, 2, [0]),
    (10, 4, 2, [0, 2, 4, 6]),  # the last window ends at the end
    (11, 4, 3, [0, 3, 6, 7]),  # and overlaps its neighbour more when the stride does not fit
    (9, 4, 4, [0, 4, 5]),  # no overlap asked: still every token, the last window aligned
])
def test_window_starts_cover_every_token(length, budget, stride, starts):
    assert window_starts(length, budget, stride) == starts
    covered = set()
    for start in starts:
        assert 0 <= start and start + min(budget, length) <= length
        covered |= set(range(start, min(start + budget, length)))
    assert covered == set(range(length))


@pytest.mark.parametrize("overlap, stride", [(0.0, 100), (0.5, 50), (0.25, 75), (0.999, 1)])
def test_stride_from_overlap(overlap, stride):
    assert Windows(overlap, "mean_logits").stride(100) == stride


def test_combine_rules_by_hand():
    logits = np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 3.0], [5.0, 5.0]], dtype=np.float32)
    owner = np.array([0, 0, 1, 2])
    mean = combine_windows(logits, owner, 3, "mean_logits")
    np.testing.assert_allclose(mean, [[1.0, 1.0], [1.0, 3.0], [5.0, 5.0]])
    probs = softmax(logits)
    combined = combine_windows(logits, owner, 3, "mean_probs")
    np.testing.assert_allclose(softmax(combined), [(probs[0] + probs[1]) / 2, probs[2], probs[3]],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="unknown window combination"):
        combine_windows(logits, owner, 3, "max")


class SumModel(torch.nn.Module):
    """Known logits: (sum of the real ids, number of real tokens) of each row; counts the rows
    it scores."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, input_ids, attention_mask):
        self.rows += len(input_ids)
        ids = (input_ids * attention_mask).sum(dim=1).float()
        return torch.stack([ids, attention_mask.sum(dim=1).float()], dim=1)


@pytest.mark.parametrize("truncation", ["left", "right", "head_tail"])
def test_windows_of_a_mock_model(accelerator, truncation):
    """Texts within the budget keep the logits passed in, bit for bit; a longer text's logits
    are the mean over its windows; a window equal to the truncated ids is not scored again."""
    from textclf.core.tokenization import truncate

    budget, windows = 4, Windows(0.5, "mean_logits")  # stride 2
    full = [[1, 2, 3], list(range(1, 11)), [7, 7, 7, 7], list(range(20, 26))]
    split = TokenizedSplit([np.asarray(truncate(x, budget, truncation, 2), dtype=np.int32)
                            for x in full], np.zeros(4, dtype=np.int64),
                           np.array([len(x) for x in full]))
    truncated = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    model = SumModel()
    scores = whole_text_logits(model, split, full, truncated, budget, windows,
                               Collator(split_format(), pad_id=0), 3, accelerator)
    assert scores.logits[[0, 2]].tobytes() == truncated[[0, 2]].tobytes()
    assert scores.windows.tolist() == [1, 4, 1, 2]
    # text 1: windows at 0, 2, 4, 6 of 1..10; text 3: windows at 0, 2 of 20..25
    win1 = [sum(range(1 + s, 5 + s)) for s in (0, 2, 4, 6)]
    win3 = [sum(range(20 + s, 24 + s)) for s in (0, 2)]
    reused = {"left": 2, "right": 2, "head_tail": 0}[truncation]  # last / first window
    assert scores.scored == model.rows == 6 - reused
    if truncation == "left":  # the last window's logits come from `truncated`
        win1[-1], win3[-1] = truncated[1, 0], truncated[3, 0]
    elif truncation == "right":
        win1[0], win3[0] = truncated[1, 0], truncated[3, 0]
    np.testing.assert_allclose(scores.logits[[1, 3], 0], [np.mean(win1), np.mean(win3)],
                               rtol=1e-6)


def split_format():
    from textclf.core.tokenization import InputFormat

    return InputFormat((), ())


# ---------------------------------------------------------------------------------------------
# The stages and predict, on tiny models

# max_tokens cuts some fixture test texts and not others
RUNS = {"gpt2_finetune": ("gpt2", "finetune", 28), "gpt2_zero_shot": ("gpt2", "zero_shot", 28),
        "bert_finetune": ("bert", "finetune", 26)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dirs, data_dir) -> dict[str, tuple[Path, Path]]:
    """Each run: prepare, train and evaluate truncating; then evaluate again, on the same model,
    with eval.long_texts windows into a second run directory beside it."""
    import shutil

    root = tmp_path_factory.mktemp("window_runs")
    out = {}
    for name, (family, method, max_tokens) in RUNS.items():
        params = tiny.tiny_params(tiny_dirs[family], data_dir, method=method,
                                  data={"max_tokens": max_tokens}, train={"epochs": 1},
                                  eval={"bootstrap": 0})
        truncated = tiny.run_stages(root / name / "truncate", params, in_process=True)
        whole = root / name / "windows"
        for part in ("data", "models", "outputs/train"):  # what export reads of train too
            shutil.copytree(truncated / part, whole / part)
        (whole / "metrics").mkdir()
        shutil.copy(truncated / "metrics/train.json", whole / "metrics/train.json")
        params["eval"].update(long_texts="windows", window_overlap=0.5,
                              window_combine="mean_probs")
        out[name] = truncated, tiny.run_stages(whole, params, stages=("evaluate",),
                                               in_process=True)
    return out


def predictions(run: Path) -> list[dict]:
    return [json.loads(line) for line in
            (run / "outputs/evaluate/predictions.jsonl").read_text().splitlines()]


def over_limit(run: Path) -> np.ndarray:
    split = TokenizedSplit.load(run / "data/prepared/test.npz")
    return split.full_lengths > split.lengths


@pytest.mark.parametrize("name", list(RUNS))
def test_windows_change_only_the_texts_over_the_limit(runs, name):
    truncated, whole = runs[name]
    over = over_limit(truncated)
    assert 0 < over.sum() < len(over)  # some texts of each kind
    before, after = predictions(truncated), predictions(whole)
    for i, (a, b) in enumerate(zip(before, after)):
        if not over[i]:
            assert a == b  # the same bits
    assert any(a["probs"] != b["probs"] for a, b, o in zip(before, after, over) if o)
    run = json.loads((whole / "outputs/evaluate/run.json").read_text())
    assert run["long_texts"] == "windows" and run["windows_scored"] > 0

    # The per-length table: beside each bin the accuracy truncated, which is the first run's;
    # the texts over the limit in a row of their own
    bins_before = json.loads((truncated / "outputs/evaluate/length_bins.json").read_text())
    bins_after = json.loads((whole / "outputs/evaluate/length_bins.json").read_text())
    for key, row in bins_after.items():
        if isinstance(row, dict):
            assert row["accuracy_truncated"] == bins_before[key]["accuracy"]
    labels = np.array([p["label"] == p["predicted"] for p in after])
    assert bins_after["over_limit"]["n"] == over.sum() == bins_before["over_limit"]["n"]
    assert bins_after["over_limit"]["accuracy"] == pytest.approx(labels[over].mean(), abs=1e-6)
    assert "accuracy_truncated" not in bins_before["over_limit"]


@pytest.mark.parametrize("name", ["gpt2_finetune", "bert_finetune"])
def test_predict_with_windows_equals_evaluate(runs, name):
    from textclf.predictor import load_predictor

    _, whole = runs[name]
    texts = [json.loads(line)["text"] for line in
             (whole / "data/prepared/test_texts.jsonl").read_text().splitlines()]
    predictor = load_predictor(whole / "models", "auto", "auto",
                               Windows(0.5, "mean_probs"))
    records = predictor.predict(texts, batch_size=EVAL_BATCH)
    assert [list(r["probs"].values()) for r in records] == [p["probs"] for p in
                                                            predictions(whole)]


def test_predict_cli_long_texts(runs, capsys):
    from textclf.cli.predict import main

    truncated, whole = runs["gpt2_finetune"]
    texts = [json.loads(line)["text"] for line in
             (whole / "data/prepared/test_texts.jsonl").read_text().splitlines()]
    base = ["--model-dir", str(whole / "models"), "--batch-size", str(EVAL_BATCH), *texts]
    outputs = {}
    for mode, extra in (("truncate", []), ("windows", ["--long-texts", "windows",
                                                        "--window-combine", "mean_probs"])):
        with pytest.raises(SystemExit) as exit_:
            main(base + extra)
        assert exit_.value.code == 0
        outputs[mode] = [list(json.loads(line)["probs"].values())
                         for line in capsys.readouterr().out.splitlines()]
    # to float32 rounding (docs/design.md): a text's batch may hold other texts than evaluate's
    np.testing.assert_allclose(outputs["truncate"], [p["probs"] for p in predictions(truncated)],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(outputs["windows"], [p["probs"] for p in predictions(whole)],
                               rtol=0, atol=1e-6)
    with pytest.raises(SystemExit) as exit_:
        main(base + ["--long-texts", "windows", "--window-overlap", "1"])
    assert exit_.value.code == 2 and "--window-overlap must be in [0, 1)" in \
        capsys.readouterr().err


def test_export_compares_with_evaluate_on_the_texts_within_the_limit(runs):
    """The export truncates, as transformers' pipeline does: beside evaluate's windows, only the
    checked texts within the limit compare, and the card says how many were left out."""
    import re

    truncated, whole = runs["gpt2_finetune"]
    params = whole / "params.yaml"
    tiny.run_stages(whole, params, stages=("export",), in_process=True)
    card = (whole / "export/README.md").read_text()
    over = int(over_limit(whole).sum())
    within = len(over_limit(whole)) - over
    found = re.search(r"own predictions of the same (\d+) texts \((\d+) texts over the input "
                      r"length, which evaluate scored whole as windows and this export "
                      r"truncates, left out\).*labels agree on (\d+) of (\d+)", card)
    assert found, card
    assert [int(g) for g in found.groups()] == [within, over, within, within]
    assert "`textclf predict --long-texts windows --window-overlap 0.5 --window-combine " \
           "mean_probs`" in card
    assert "scored whole as overlapping windows" in card


@pytest.mark.slow  # a minute: the stages as subprocesses, evaluate three times
def test_long_texts_benchmark_runs_on_a_tiny_model(tmp_path, tiny_dirs, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "long_texts", tiny.FIXTURES.parents[1] / "benchmarks" / "long_texts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "long_texts.json"
    results = module.main(["--model", str(tiny_dirs["bert"]), "--data",
                           str(tiny.FIXTURES / "reviews.jsonl"), "--train", "24", "--test", "12",
                           "--max-tokens", "24", "--epochs", "1", "--batch-size", "4",
                           "--work", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text())["results"] == results
    assert list(results) == list(module.MODES)
    truncated = results["truncate"]
    assert truncated["windows_scored"] == 0 and 0 < truncated["over_limit_n"] < 12
    for mode, r in results.items():
        assert r["n"] == 12 and r["over_limit_n"] == truncated["over_limit_n"]
        # texts within the limit score the same whatever the mode
        assert r["within_limit_accuracy"] == pytest.approx(truncated["within_limit_accuracy"])
        if mode != "truncate":
            assert r["windows_scored"] > 0
        difference = r["over_limit_vs_truncate"]
        assert difference["difference"] == pytest.approx(
            r["over_limit_accuracy"] - truncated["over_limit_accuracy"], abs=2e-6)
    assert truncated["over_limit_vs_truncate"]["disagreements"] == 0
    printed = capsys.readouterr().out
    assert all(mode in printed for mode in module.MODES)
    assert "windows, mean_probs - truncate, over the limit:" in printed
    # the figures again from the work directory, running nothing
    again = module.main(["--model", str(tiny_dirs["bert"]), "--data",
                         str(tiny.FIXTURES / "reviews.jsonl"), "--max-tokens", "24",
                         "--work", str(tmp_path / "work"), "--from-work",
                         "--out", str(tmp_path / "again.json")])
    assert again == results
