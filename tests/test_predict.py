"""Predict gives the evaluate stage's probabilities: the real stages (prepare, train, evaluate) run
as subprocesses on tiny models, then textclf.predict scores the same test texts."""

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

import tiny
from helpers import REPO, one_thread  # noqa: F401  (fixture)
from textclf.predict import load_predictor, main, predict_texts

EVAL_BATCH = 8  # tiny.tiny_params' eval.batch_size
# fp32 everywhere, also on a GPU: this process may already hold Accelerate's one global state
# (other test modules build fp32 accelerators), which cannot switch to bf16 afterwards.
PRECISION = "no"

# Texts are cut hard (max_tokens far below the fixture reviews' 20-30 tokens), so predictions
# only match evaluation if predict truncates exactly as prepare did.
DATA = {"gpt2": {"max_tokens": 16, "truncation": "left"},
        "bert": {"max_tokens": 12, "truncation": "head_tail", "head_tokens": 4}}
RUNS = {  # name: (family, method); the zero-shot prompt comes around the truncated text
    "gpt2_finetune": ("gpt2", "finetune"),
    "gpt2_lora": ("gpt2", "lora"),
    "gpt2_zero_shot": ("gpt2", "zero_shot"),
    "bert_finetune": ("bert", "finetune"),
}


def stage(script: str, params: Path, *args: Path | str) -> list[str]:
    return [sys.executable, str(REPO / "stages" / script), "--params", str(params),
            *map(str, args)]


def run_commands(*commands: list[str]) -> None:
    """Run the commands side by side (they are independent); fail with the first error."""
    def run(cmd):
        result = subprocess.run(cmd, capture_output=True, text=True, env=tiny.ENV)
        assert result.returncode == 0, f"{cmd[1]} failed:\n{result.stdout}\n{result.stderr}"

    with ThreadPoolExecutor(len(commands)) as pool:
        list(pool.map(run, commands))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dirs, data_dir) -> dict[str, Path]:
    """The real stages with explicit paths: prepare once per model, then train and evaluate
    each run (prepare reads no method params, so the GPT-2 runs share its output)."""
    root = tmp_path_factory.mktemp("predict_runs")
    dirs, params = {}, {}
    for name, (family, method) in RUNS.items():
        dirs[name] = root / name
        dirs[name].mkdir()
        params[name] = dirs[name] / "params.yaml"
        params[name].write_text(yaml.safe_dump(tiny.tiny_params(
            tiny_dirs[family], data_dir, method=method, data=DATA[family],
            train={"epochs": 1, "mixed_precision": PRECISION}, eval={"bootstrap": 0}),
            sort_keys=False))
    one_per_family = {family: name for name, (family, _) in RUNS.items()}.values()
    run_commands(*[stage("prepare.py", params[name], "--out", prepared_dir(dirs[name]),
                         "--report", prepared_dir(dirs[name]).with_suffix(".json"))
                   for name in one_per_family])
    run_commands(*[stage("train.py", params[name], "--prepared", prepared_dir(run_dir),
                         "--out", run_dir / "models", "--metrics", run_dir / "train.json",
                         "--log-dir", run_dir / "train_log", "--checkpoints", run_dir / "ckpt")
                   for name, run_dir in dirs.items()])
    run_commands(*[stage("evaluate.py", params[name], "--prepared", prepared_dir(run_dir),
                         "--model-dir", run_dir / "models", "--metrics-dir", run_dir / "metrics",
                         "--predictions", run_dir / "predictions.jsonl")
                   for name, run_dir in dirs.items()])
    return dirs


def prepared_dir(run_dir: Path) -> Path:
    """The prepare stage's output for a run: one per model family, beside the runs."""
    return run_dir.parent / f"prepared_{RUNS[run_dir.name][0]}"


def prepared_texts(run_dir: Path) -> list[str]:
    return [json.loads(line)["text"] for line in
            (prepared_dir(run_dir) / "test_texts.jsonl").read_text().splitlines()]


def evaluated(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in
            (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(RUNS))
def test_predict_equals_evaluate(runs, name):
    run_dir = runs[name]
    report = json.loads(prepared_dir(run_dir).with_suffix(".json").read_text())
    assert report["truncated"]["test"] == 12  # every test text was cut
    texts, reference = prepared_texts(run_dir), evaluated(run_dir)
    predictor = load_predictor(run_dir / "models", "auto", PRECISION)  # evaluate's device
    assert predictor.info["method"] == name.split("_", 1)[1]

    # The evaluate stage's batches: the same bits
    records = predictor.predict(texts, batch_size=EVAL_BATCH)
    assert len(records) == len(reference) == 12
    for record, ref in zip(records, reference):
        assert list(record["probs"]) == ["0", "1"]  # label names, in class order
        assert list(record["probs"].values()) == ref["probs"]
        assert record["predicted"] == ref["predicted"]
        assert record["probability"] == max(ref["probs"])

    # Other batches: the hidden states and pooled vectors are bit-identical (padding is masked
    # and right-aligned), but the head's (batch x hidden) @ (hidden x classes) product goes
    # through another BLAS code path for other row counts (on CPU, odd ones: 1 or 3 rows), which
    # rounds the logits differently in the last float32 bit. So: equal to a few float32 ulps.
    for batch_size in (1, 3):
        probs = predictor.probabilities(texts, batch_size)
        np.testing.assert_allclose(probs, [r["probs"] for r in reference], rtol=0, atol=1e-6)


def test_raw_texts_are_cleaned_as_in_prepare(runs, data_dir):
    """The fixture's raw test file holds "<br />" breaks; prepare cleaned them before
    tokenizing, and predict must do the same to reach the same numbers."""
    run_dir = runs["bert_finetune"]
    raw = [json.loads(line)["text"] for line in (data_dir / "test.jsonl").read_text().splitlines()]
    assert raw != prepared_texts(run_dir) and any("<br" in t for t in raw)
    records = predict_texts(run_dir / "models", raw, EVAL_BATCH, "auto", PRECISION)
    assert [list(r["probs"].values()) for r in records] == \
        [r["probs"] for r in evaluated(run_dir)]


def test_cli_arguments_file_and_stdin(runs, tmp_path):
    """The three ways to pass texts, as a user runs them: same lines for the same texts."""
    run_dir = runs["gpt2_finetune"]
    texts = prepared_texts(run_dir)[:3]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")  # blank lines are skipped
    base = [sys.executable, "-m", "textclf.predict", "--model-dir", str(run_dir / "models"),
            "--batch-size", str(EVAL_BATCH), "--mixed-precision", PRECISION]
    calls = {
        "args": (base + texts, None),
        "file": (base + ["--file", str(tmp_path / "texts.txt")], None),
        "stdin": (base, "\n".join(texts) + "\n"),
    }

    def call(argv, stdin):
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=tiny.ENV,
                              cwd=tmp_path)

    with ThreadPoolExecutor(len(calls)) as pool:
        results = dict(zip(calls, pool.map(lambda c: call(*c), calls.values())))
    for form, result in results.items():
        assert result.returncode == 0, f"{form}: {result.stderr}"
    lines = results["args"].stdout.splitlines()
    assert len(lines) == 3
    assert results["file"].stdout == results["stdin"].stdout == results["args"].stdout
    reference = evaluated(run_dir)
    for line, ref in zip(lines, reference):
        record = json.loads(line)
        assert set(record) == {"predicted", "probability", "probs"}
        assert list(record["probs"].values()) == ref["probs"]


def test_main_reads_jsonl_files(runs, data_dir, capsys):
    """A .jsonl file's "text" fields (here the raw test file, which has labels too)."""
    run_dir = runs["gpt2_finetune"]
    main(["--model-dir", str(run_dir / "models"), "--file", str(data_dir / "test.jsonl"),
          "--batch-size", str(EVAL_BATCH), "--mixed-precision", PRECISION])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [list(r["probs"].values()) for r in records] == \
        [r["probs"] for r in evaluated(run_dir)]


def run_main(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("case, fragment", [
    ("no_model_dir", "does not exist; train a model first"),
    ("dir_without_model", "holds no trained model"),
    ("empty_stdin", "no texts to predict: stdin holds none"),
    ("empty_file", "no texts to predict: --file"),
    ("empty_text", "text 2 of 2 is empty"),
    ("bad_jsonl", "line 1: expected a JSON object with a string 'text' field"),
])
def test_errors_are_one_clear_line(runs, tmp_path, capsys, monkeypatch, case, fragment):
    models = str(runs["gpt2_finetune"] / "models")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('{"review": "no text field"}\n')
    (tmp_path / "empty_dir").mkdir()
    argv, stdin = {
        "no_model_dir": (["--model-dir", str(tmp_path / "missing"), "hello"], None),
        "dir_without_model": (["--model-dir", str(tmp_path / "empty_dir"), "hello"], None),
        "empty_stdin": (["--model-dir", models], "\n  \n"),
        "empty_file": (["--model-dir", models, "--file", str(tmp_path / "empty.txt")], None),
        "empty_text": (["--model-dir", models, "fine", "<br />"], None),
        "bad_jsonl": (["--model-dir", models, "--file", str(tmp_path / "bad.jsonl")], None),
    }[case]
    code, out, err = run_main(argv, capsys, stdin, monkeypatch)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and fragment in err, err
    assert "Traceback" not in err
