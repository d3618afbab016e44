"""The evaluation's figures as PNG images: what a person looks at, with no network.

`dvc plots show` draws the CSV plots (plots.py) with Vega from a CDN, so offline it shows a
white page; these images it shows as they are (dvc.yaml declares them as plots), and the export
copies the confusion matrix and the ROC curve beside the model card. Drawn with matplotlib's Agg
canvas (no display, no pyplot state); the PNGs carry no timestamp or version, so a rerun with the
same numbers gives the same bytes and git sees no change.
"""

from __future__ import annotations

import io

import numpy as np

from textclf.core.prepared_data import LENGTH_UNITS
from textclf.evaluate.per_class import per_class_rows
from textclf.evaluate.plots import precision_recall_rows, roc_rows

SIZE = (5.0, 4.0)  # inches; at DPI, 500 x 400 pixels
DPI = 100


def new_figure(height: float = SIZE[1]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(SIZE[0], height), dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def png_bytes(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", metadata={"Software": None})  # no version: stable bytes
    return buf.getvalue()


def confusion_figure(labels: np.ndarray, preds: np.ndarray, names: list[str]):
    """Counts, actual class down, predicted across, each cell written in."""
    k = len(names)
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (labels, preds), 1)
    figure, ax = new_figure()
    ax.imshow(counts, cmap="Blues", vmin=0)
    dark = counts.max() / 2
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{n:,}", ha="center", va="center",
                color="white" if n > dark else "black")
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix (test, n = {len(labels):,})")
    return figure


def curve_figure(rows: list[tuple[float, float]], title: str, x_label: str, y_label: str,
                 diagonal: bool = False):
    figure, ax = new_figure()
    if rows:
        xs, ys = zip(*rows)
        ax.plot(xs, ys, color="C0")
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
    if diagonal:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return figure


def bar_figure(rows: list[tuple[str, float | None, int]], x_label: str, y_label: str,
               title: str, height: float = SIZE[1]):
    """One bar per (name, value in [0, 1] or None, n), in order from the top, each with its
    value and n written in."""
    figure, ax = new_figure(height)
    positions = np.arange(len(rows))
    ax.barh(positions, [value if value is not None else 0.0 for _, value, _ in rows], color="C0")
    for y, (_, value, n) in zip(positions, rows):
        text = "no texts" if value is None else f"{value:.3f}"
        ax.text(0.01, y, f" {text} (n = {n:,})", va="center",
                color="white" if value and value > 0.35 else "black")
    ax.set_yticks(positions, [name for name, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    return figure


def length_figure(bins: dict, length_unit: str):
    """Accuracy per length bin, the bins in order (shortest at the top), n beside each bar."""
    rows = [(name, row["accuracy"], row["n"]) for name, row in bins.items()
            if isinstance(row, dict)]
    return bar_figure(rows, "accuracy", f"length ({LENGTH_UNITS.get(length_unit, length_unit)})",
                      "Accuracy by text length (test)")


def per_class_figure(labels: np.ndarray, preds: np.ndarray, names: list[str]):
    """F1 of each class, in label order, its support beside each bar."""
    rows = [(name, f1, support) for name, _, _, f1, support in
            per_class_rows(labels, preds, names)]
    return bar_figure(rows, "F1", "class", "F1 by class (test)",
                      height=max(SIZE[1], 0.3 * len(names) + 1.0))


def figure_files(labels: np.ndarray, probs: np.ndarray, names: list[str], bins: dict,
                 length_unit: str) -> dict[str, bytes]:
    """The figures of an evaluation: {file name: PNG bytes}, beside plot_files' CSVs."""
    preds = probs.argmax(axis=1)
    what = "" if probs.shape[1] == 2 else ", micro-averaged one-vs-rest"
    figures = {
        "confusion.png": confusion_figure(labels, preds, names),
        "roc.png": curve_figure(roc_rows(labels, probs), f"ROC curve (test{what})",
                                "false positive rate", "true positive rate", diagonal=True),
        "precision_recall.png": curve_figure(precision_recall_rows(labels, probs),
                                             f"Precision-recall curve (test{what})",
                                             "recall", "precision"),
        "length_accuracy.png": length_figure(bins, length_unit),
        "per_class.png": per_class_figure(labels, preds, names),
    }
    return {name: png_bytes(figure) for name, figure in figures.items()}
