"""Plot data as small CSV files that DVC renders (`dvc plots show/diff`) and git diffs."""

from __future__ import annotations

import csv
import io

import numpy as np
from sklearn import metrics as skm

from textclf.evaluate.metrics import DIGITS
from textclf.evaluate.per_class import (
    CONFUSED_PAIRS,
    PAIRS_HEADER,
    PER_CLASS,
    PER_CLASS_HEADER,
    confused_pair_rows,
    per_class_rows,
)

MAX_CURVE_POINTS = 200  # ROC / precision-recall curves are thinned to about this many points


def csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([round(v, DIGITS) if isinstance(v, float) else v for v in row])
    return buf.getvalue()


def confusion_rows(labels: np.ndarray, preds: np.ndarray, names: list[str]):
    """One row per example (DVC's confusion template counts rows)."""
    return [(names[a], names[p]) for a, p in zip(labels, preds)]


def _thin(*curves: np.ndarray):
    keep = np.unique(np.linspace(0, len(curves[0]) - 1, MAX_CURVE_POINTS + 1).round().astype(int))
    return [c[keep] for c in curves]


def roc_rows(labels: np.ndarray, probs: np.ndarray):
    """Binary: the positive class's ROC; multi-class: micro-averaged one-vs-rest."""
    y, score = _binarized(labels, probs)
    if len(np.unique(y)) < 2:
        return []
    fpr, tpr, _ = skm.roc_curve(y, score)
    return list(zip(*[c.astype(float) for c in _thin(fpr, tpr)]))


def precision_recall_rows(labels: np.ndarray, probs: np.ndarray):
    y, score = _binarized(labels, probs)
    if y.sum() == 0:
        return []
    precision, recall, _ = skm.precision_recall_curve(y, score)
    return list(zip(*[c.astype(float) for c in _thin(recall, precision)]))


def _binarized(labels: np.ndarray, probs: np.ndarray):
    if probs.shape[1] == 2:
        return (labels == 1).astype(int), probs[:, 1]
    onehot = np.eye(probs.shape[1], dtype=int)[labels]
    return onehot.ravel(), probs.ravel()


def plot_files(labels: np.ndarray, probs: np.ndarray, names: list[str],
               bins: dict) -> dict[str, str]:
    """The plot files of an evaluation: {file name: CSV text}."""
    preds = probs.argmax(axis=1)
    return {
        "confusion.csv": csv_text(["actual", "predicted"], confusion_rows(labels, preds, names)),
        "roc.csv": csv_text(["fpr", "tpr"], roc_rows(labels, probs)),
        "precision_recall.csv": csv_text(["recall", "precision"],
                                         precision_recall_rows(labels, probs)),
        "length_accuracy.csv": csv_text(
            ["length_bin", "accuracy", "n"],
            [(name, row["accuracy"] if row["accuracy"] is not None else "", row["n"])
             for name, row in bins.items()]),
        PER_CLASS: csv_text(PER_CLASS_HEADER, per_class_rows(labels, preds, names)),
        CONFUSED_PAIRS: csv_text(PAIRS_HEADER, confused_pair_rows(labels, preds, names)),
    }
