"""The texts prepare chose, one JSON-lines file per split in data/prepared/: cleaned, capped and
split as the token ids were, so a stage that needs no tokenizer (the baseline) reads exactly the
texts the model is trained, validated and tested on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from textclf.core import paths
from textclf.core.data import Split

SPLITS = ("train", "val", "test")


def text_lines(split: Split, lengths: np.ndarray | None = None) -> str:
    """One line per text: {"text", "label"} and, when given, its untruncated "length"."""
    rows = ({"text": t, "label": int(y)} for t, y in zip(split.texts, split.labels))
    if lengths is not None:
        rows = ({**row, "length": int(n)} for row, n in zip(rows, lengths, strict=True))
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_rows(directory: Path, split: str) -> list[dict]:
    path = Path(directory) / paths.TEXTS_FILE.format(split=split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the prepare stage again "
                                "(dvc repro prepare)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def load_texts(directory: Path, split: str) -> Split:
    """The texts and labels of one split ("train", "val" or "test") of data/prepared/."""
    rows = read_rows(directory, split)
    return Split([r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=np.int64))
