"""Predict: label texts with a trained or exported model, one JSON line per input line.

    textclf predict "A wonderful film." "Dull and lifeless."     # texts as arguments
    textclf predict --file reviews.txt                            # one text per line
    textclf predict --file reviews.jsonl --output scored.jsonl    # JSON lines: "text", "id"
    textclf predict --quantize int8 --file reviews.txt            # faster than fp32 on a CPU
    cat reviews.txt | textclf predict --model-dir export --device cpu

Reads a model directory: models/ as the train stage wrote it (what was trained, and textclf.json
naming the base model and the input format), or an export of stages/export.py. Each text is
cleaned, tokenized and truncated exactly as for training and evaluation (head_tail included, also
from an export), and scored as the evaluate stage scores the test split: with --batch-size equal
to eval.batch_size (and the same device, precision and CPU threads) the probabilities are those
of outputs/evaluate/predictions.jsonl, to float32 rounding. With --long-texts windows (and the
evaluate stage's eval.window_overlap and eval.window_combine), a text over the model's input
length is scored whole, as evaluate scores it with eval.long_texts windows; shorter texts score
the same either way.

Input is split into lines on "\\n" only (reviews may hold U+2028 or U+0085, which are not line
ends here); a line's trailing "\\r" is dropped. JSON lines (--format jsonl, the default for a
*.jsonl file) hold one object per line with a "text" string and, optionally, an "id".
Output: one record per input line, in input order, written and flushed chunk by chunk (a chunk is
--batch-size texts) while the rest is still being read:
    {"id": 1, "predicted": "pos", "probability": 0.93, "probs": {"neg": 0.07, "pos": 0.93}}
"id" is the input's "id" (JSON lines) or else its line number (for texts given as arguments,
their position). A line that cannot be scored (empty after cleaning, invalid JSON, no "text",
invalid UTF-8) gives {"id": ..., "error": "..."} and the others are scored; the exit status is
then 1. Progress is shown on stderr when it is a terminal (never under CI). Failures of the whole
run (no model, no input) print one `error:` line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from textclf.cli import HelpFormatter
from textclf.core import paths
from textclf.core.data import DataError, clean_text
from textclf.predictor import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOW_COMBINE,
    DEFAULT_WINDOW_OVERLAP,
    QUANTIZE,
    PredictError,
    Predictor,
    load_predictor,
    prediction_record,
    windows_of,
)

# torch and transformers are imported inside the functions that need them (textclf.predictor
# does the same): bad arguments and empty input fail at once, before seconds of imports.

# ---------------------------------------------------------------------------------------------
# Lines in, records out

@dataclass
class InputRecord:
    """One input line: its id and cleaned text, or why it cannot be scored."""

    id: Any  # the input's "id", else its line (or argument) number
    text: str | None = None  # cleaned, non-empty
    error: str | None = None


def text_record(ident: Any, text: str, where: str) -> InputRecord:
    cleaned = clean_text(text)
    if not cleaned:
        return InputRecord(ident, error=f"{where}: empty text (after removing HTML line breaks "
                                        "and whitespace); nothing to classify")
    return InputRecord(ident, cleaned)


def parse_line(raw: bytes, number: int, jsonl: bool) -> InputRecord:
    """The record of input line `number` (1-based), its "\\n" (and a "\\r" before it) removed."""
    where = f"line {number}"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return InputRecord(number, error=f"{where}: invalid UTF-8 at byte {e.start}")
    if number == 1:
        line = line.removeprefix("\ufeff")  # a byte order mark (Windows editors)
    line = line.removesuffix("\n").removesuffix("\r")
    if not jsonl:
        return text_record(number, line, where)
    if not line.strip():
        return InputRecord(number, error=f"{where}: empty line; expected a JSON object")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return InputRecord(number, error=f"{where}: invalid JSON ({e.msg} at column {e.colno})")
    ident = row.get("id", number) if isinstance(row, dict) else number
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        return InputRecord(ident, error=f"{where}: expected a JSON object with a string "
                                        "\"text\" field")
    return text_record(ident, row["text"], where)


def read_records(stream: BinaryIO, jsonl: bool) -> Iterator[InputRecord]:
    """Records of a byte stream, read lazily: iterating a binary stream splits on b"\\n" only,
    and a text is decoded line by line, so one bad line spoils nothing else."""
    for number, raw in enumerate(stream, start=1):
        yield parse_line(raw, number, jsonl)


def predict_records(predictor: Predictor, records: Iterable[InputRecord],
                    batch_size: int) -> Iterator[list[dict]]:
    """Output records chunk by chunk, in input order: a chunk closes when it holds
    `batch_size` texts to score (or the input ends), so output follows input closely."""
    pending: list[InputRecord] = []
    n_texts = 0
    for record in records:
        pending.append(record)
        n_texts += record.error is None
        if n_texts == batch_size:
            yield _scored(predictor, pending, batch_size)
            pending, n_texts = [], 0
    if pending:
        yield _scored(predictor, pending, batch_size)


def _scored(predictor: Predictor, records: list[InputRecord], batch_size: int) -> list[dict]:
    texts = [r.text for r in records if r.error is None]
    probs = iter(predictor.probabilities(texts, batch_size) if texts else [])
    return [{"id": r.id, "error": r.error} if r.error is not None else
            {"id": r.id, **prediction_record(next(probs), predictor.label_names)}
            for r in records]


def count_lines(path: Path) -> int:
    """Lines of a file, as read_records splits them (for the progress bar's total)."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def progress_bar(total: int | None):
    """Texts done, on stderr; silent when stderr is not a terminal or under CI (logs)."""
    from tqdm.auto import tqdm

    quiet = not sys.stderr.isatty() or bool(os.environ.get("CI"))
    return tqdm(total=total, unit="line", file=sys.stderr, disable=quiet, dynamic_ncols=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf predict",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("texts", nargs="*",
                        help="texts to classify; without any, --file or else stdin is read")
    parser.add_argument("--file", type=Path, default=None,
                        help="one text per line, or JSON lines with \"text\" (and \"id\")")
    parser.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                        help="how to read --file or stdin: auto = jsonl for a *.jsonl file, "
                             "else text")
    parser.add_argument("--output", type=Path, default=None,
                        help="write the JSON lines to this file instead of stdout")
    parser.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR,
                        help="trained model directory (models/) or an export")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="texts per batch and per output chunk; as eval.batch_size, it "
                             "reproduces the evaluate stage's probabilities")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto = a GPU if there is one")
    parser.add_argument("--mixed-precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="as train.mixed_precision: auto = bf16 where the GPU or CPU "
                             "computes it natively, else fp32")
    parser.add_argument("--long-texts", choices=("truncate", "windows"), default="truncate",
                        help="a text over the model's input length: truncate = cut it as in "
                             "training; windows = score it whole, as overlapping windows (as "
                             "the evaluate stage does with eval.long_texts windows)")
    parser.add_argument("--window-overlap", type=float, default=DEFAULT_WINDOW_OVERLAP,
                        help="share of a window's tokens also in the next one, in [0, 1) "
                             "(eval.window_overlap)")
    parser.add_argument("--window-combine", choices=("mean_logits", "mean_probs"),
                        default=DEFAULT_WINDOW_COMBINE,
                        help="one score from a text's windows (eval.window_combine)")
    parser.add_argument("--quantize", choices=QUANTIZE, default="none",
                        help="int8: the blocks' linear layers dynamically quantized, faster than "
                             "fp32 on a CPU (against bf16 on one with native bf16: "
                             "docs/performance.md); the probabilities move by int8's rounding "
                             "(agreement with full precision: docs/performance.md); none = as "
                             "evaluated")
    parser.add_argument("--compile", action="store_true",
                        help="score with the model's torch.compile version (eval.compile): "
                             "faster batches after 20-50 s of compiling, for many texts; needs "
                             "a C++ compiler on a CPU")
    args = parser.parse_args(argv)
    if not 0 <= args.window_overlap < 1:
        parser.error(f"--window-overlap must be in [0, 1), got {args.window_overlap}")
    if args.texts and args.file:
        parser.error("give texts as arguments or --file, not both")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")

    try:
        records, total = input_records(args.texts, args.file, args.format)
        first = next(records, None)  # empty input fails here, before the model loads
        if first is None:
            raise PredictError(f"no texts to predict: "
                               f"{f'--file {args.file}' if args.file else 'stdin'} holds none")
    except (PredictError, DataError, OSError) as e:
        fail(str(e))
    from textclf.core.errors import EXPECTED_ERRORS
    from textclf.core.runner import quiet_libraries

    quiet_libraries()
    try:
        predictor = load_predictor(args.model_dir, args.device, args.mixed_precision,
                                   windows_of(args.long_texts, args.window_overlap,
                                              args.window_combine),
                                   quantize=args.quantize, compiled=args.compile)
        failed = write_records(predict_records(predictor, itertools.chain([first], records),
                                               args.batch_size), args.output, total)
    except (PredictError, OSError, *EXPECTED_ERRORS) as e:
        fail(str(e))
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            fail("the GPU ran out of memory; lower --batch-size")
        raise
    sys.exit(1 if failed else 0)


def input_records(texts: list[str], file: Path | None,
                  fmt: str) -> tuple[Iterator[InputRecord], int | None]:
    """The records to score, read lazily, and their number when known: the arguments, else
    --file, else stdin."""
    if texts:
        return (text_record(i, t, f"text {i}") for i, t in enumerate(texts, start=1)), len(texts)
    jsonl = fmt == "jsonl" or (fmt == "auto" and file is not None and file.suffix == ".jsonl")
    if file is not None:
        if not file.is_file():
            raise FileNotFoundError(f"--file {file}: no such file")
        return _file_records(file, jsonl), count_lines(file)
    if sys.stdin.isatty():
        print("reading texts from stdin, one per line (end with Ctrl-D)", file=sys.stderr)
    return read_records(sys.stdin.buffer, jsonl), None


def _file_records(path: Path, jsonl: bool) -> Iterator[InputRecord]:
    with open(path, "rb") as f:
        yield from read_records(f, jsonl)


def write_records(chunks: Iterable[list[dict]], output: Path | None, total: int | None) -> int:
    """Write each chunk as JSON lines and flush it; returns the number of error records."""
    out = open(output, "w", encoding="utf-8", newline="\n") if output else sys.stdout
    failed = 0
    try:
        with progress_bar(total) as bar:
            for chunk in chunks:
                out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk))
                out.flush()
                failed += sum("error" in r for r in chunk)
                bar.update(len(chunk))
    except BrokenPipeError:  # the reader stopped early (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if output:
            out.close()
    return failed


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
