"""Names and pictures: class names for integer labels, the figures as PNG images that
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


def test_figures_are_stable_pngs_with_the_class_names():
    import numpy as np

    from textclf.evaluate.figures import confusion_figure, figure_files
    from textclf.evaluate.metrics import length_bins

    labels = np.array([1, 1, 1, 0, 0, 0])
    probs = np.array([[0.1, 0.9], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2], [0.4, 0.6], [0.9, 0.1]])
    bins = length_bins(labels, probs.argmax(1), np.array([10, 100, 300, 600, 900, 2000]), 2)
    files = figure_files(labels, probs, ["negative", "positive"], bins, "gpt2_tokens")
    assert set(files) == {"confusion.png", "roc.png", "precision_recall.png",
                          "length_accuracy.png", "per_class.png"}
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in files.values())
    # the same numbers give the same bytes: a rerun leaves git with nothing to commit
    assert figure_files(labels, probs, ["negative", "positive"], bins, "gpt2_tokens") == files
    ax = confusion_figure(labels, probs.argmax(1), ["negative", "positive"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["negative", "positive"]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "2", "2"]


def test_loss_figure_draws_the_log_and_an_empty_one(tmp_path):
    from textclf.train.loss_figure import write_loss_figure
    from textclf.train.train_log import LOGGED, empty_log

    empty_log(tmp_path / "empty")
    assert write_loss_figure(tmp_path / "empty").read_bytes().startswith(b"\x89PNG")
    log = tmp_path / "run" / LOGGED[0][1]
    log.parent.mkdir(parents=True)
    log.write_text("timestamp\tstep\tloss\n" + "".join(f"0\t{s}\t{1 / s}\n" for s in (2, 4, 6)))
    assert write_loss_figure(tmp_path / "run") == tmp_path / "run" / "loss.png"
    assert (tmp_path / "run" / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_named_classes_and_pictures_reach_every_output(tiny_dirs, data_dir, tmp_path):
    """data.label_names [negative, positive] on 0/1 data: meta.json, the predictions, the
    confusion plot, the export's id2label and the model card say the names; the figures are PNGs
    under metrics/, the card carries license and language and shows two of them from export/."""
    import re

    from support import tiny

    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, data={"label_names": ["negative",
                                                                               "positive"]},
                              train={"epochs": 1}, export={"license": "apache-2.0",
                                                           "language": ["en"]})
    run = tiny.run_stages(tmp_path, params, stages=("prepare", "train", "evaluate", "export"),
                          in_process=True)
    names = ["negative", "positive"]
    assert json.loads((run / "data/prepared/meta.json").read_text())["label_names"] == names
    predictions = (run / "outputs/evaluate/predictions.jsonl").read_text()
    assert '"negative"' in predictions and '"positive"' in predictions  # 6 test texts of each
    confusion = (run / "metrics/plots/confusion.csv").read_text().splitlines()
    assert set(confusion[1:]) <= {f"{a},{b}" for a in names for b in names}
    config = json.loads((run / "export/config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    for name in ("confusion", "roc", "precision_recall", "length_accuracy"):
        assert (run / f"metrics/plots/{name}.png").read_bytes().startswith(b"\x89PNG")
    assert (run / "metrics/train_log/loss.png").read_bytes().startswith(b"\x89PNG")

    card = (run / "export/README.md").read_text()
    meta = yaml.safe_load(re.fullmatch(r"---\n(.*?)---\n.*", card, re.S).group(1))
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    assert "`negative`, `positive`" in card
    for image in ("confusion.png", "roc.png"):
        assert f'src="{image}"' in card
        assert (run / "export" / image).read_bytes() == \
            (run / "metrics/plots" / image).read_bytes()
