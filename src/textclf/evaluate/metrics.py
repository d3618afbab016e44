"""Quality metrics as flat, stable, rounded numbers: what `dvc metrics diff` compares."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

LENGTH_EDGES = (256, 512, 768, 1024, 1280)  # bins (0,256], (256,512], ..., (1024,1280], >1280
DIGITS = 6  # rounding of every float written, so diffs show real changes only


def _round(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), DIGITS)


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 and ROC-AUC (for the positive class 1 when binary, macro
    averages when multi-class), cross-entropy loss in nats, n, and the binary confusion counts."""
    k = probs.shape[1]
    preds = probs.argmax(axis=1)
    average = "binary" if k == 2 else "macro"
    out = {
        "accuracy": skm.accuracy_score(labels, preds),
        "precision": skm.precision_score(labels, preds, average=average, zero_division=0),
        "recall": skm.recall_score(labels, preds, average=average, zero_division=0),
        "f1": skm.f1_score(labels, preds, average=average, zero_division=0),
        "roc_auc": roc_auc(labels, probs),
        "loss": skm.log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=list(range(k))),
    }
    out = {key: _round(value) for key, value in out.items()}
    out["n"] = int(len(labels))
    if k == 2:
        tn, fp, fn, tp = skm.confusion_matrix(labels, preds, labels=[0, 1]).ravel()
        out.update(tp=int(tp), fp=int(fp), fn=int(fn), tn=int(tn))
    return out


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC-AUC (one-vs-rest macro for multi-class); None when the labels hold a single class."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    if probs.shape[1] == 2:
        return skm.roc_auc_score(labels, probs[:, 1])
    if len(present) < probs.shape[1]:  # macro OvR is undefined for absent classes: skip them
        scores = [skm.roc_auc_score(labels == c, probs[:, c]) for c in present]
        return float(np.mean(scores))
    return skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")


def bootstrap_ci(labels: np.ndarray, preds: np.ndarray, num_labels: int, resamples: int,
                 seed: int, chunk: int = 100) -> dict:
    """95% percentile-bootstrap intervals of accuracy and F1 (binary: class 1; else macro).

    Each resample's F1 follows the point estimate's rule (`classification_metrics`, i.e.
    sklearn's f1_score): binary F1 is 0 when class 1 is neither a label nor a prediction; the
    macro average is over the classes present in the resample's labels or predictions, so a
    rare class that a resample misses is left out rather than counted as F1 = 0.
    """
    if resamples == 0:
        return {}
    rng = np.random.default_rng(seed)
    n = len(labels)
    acc, f1 = [], []
    classes = [1] if num_labels == 2 else list(range(num_labels))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        y, p = labels[idx], preds[idx]
        acc.append((y == p).mean(axis=1))
        scores, present = [], []
        for c in classes:
            tp = ((p == c) & (y == c)).sum(axis=1)
            denom = (p == c).sum(axis=1) + (y == c).sum(axis=1)
            scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
            present.append(denom > 0)
        if num_labels == 2:
            f1.append(scores[0])
        else:
            f1.append(np.sum(scores, axis=0) / np.maximum(np.sum(present, axis=0), 1))
    acc, f1 = np.concatenate(acc), np.concatenate(f1)
    return {
        "accuracy_ci_low": _round(np.percentile(acc, 2.5)),
        "accuracy_ci_high": _round(np.percentile(acc, 97.5)),
        "f1_ci_low": _round(np.percentile(f1, 2.5)),
        "f1_ci_high": _round(np.percentile(f1, 97.5)),
    }


CONFUSION_COUNTS = ("tp", "fp", "fn", "tn")  # binary counts: in run.json, not the headline


def headline_metrics(labels: np.ndarray, probs: np.ndarray, resamples: int,
                     seed: int) -> tuple[dict, dict]:
    """A metrics file's contents (metrics/eval.json, metrics/baseline.json): the metrics of
    `classification_metrics` and their 95% bootstrap intervals (`resamples` seeded by `seed`:
    the same resamples for every classifier of the same test texts); and, apart, the binary
    confusion counts."""
    metrics = classification_metrics(labels, probs)
    counts = {key: metrics.pop(key) for key in CONFUSION_COUNTS if key in metrics}
    metrics.update(bootstrap_ci(labels, probs.argmax(axis=1), probs.shape[1], resamples, seed))
    return metrics, counts


def bin_names(edges=LENGTH_EDGES) -> list[str]:
    lows = (0,) + tuple(edges[:-1])
    return [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f">{edges[-1]}"]


def length_bin_index(lengths: np.ndarray, edges=LENGTH_EDGES) -> np.ndarray:
    """Bin of each length: (0, e0] -> 0, (e0, e1] -> 1, ..., > e_last -> len(edges)."""
    return np.searchsorted(np.asarray(edges), lengths, side="left")


def _accuracy(labels: np.ndarray, preds: np.ndarray) -> float | None:
    return _round((labels == preds).mean()) if len(labels) else None


def length_bins(labels: np.ndarray, preds: np.ndarray, lengths: np.ndarray, num_labels: int,
                edges=LENGTH_EDGES, truncated_preds: np.ndarray | None = None) -> dict:
    """Per bin of review length: n, accuracy and, when binary, TP FP FN TN precision recall;
    with `truncated_preds` (texts scored whole, eval.long_texts: windows), the accuracy the
    truncated texts had too (accuracy_truncated)."""
    which = length_bin_index(lengths, edges)
    out = {}
    for b, name in enumerate(bin_names(edges)):
        y, p = labels[which == b], preds[which == b]
        row = {"n": int(len(y)), "accuracy": _accuracy(y, p)}
        if truncated_preds is not None:
            row["accuracy_truncated"] = _accuracy(y, truncated_preds[which == b])
        if num_labels == 2:
            tp, fp = int(((p == 1) & (y == 1)).sum()), int(((p == 1) & (y == 0)).sum())
            fn, tn = int(((p == 0) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
            row.update(tp=tp, fp=fp, fn=fn, tn=tn,
                       precision=_round(tp / (tp + fp)) if tp + fp else None,
                       recall=_round(tp / (tp + fn)) if tp + fn else None)
        out[name] = row
    return out


def over_limit_row(labels: np.ndarray, preds: np.ndarray, over: np.ndarray,
                   truncated_preds: np.ndarray | None = None) -> dict:
    """n and accuracy of the texts over the model's input length (`over`: a mask), and with
    `truncated_preds` the accuracy they had truncated (accuracy_truncated)."""
    row = {"n": int(over.sum()), "accuracy": _accuracy(labels[over], preds[over])}
    if truncated_preds is not None:
        row["accuracy_truncated"] = _accuracy(labels[over], truncated_preds[over])
    return row
