"""Predict gives the evaluate stage's probabilities: the real stages (prepare, train, evaluate) run
in this process on tiny models, then textclf.cli.predict scores the same test texts, from
models/ and from an export of it. And predict as a tool files are piped through: lines split on
"\n" only, one record per input line with its id, error records for bad lines, output streamed
chunk by chunk."""

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support import tiny

from textclf.cli.predict import main, progress_bar
from textclf.export.hf_export import check_export, export_model
from textclf.modeling.classifier import load_model
from textclf.predictor import load_predictor, predict_texts

EVAL_BATCH = 8  # tiny.tiny_params' eval.batch_size
# the precision rule as the stages take it: bf16 where the hardware computes it natively (or
# --native-bf16=yes), fp32 elsewhere
PRECISION = "auto"

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


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dirs, data_dir) -> dict[str, Path]:
    """The real stages, run in this process, each run in its own directory laid out as dvc.yaml
    lays out the repository (tests/support/tiny.py)."""
    root = tmp_path_factory.mktemp("predict_runs")
    return {name: tiny.run_stages(root / name, tiny.tiny_params(
                tiny_dirs[family], data_dir, method=method, data=DATA[family],
                train={"epochs": 1, "mixed_precision": PRECISION}, eval={"bootstrap": 0}),
                in_process=True)
            for name, (family, method) in RUNS.items()}


def prepared_dir(run_dir: Path) -> Path:
    return run_dir / "data" / "prepared"


def prepared_texts(run_dir: Path) -> list[str]:
    return [json.loads(line)["text"] for line in
            (prepared_dir(run_dir) / "test_texts.jsonl").read_text().splitlines()]


def evaluated(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in
            (run_dir / "outputs" / "evaluate" / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list(RUNS))
def test_predict_equals_evaluate(runs, name):
    run_dir = runs[name]
    report = json.loads((prepared_dir(run_dir) / "report.json").read_text())
    assert report["truncated"]["test"] == 12  # every test text was cut
    texts, reference = prepared_texts(run_dir), evaluated(run_dir)
    predictor = load_predictor(run_dir / "models", "auto", PRECISION)  # evaluate's device
    assert predictor.info.method == name.split("_", 1)[1]

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


def test_cli_arguments_file_and_stdin(runs, tmp_path, capsys, monkeypatch):
    """The three ways to pass texts: same lines for the same texts. (As a separate process, stdin
    is read by test_records_stream_out_while_the_input_is_still_open.)"""
    run_dir = runs["gpt2_finetune"]
    texts = prepared_texts(run_dir)[:3]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    base = ["--model-dir", str(run_dir / "models"), "--batch-size", str(EVAL_BATCH),
            "--mixed-precision", PRECISION]
    results = {
        "args": run_main(base + texts, capsys),
        "file": run_main(base + ["--file", str(tmp_path / "texts.txt")], capsys),
        # no newline after the last line: still a line
        "stdin": run_main(base, capsys, "\n".join(texts), monkeypatch),
    }
    for form, (code, _, err) in results.items():
        assert code == 0, f"{form}: {err}"
    lines = results["args"][1].splitlines()
    assert len(lines) == 3
    assert results["file"][1] == results["stdin"][1] == results["args"][1]
    reference = evaluated(run_dir)
    for number, (line, ref) in enumerate(zip(lines, reference), start=1):
        record = json.loads(line)
        assert set(record) == {"id", "predicted", "probability", "probs"}
        assert record["id"] == number
        assert list(record["probs"].values()) == ref["probs"]


def test_main_reads_jsonl_files(runs, data_dir, capsys):
    """A .jsonl file's "text" fields (here the raw test file, which has labels too)."""
    run_dir = runs["gpt2_finetune"]
    code, out, _ = run_main(["--model-dir", str(run_dir / "models"), "--file",
                             str(data_dir / "test.jsonl"), "--batch-size", str(EVAL_BATCH),
                             "--mixed-precision", PRECISION], capsys)
    records = records_of(out)
    assert code == 0 and [r["id"] for r in records] == list(range(1, 13))  # no "id" field
    assert [list(r["probs"].values()) for r in records] == \
        [r["probs"] for r in evaluated(run_dir)]


def run_main(argv: list[str], capsys, stdin: str | bytes | None = None, monkeypatch=None):
    if stdin is not None:
        data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case, fragment", [
    ("no_model_dir", "does not exist; train a model first"),
    ("dir_without_model", "holds no trained model"),
    ("empty_stdin", "no texts to predict: stdin holds none"),
    ("empty_file", "no texts to predict: --file"),
    ("missing_file", "no such file"),
    ("not_an_export", "it is not a model exported by textclf"),
])
def test_errors_are_one_clear_line(runs, tiny_dirs, tmp_path, capsys, monkeypatch, case,
                                   fragment):
    """Failures of the whole run: one line on stderr, exit status 2, nothing on stdout."""
    models = str(runs["gpt2_finetune"] / "models")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "empty_dir").mkdir()
    argv, stdin = {
        "no_model_dir": (["--model-dir", str(tmp_path / "missing"), "hello"], None),
        "dir_without_model": (["--model-dir", str(tmp_path / "empty_dir"), "hello"], None),
        "empty_stdin": (["--model-dir", models], ""),
        "empty_file": (["--model-dir", models, "--file", str(tmp_path / "empty.txt")], None),
        "missing_file": (["--model-dir", models, "--file", str(tmp_path / "nope.txt")], None),
        # a Hugging Face model directory, but not one stages/export.py wrote
        "not_an_export": (["--model-dir", str(tiny_dirs["gpt2"]), "hello"], None),
    }[case]
    code, out, err = run_main(argv, capsys, stdin, monkeypatch)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and fragment in err, err
    assert "Traceback" not in err


def scored(runs, texts: list[str]) -> list[list[float]]:
    """The probabilities predict gives `texts` on their own, as a list."""
    predictor = load_predictor(runs["gpt2_finetune"] / "models", "auto", PRECISION)
    return predictor.probabilities(texts, EVAL_BATCH).tolist()


def records_of(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_lines_split_on_newline_only(runs, tmp_path, capsys, monkeypatch, source):
    """U+2028, U+0085 (both in real IMDb reviews) and a lone "\r" are not line ends: three
    lines give three records, each scored as the whole line; a "\r\n" ending is one end."""
    texts = ["A fine film\u2028with a twist at the end.", "Dull\x85and far too long.",
             "Sharp\rwriting and a great cast."]
    raw = texts[0] + "\n" + texts[1] + "\r\n" + texts[2] + "\n"
    (tmp_path / "reviews.txt").write_bytes(raw.encode("utf-8"))
    argv = ["--model-dir", str(runs["gpt2_finetune"] / "models"), "--batch-size", "2",
            "--mixed-precision", PRECISION]
    if source == "file":
        code, out, err = run_main(argv + ["--file", str(tmp_path / "reviews.txt")], capsys)
    else:
        code, out, err = run_main(argv, capsys, raw, monkeypatch)
    assert code == 0, err
    records = records_of(out)
    assert len(records) == 3  # str.splitlines() made 6 lines of them
    assert [r["id"] for r in records] == [1, 2, 3]
    np.testing.assert_allclose([list(r["probs"].values()) for r in records],
                               scored(runs, texts), rtol=0, atol=1e-6)


def test_bad_lines_give_error_records_in_place(runs, tmp_path, capsys):
    """JSON lines: the input's ids, else line numbers; a bad line gives an error record in its
    place and every other line is still scored; the exit status says some failed."""
    good = prepared_texts(runs["gpt2_finetune"])[:3]
    lines = [json.dumps({"id": "r-1", "text": good[0]}).encode(),
             b"",
             b"{not json",
             json.dumps({"id": 7, "text": "<br /> "}).encode(),
             json.dumps({"review": good[1]}).encode(),
             json.dumps({"text": good[1]}).encode(),
             b'{"id": "bytes", "text": "caf\xe9"}',  # Latin-1, not UTF-8
             json.dumps({"id": ["a", 1], "text": good[2]}).encode()]
    (tmp_path / "reviews.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = run_main(["--model-dir", str(runs["gpt2_finetune"] / "models"),
                               "--file", str(tmp_path / "reviews.jsonl"), "--batch-size", "2",
                               "--mixed-precision", PRECISION], capsys)
    assert code == 1 and "Traceback" not in err
    records = records_of(out)
    assert [r["id"] for r in records] == ["r-1", 2, 3, 7, 5, 6, 7, ["a", 1]]
    errors = {i: r["error"] for i, r in enumerate(records, start=1) if "error" in r}
    assert sorted(errors) == [2, 3, 4, 5, 7]
    assert errors[2].startswith("line 2: empty line")
    assert errors[3].startswith("line 3: invalid JSON")
    assert errors[4].startswith("line 4: empty text")
    assert errors[5] == 'line 5: expected a JSON object with a string "text" field'
    assert errors[7].startswith("line 7: invalid UTF-8")
    np.testing.assert_allclose([list(records[i - 1]["probs"].values()) for i in (1, 6, 8)],
                               scored(runs, good), rtol=0, atol=1e-6)


def test_empty_text_lines_and_arguments_give_error_records(runs, tmp_path, capsys):
    models = str(runs["gpt2_finetune"] / "models")
    (tmp_path / "texts.txt").write_text("A good film.\n\n  <br />\nA bad film.\n")
    code, out, _ = run_main(["--model-dir", models, "--file", str(tmp_path / "texts.txt"),
                             "--mixed-precision", PRECISION], capsys)
    records = records_of(out)
    assert code == 1 and [r["id"] for r in records] == [1, 2, 3, 4]
    assert [("error" in r) for r in records] == [False, True, True, False]
    assert records[1]["error"].startswith("line 2: empty text")
    code, out, _ = run_main(["--model-dir", models, "fine", "<br />", "--mixed-precision",
                             PRECISION], capsys)
    assert code == 1 and records_of(out)[1] == {
        "id": 2, "error": "text 2: empty text (after removing HTML line breaks and whitespace); "
                          "nothing to classify"}


def test_output_file(runs, tmp_path, capsys):
    texts = prepared_texts(runs["gpt2_finetune"])[:3]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    code, out, _ = run_main(["--model-dir", str(runs["gpt2_finetune"] / "models"),
                             "--file", str(tmp_path / "texts.txt"), "--output",
                             str(tmp_path / "scored.jsonl"), "--mixed-precision", PRECISION],
                            capsys)
    assert code == 0 and out == ""
    records = records_of((tmp_path / "scored.jsonl").read_text())
    assert [r["id"] for r in records] == [1, 2, 3]
    np.testing.assert_allclose([list(r["probs"].values()) for r in records],
                               scored(runs, texts), rtol=0, atol=1e-6)


@pytest.mark.slow  # a fresh process or a data pass: seconds
def test_records_stream_out_while_the_input_is_still_open(runs, tmp_path):
    """A chunk of --batch-size lines is scored and written (flushed) as soon as it is read: the
    first records come out while stdin is still open, as they must for a 25,000-line file."""
    texts = prepared_texts(runs["gpt2_finetune"])[:5]
    process = subprocess.Popen(
        [sys.executable, "-m", "textclf.cli.predict", "--model-dir",
         str(runs["gpt2_finetune"] / "models"), "--batch-size", "2", "--mixed-precision",
         PRECISION], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**tiny.ENV, "CI": ""}, cwd=tmp_path)
    try:
        process.stdin.write(("\n".join(texts[:2]) + "\n").encode())
        process.stdin.flush()
        first = []
        reader = threading.Thread(target=lambda: first.append(process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout=120)  # loading the model takes seconds; the old code waits for EOF
        assert first and first[0], "no record came out before the input ended"
        assert json.loads(first[0])["id"] == 1
        process.stdin.write(("\n".join(texts[2:]) + "\n").encode())
        process.stdin.close()
        rest = process.stdout.read().decode().splitlines()
        assert process.wait(timeout=60) == 0, process.stderr.read().decode()
        # no progress bar, ours or the libraries' loading bars: stderr is not a terminal
        assert process.stderr.read().decode() == ""
    finally:
        process.kill()
    assert [json.loads(line)["id"] for line in rest] == [2, 3, 4, 5]


def test_progress_only_on_a_terminal_and_never_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress_bar(None).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not progress_bar(None).disable
    monkeypatch.setenv("CI", "true")
    assert progress_bar(None).disable


@pytest.mark.parametrize("name", list(RUNS))
def test_predict_from_an_export_equals_evaluate(runs, tmp_path, name):
    """`--model-dir` takes an export (stages/export.py) as it takes models/: the same
    probabilities as the evaluate stage, head_tail truncation (bert_finetune) included."""
    run_dir = runs[name]
    model, info = load_model(run_dir / "models")
    export_model(model, info, tmp_path / "export")
    texts = prepared_texts(run_dir)
    check_export(tmp_path / "export", model, info, texts)
    predictor = load_predictor(tmp_path / "export", "auto", PRECISION)
    probs = predictor.probabilities(texts, EVAL_BATCH)
    reference = np.array([r["probs"] for r in evaluated(run_dir)])
    # in bf16 the export's own arithmetic (GPT-2's head bias folded into the final norm) rounds
    # differently from the trained model's; in fp32 the same numbers
    atol = 1e-6 if predictor.accelerator.precision == "fp32" else 1e-2
    np.testing.assert_allclose(probs, reference, rtol=0, atol=atol)
    assert (probs.argmax(1) == reference.argmax(1)).all()


def quantized_linears(model) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    return sum(isinstance(m, DynamicInt8Linear) for m in model.modules())


@pytest.mark.parametrize("name", list(RUNS))
def test_int8_predict_agrees_with_full_precision(runs, name):
    """--quantize int8: the blocks' linear layers (GPT-2's Conv1D too) run as int8 products,
    and the probabilities stay close to fp32's: the same labels wherever fp32's margin exceeds
    the difference allowed."""
    from transformers.pytorch_utils import Conv1D

    run_dir = runs[name]
    texts = prepared_texts(run_dir)
    full = load_predictor(run_dir / "models", "cpu", "fp32").probabilities(texts, EVAL_BATCH)
    predictor = load_predictor(run_dir / "models", "cpu", "auto", quantize="int8")
    assert predictor.accelerator.precision == "fp32"  # no bf16 autocast around int8
    blocks = 4  # the tiny models' blocks: 4 linear layers each (GPT-2: c_attn, c_proj, c_fc,
    # mlp.c_proj; BERT: query, key, value, attention output, intermediate, output: 6)
    per_block = 6 if name.startswith("bert") else 4
    assert quantized_linears(predictor.model) == blocks * per_block
    assert not any(isinstance(m, Conv1D) for m in predictor.model.modules())
    int8 = predictor.probabilities(texts, EVAL_BATCH)
    allowed = 0.05
    assert np.abs(int8 - full).max() < allowed
    sure = np.abs(full[:, 1] - full[:, 0]) > 2 * allowed
    assert (int8.argmax(1) == full.argmax(1))[sure].all()


def test_int8_is_opt_in_and_cpu_only(runs, capsys):
    """The default predictor (and `textclf predict`) computes as evaluated, without int8; int8
    with bf16 or a GPU is refused in one line."""
    models = runs["gpt2_finetune"] / "models"
    assert quantized_linears(load_predictor(models, "cpu", PRECISION).model) == 0
    capsys.readouterr()  # the load's progress bar
    code, out, err = run_main(["--model-dir", str(models), "--quantize", "int8",
                               "--mixed-precision", "bf16", "A fine film."], capsys)
    assert code == 2 and err.startswith("error: --quantize int8 runs on the CPU")
    code, out, _ = run_main(["--model-dir", str(models), "--quantize", "int8",
                             "A fine film.", "Dull."], capsys)
    assert code == 0 and [r["id"] for r in records_of(out)] == [1, 2]


def test_gpt2s_conv1d_becomes_the_linear_it_is(tiny_dirs):
    """Before quantizing, each Conv1D (weight stored (in, out)) becomes an nn.Linear computing
    the same product: a GPT-2's hidden states are unchanged to float rounding."""
    import torch
    from transformers import AutoModel

    from textclf.quantize import conv1d_as_linear

    model = AutoModel.from_pretrained(tiny_dirs["gpt2"]).eval()
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        before = model(ids).last_hidden_state
        conv1d_as_linear(model)
        after = model(ids).last_hidden_state
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 4 * 4
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
