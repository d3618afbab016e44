"""Metrics on literal labels and probabilities, checked against hand computation."""

import json
import math

import numpy as np
import pytest

from textclf.evaluate.metrics import (
    bin_names,
    bootstrap_ci,
    classification_metrics,
    length_bin_index,
    length_bins,
)

# Binary: 8 examples, predictions = argmax
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
PROBS = np.array([[0.1, 0.9], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3],  # TP TP TP FN
                  [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])  # TN TN FP TN


def test_binary_metrics_by_hand():
    out = classification_metrics(LABELS, PROBS)
    tp, fp, fn, tn = 3, 1, 1, 3
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (tp, fp, fn, tn)
    assert out["n"] == 8
    assert out["accuracy"] == pytest.approx((tp + tn) / 8)
    assert out["precision"] == pytest.approx(tp / (tp + fp))
    assert out["recall"] == pytest.approx(tp / (tp + fn))
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # ROC-AUC: share of (positive, negative) pairs ranked correctly by P(class 1)
    pos, neg = PROBS[LABELS == 1, 1], PROBS[LABELS == 0, 1]
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert out["roc_auc"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    loss = -np.mean(np.log(PROBS[np.arange(8), LABELS]))
    assert out["loss"] == pytest.approx(loss, abs=1e-6)


def test_multiclass_macro_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), preds] = 0.8
    out = classification_metrics(labels, probs)
    precision = [1 / 2, 2 / 3, 1 / 1]
    recall = [1 / 2, 2 / 2, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert out["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert out["precision"] == pytest.approx(np.mean(precision), abs=1e-6)
    assert out["recall"] == pytest.approx(np.mean(recall), abs=1e-6)
    assert out["f1"] == pytest.approx(np.mean(f1), abs=1e-6)
    assert out["n"] == 6 and "tp" not in out  # confusion counts are binary-only


def test_metrics_are_flat_rounded_json():
    out = classification_metrics(LABELS, PROBS)
    assert json.loads(json.dumps(out)) == out
    assert all(isinstance(v, (int, float)) for v in out.values())
    assert all(v == round(v, 6) for v in out.values())


def test_single_class_labels_give_null_auc_not_a_crash():
    out = classification_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4],
                                                                [0.1, 0.9]]))
    assert out["roc_auc"] is None and out["accuracy"] == pytest.approx(2 / 3, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Bootstrap intervals

@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    preds = np.where(rng.random(200) < 0.8, labels, 1 - labels)  # about 80% right
    return labels, preds


def test_bootstrap_is_seeded(predictions):
    labels, preds = predictions
    first = bootstrap_ci(labels, preds, 2, 300, seed=1)
    assert first == bootstrap_ci(labels, preds, 2, 300, seed=1)
    assert first != bootstrap_ci(labels, preds, 2, 300, seed=2)
    # the chunk size only batches the work: the same draws, the same interval
    assert first == bootstrap_ci(labels, preds, 2, 300, seed=1, chunk=7)


def test_bootstrap_interval_contains_the_point_estimate(predictions):
    labels, preds = predictions
    ci = bootstrap_ci(labels, preds, 2, 500, seed=0)
    point = classification_metrics(labels, np.eye(2)[preds])
    assert ci["accuracy_ci_low"] < point["accuracy"] < ci["accuracy_ci_high"]
    assert ci["f1_ci_low"] < point["f1"] < ci["f1_ci_high"]
    assert ci["accuracy_ci_high"] - ci["accuracy_ci_low"] < 0.2


def test_bootstrap_multiclass_macro_f1_and_zero_resamples():
    labels = np.array([0, 1, 2] * 20)
    ci = bootstrap_ci(labels, labels.copy(), 3, 50, seed=0)  # all right: every resample is 1
    assert ci == {"accuracy_ci_low": 1.0, "accuracy_ci_high": 1.0, "f1_ci_low": 1.0,
                  "f1_ci_high": 1.0}
    assert bootstrap_ci(labels, labels, 3, 0, seed=0) == {}


def test_bootstrap_macro_f1_leaves_out_a_class_a_resample_misses():
    """A class of 1 text in 100 is absent from about a third of the resamples. The point
    estimate (sklearn, macro over the classes present) is 1.0 when every prediction is right;
    so is every resample's, rather than 2/3 for a class counted as F1 = 0."""
    labels = np.array([0] * 50 + [1] * 49 + [2])
    point = classification_metrics(labels, np.eye(3)[labels])
    ci = bootstrap_ci(labels, labels.copy(), 3, 200, seed=0)
    assert point["f1"] == 1.0
    assert (ci["f1_ci_low"], ci["f1_ci_high"]) == (1.0, 1.0)


def test_bootstrap_f1_is_sklearns_on_each_resample():
    """With errors and a rare class: the interval is the percentiles of sklearn's macro F1 over
    the same resamples (one chunk: the draws are rng.integers(0, n, (resamples, n)))."""
    from sklearn.metrics import f1_score

    labels = np.array([0] * 30 + [1] * 27 + [2] * 3)
    preds = labels.copy()
    preds[[0, 5, 31, 40, 58]] = [1, 2, 0, 2, 1]
    resamples, seed = 300, 3
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(resamples, len(labels)))
    f1 = [f1_score(labels[i], preds[i], average="macro", zero_division=0) for i in draws]
    ci = bootstrap_ci(labels, preds, 3, resamples, seed=seed, chunk=resamples)
    assert ci["f1_ci_low"] == pytest.approx(np.percentile(f1, 2.5), abs=1e-6)
    assert ci["f1_ci_high"] == pytest.approx(np.percentile(f1, 97.5), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Accuracy by review length

def test_bin_names():
    assert bin_names() == ["0-256", "256-512", "512-768", "768-1024", "1024-1280", ">1280"]


@pytest.mark.parametrize("length, name", [
    (1, "0-256"), (256, "0-256"), (257, "256-512"), (512, "256-512"), (513, "512-768"),
    (1024, "768-1024"), (1025, "1024-1280"), (1280, "1024-1280"), (1281, ">1280"),
    (100_000, ">1280")])
def test_length_bins_are_inclusive_on_the_right(length, name):
    assert bin_names()[int(length_bin_index(np.array([length]))[0])] == name


def test_length_bins_counts_and_empty_bins():
    lengths = np.array([10, 256, 300, 1000, 1281, 2000])
    labels = np.array([1, 0, 1, 1, 0, 1])
    preds = np.array([1, 1, 0, 1, 0, 0])
    out = length_bins(labels, preds, lengths, 2)
    assert list(out) == bin_names()
    assert out["0-256"] == {"n": 2, "accuracy": 0.5, "tp": 1, "fp": 1, "fn": 0, "tn": 0,
                            "precision": 0.5, "recall": 1.0}
    assert out["256-512"] == {"n": 1, "accuracy": 0.0, "tp": 0, "fp": 0, "fn": 1, "tn": 0,
                              "precision": None, "recall": 0.0}
    assert out["768-1024"]["n"] == 1 and out["768-1024"]["accuracy"] == 1.0
    assert out[">1280"]["n"] == 2 and out[">1280"]["accuracy"] == 0.5
    for empty in ("512-768", "1024-1280"):
        assert out[empty] == {"n": 0, "accuracy": None, "tp": 0, "fp": 0, "fn": 0, "tn": 0,
                              "precision": None, "recall": None}
    assert "null" in json.dumps(out)  # empty bins serialise as null, not NaN
    assert "NaN" not in json.dumps(out)


def test_length_bins_multiclass_has_no_confusion_counts():
    out = length_bins(np.array([0, 2]), np.array([0, 1]), np.array([5, 600]), 3)
    assert out["0-256"] == {"n": 1, "accuracy": 1.0}
    assert out["512-768"] == {"n": 1, "accuracy": 0.0}
    assert out["256-512"] == {"n": 0, "accuracy": None}
    assert not math.isnan(out["0-256"]["accuracy"])
