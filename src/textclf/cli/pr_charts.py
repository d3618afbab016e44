"""The pull request report's charts: base and PR plot files as Mermaid `xychart-beta` blocks.

GitHub draws Mermaid in comments and job summaries itself, so a reviewer sees the curves in the
page: no artifact to download, no CDN, no image to host. Pure functions of the files' text (the
report reads them from git and the workspace); standard library only, like the report.

Mermaid's xychart has no legend and no per-point x: every series is a list of y values over the
same x-axis categories. So each curve is resampled onto one shared grid of ~20 points, and the
series are told apart by colour (base grey, PR blue), which the caption under each chart names.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from textclf.core import paths

POINTS = 21  # grid points of a resampled curve (0, 5%, ..., 100% of the x range)
# (hex, word) of the base and the PR series: GitHub's grey and blue, readable on light and dark
BASE_COLOUR, PR_COLOUR = ("#8c959f", "grey"), ("#0969da", "blue")
SIZE = {"width": 600, "height": 300}  # pixels: small enough that three charts fit one screen


@dataclass(frozen=True)
class Chart:
    title: str
    path: PurePosixPath  # relative to the DVC project's root, as dvc.yaml declares it
    x: str  # column names in the file
    y: str
    x_label: str
    y_label: str
    categorical: bool = False  # x is a label per row (length bins) rather than a number
    smooth: bool = False  # per-step values are noisy: average each grid cell's neighbourhood
    whole_x: bool = False  # x counts something (steps): whole numbers on a round stride
    y_range: tuple[float, float] | None = None  # fixed y-axis; None lets Mermaid fit the data


# The charts a reviewer of a method change wants first; dvc.yaml declares the same files as plots.
CHARTS = (
    Chart("ROC curve (test)", PurePosixPath(paths.PLOTS, "roc.csv"), "fpr", "tpr",
          "false positive rate", "true positive rate", y_range=(0.0, 1.0)),
    Chart("Accuracy by review length (test)", PurePosixPath(paths.PLOTS, "length_accuracy.csv"),
          "length_bin", "accuracy", "review length", "accuracy", categorical=True),
    Chart("Training loss", PurePosixPath(paths.TRAIN_LOG, "plots/metrics/train/loss.tsv"),
          "step", "loss", "step", "loss", smooth=True, whole_x=True),
)


def read_table(text: str, path: PurePosixPath) -> list[dict[str, str]]:
    """Rows of a CSV, or of a TSV (dvclive's format), as dicts keyed by the header."""
    delimiter = "\t" if path.suffix == ".tsv" else ","
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def parse_number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def points(rows: list[dict[str, str]], x: str, y: str) -> list[tuple[float, float]]:
    """(x, y) pairs sorted by x; rows with a missing or non-numeric value are left out."""
    pairs = [(parse_number(row.get(x)), parse_number(row.get(y))) for row in rows]
    return sorted((a, b) for a, b in pairs if a is not None and b is not None)


def by_category(rows: list[dict[str, str]], x: str, y: str) -> dict[str, float]:
    """{label: y} in file order; empty bins (no value) are left out."""
    return {row[x]: value for row in rows
            if row.get(x) and (value := parse_number(row.get(y))) is not None}


def moving_average(pairs: list[tuple[float, float]], cells: int) -> list[tuple[float, float]]:
    """Each y replaced by the mean over a window of about one grid cell, so that sampling a
    noisy per-step curve at a few points shows its trend rather than whichever step it hits."""
    half = len(pairs) // cells // 2
    ys = [y for _, y in pairs]
    out = []
    for i, (x, _) in enumerate(pairs):
        window = ys[max(0, i - half):i + half + 1]
        out.append((x, sum(window) / len(window)))
    return out


def interpolate(pairs: list[tuple[float, float]], xs: list[float]) -> list[float]:
    """y at each of `xs`, linear between the neighbouring points, held flat beyond the ends."""
    known = [x for x, _ in pairs]
    out = []
    for x in xs:
        if x <= known[0] or x >= known[-1]:
            out.append(pairs[0][1] if x <= known[0] else pairs[-1][1])
            continue
        i = bisect.bisect_left(known, x)  # known[i - 1] < x <= known[i]
        (x0, y0), (x1, y1) = pairs[i - 1], pairs[i]
        out.append(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return out


def grid(lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * i / (POINTS - 1) for i in range(POINTS)]


def whole_grid(lo: float, hi: float) -> list[int]:
    """Whole numbers in [lo, hi] on the smallest round stride (1, 2, 5, 10, 20, 50, ...) that
    gives at most POINTS of them: a short run's few steps are each a label of their own, rather
    than 21 fractional ones ("2.3", "2.6"), and a long run's read 0, 50, 100, ..."""
    strides = (m * 10 ** e for e in range(19) for m in (1, 2, 5))
    for stride in strides:
        first, last = math.ceil(lo / stride), math.floor(hi / stride)
        if last - first + 1 <= POINTS:
            break
    if last <= first:  # a range shorter than one stride: its two ends
        return sorted({math.ceil(lo), math.floor(hi)})
    return [stride * i for i in range(first, last + 1)]


def short(value: float) -> str:
    """4 significant digits: plenty for a chart, and keeps the comment small."""
    return f"{value:.4g}"


def quoted(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def curve_axes(chart: Chart, sides: dict[str, list[tuple[float, float]]]):
    """The x-axis labels and each side's y values on one grid. Runs over the same x range
    (ROC: 0 to 1; loss: the same steps) share the x values themselves; runs of different
    lengths (more epochs in the PR) are compared at the same fraction of their own run."""
    ranges = {name: (pairs[0][0], pairs[-1][0]) for name, pairs in sides.items()}
    if len(set(ranges.values())) == 1:
        lo, hi = next(iter(ranges.values()))
        xs = whole_grid(lo, hi) if chart.whole_x else grid(lo, hi)
        labels, x_label = [str(x) if chart.whole_x else short(x) for x in xs], chart.x_label
        per_side = {name: xs for name in sides}
    else:
        labels = [f"{round(100 * i / (POINTS - 1))}%" for i in range(POINTS)]
        spans = ", ".join(f"{name} {short(lo)} to {short(hi)}" for name, (lo, hi) in ranges.items())
        x_label = f"fraction of the run ({chart.x_label}: {spans})"
        per_side = {name: grid(*ranges[name]) for name in sides}
    values = {}
    for name, pairs in sides.items():
        if chart.smooth:
            pairs = moving_average(pairs, POINTS - 1)
        values[name] = interpolate(pairs, per_side[name])
    return labels, x_label, values


def category_axes(sides: dict[str, dict[str, float]]):
    """Labels in file order (the PR's first), kept where every side has a value."""
    order = list(dict.fromkeys(label for side in reversed(list(sides.values())) for label in side))
    labels = [label for label in order if all(label in side for side in sides.values())]
    return labels, {name: [side[label] for label in labels] for name, side in sides.items()}


def mermaid(chart: Chart, base_text: str | None, pr_text: str | None, base_name: str) -> str | None:
    """One chart as a fenced Mermaid block with its caption, or None when neither side has
    usable data (the file is absent on both sides, or holds fewer than two points)."""
    texts = {base_name: base_text, "this PR": pr_text}
    colours = {base_name: BASE_COLOUR, "this PR": PR_COLOUR}
    in_caption = {base_name: f"`{base_name}`", "this PR": "this PR"}
    tables = {name: read_table(text, chart.path) for name, text in texts.items() if text}
    if chart.categorical:
        cats = {name: by_category(rows, chart.x, chart.y) for name, rows in tables.items()}
        cats = {name: side for name, side in cats.items() if side}
        if not cats:
            return None
        labels, values = category_axes(cats)
        x_label = chart.x_label
    else:
        curves = {name: points(rows, chart.x, chart.y) for name, rows in tables.items()}
        curves = {name: pairs for name, pairs in curves.items() if len(pairs) >= 2}
        if not curves:
            return None
        labels, x_label, values = curve_axes(chart, curves)
    if not labels:
        return None
    config = {"xyChart": SIZE, "themeVariables": {"xyChart": {
        "plotColorPalette": ", ".join(colours[name][0] for name in values)}}}
    lines = ["%%{init: " + json.dumps(config) + "}%%", "xychart-beta",
             f"    title {quoted(chart.title)}",
             f"    x-axis {quoted(x_label)} [{', '.join(quoted(label) for label in labels)}]"]
    y_axis = f"    y-axis {quoted(chart.y_label)}"
    if chart.y_range:
        y_axis += f" {short(chart.y_range[0])} --> {short(chart.y_range[1])}"
    lines.append(y_axis)
    lines += [f"    line [{', '.join(short(v) for v in ys)}]" for ys in values.values()]
    caption = ", ".join(f"{colours[name][1]}: {in_caption[name]}" for name in values)
    missing = [in_caption[name] for name in texts if name not in values]
    if missing:
        caption += f" ({' and '.join(missing)}: no data in `{chart.path}`)"
    return "```mermaid\n" + "\n".join(lines) + "\n```\n" + caption

