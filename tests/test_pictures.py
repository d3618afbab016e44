"""Names and pictures (issue 21): class names for integer labels, the figures as PNG images that
`dvc plots show` shows offline and the model card links, and charts whose axes read in order."""

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def plot_entries(stage: str) -> dict[str, dict]:
    """{file: options} of a stage's `plots:` in dvc.yaml."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("plots", [])
    return {k: v or {} for entry in plots for k, v in
            (entry.items() if isinstance(entry, dict) else [(entry, {})])}


def test_accuracy_by_length_keeps_the_bins_in_length_order():
    """bar_horizontal_sorted ordered the bins by accuracy; the chart's template keeps the
    file's order (the bins, shortest first) and draws accuracy from 0 to 1."""
    options = plot_entries("evaluate")["metrics/plots/length_accuracy.csv"]
    template = json.loads((REPO / ".dvc" / "plots" / f"{options['template']}.json").read_text())
    y = template["encoding"]["y"]
    assert y["field"] == "<DVC_METRIC_Y>" and "sort" in y and y["sort"] is None
    assert template["encoding"]["x"]["scale"]["domain"] == [0, 1]
