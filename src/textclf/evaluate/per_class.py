"""Per-class results: each class's precision, recall, F1 and support, and the pairs of classes
most often confused with each other. Written as two CSV files beside the other plot data
(metrics/plots/per_class.csv, confused_pairs.csv): `dvc plots show` draws them, git diffs them,
and the model card and the PR report read them back (per_class_table)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

PER_CLASS = "per_class.csv"
CONFUSED_PAIRS = "confused_pairs.csv"
PER_CLASS_HEADER = ["class", "precision", "recall", "f1", "support"]
PAIRS_HEADER = ["pair", "count", "class_a", "class_b", "a_as_b", "b_as_a"]
TOP_PAIRS = 20  # confused pairs written, most confused first


def per_class_rows(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> list[tuple]:
    """(class, precision, recall, F1, support) of each class, in label order; a class never
    predicted has precision 0, one absent from the labels recall and support 0."""
    k = len(names)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, preds, labels=list(range(k)), average=None, zero_division=0)
    return [(names[c], float(precision[c]), float(recall[c]), float(f1[c]), int(support[c]))
            for c in range(k)]


def confused_pair_rows(labels: np.ndarray, preds: np.ndarray, names: list[str],
                       top: int = TOP_PAIRS) -> list[tuple]:
    """The `top` pairs of classes most often confused with each other, most first (ties in
    label order): ("a vs b", a as b + b as a, a, b, a as b, b as a), a before b in label order;
    pairs never confused are left out."""
    k = len(names)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (labels, preds), 1)
    pairs = [(int(counts[a, b] + counts[b, a]), a, b) for a in range(k) for b in range(a + 1, k)]
    pairs = sorted((p for p in pairs if p[0] > 0), key=lambda p: (-p[0], p[1], p[2]))[:top]
    return [(f"{names[a]} vs {names[b]}", n, names[a], names[b], int(counts[a, b]),
             int(counts[b, a])) for n, a, b in pairs]


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of one of these CSV files, as dicts keyed by its header."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
