"""Human-readable reports: the error analysis and prediction records."""

from __future__ import annotations

import json

import numpy as np

EXCERPT_CHARS = 300  # characters of a text shown in the error analysis


def prediction_lines(labels: np.ndarray, probs: np.ndarray, names: list[str]) -> str:
    """One JSON line per example: index, true label, predicted label, class probabilities."""
    preds = probs.argmax(axis=1)
    return "".join(
        json.dumps({"index": i, "label": names[y], "predicted": names[p],
                    "probs": [float(x) for x in row]}) + "\n"
        for i, (y, p, row) in enumerate(zip(labels, preds, probs)))


def read_prediction_probs(text: str) -> np.ndarray:
    """The (N, K) class probabilities of prediction_lines' output, in index order."""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    probs = np.zeros((len(rows), len(rows[0]["probs"]) if rows else 0), dtype=np.float64)
    for row in rows:
        probs[row["index"]] = row["probs"]
    return probs


def errors_markdown(texts: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str],
                    n: int) -> str:
    """The `n` most confident wrong predictions, most confident first, with text excerpts."""
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    confidence = probs[wrong, preds[wrong]]
    top = wrong[np.argsort(-confidence, kind="stable")][:n]
    lines = [f"# Most confident errors ({len(wrong)} wrong of {len(labels)})", "",
             "| # | true | predicted | p(predicted) | text |", "|---|---|---|---|---|"]
    for i in top:
        text = texts[i]
        excerpt = text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")
        excerpt = excerpt.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {i} | {names[labels[i]]} | {names[preds[i]]} | "
                     f"{probs[i, preds[i]]:.4f} | {excerpt} |")
    return "\n".join(lines) + "\n"
