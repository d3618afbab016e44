"""Per-class results: precision, recall, F1 and support of each class and the pairs of classes
most often confused, by hand, through the evaluate and export stages on a 3-class fixture
(tests/fixtures/topics.jsonl), and in the PR report."""

import csv
import io
import json

import numpy as np
import pytest
from support import tiny

from textclf.cli import pr_render
from textclf.cli.pr_query import ClassFiles, Findings
from textclf.evaluate.per_class import confused_pair_rows, per_class_rows

NAMES = ["a", "b", "c", "d"]


def test_per_class_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 0, 1, 1, 0, 2, 1, 0])
    rows = per_class_rows(labels, preds, NAMES)
    assert [r[0] for r in rows] == NAMES
    # a: 2 of 4 predicted right, 2 of 3 found; b: 1 of 3, 1 of 2; c: 1 of 1, 1 of 3;
    # d: never a label nor a prediction
    expected = [(2 / 4, 2 / 3, 3), (1 / 3, 1 / 2, 2), (1.0, 1 / 3, 3), (0.0, 0.0, 0)]
    for (_, precision, recall, f1, support), (p, r, n) in zip(rows, expected):
        assert (precision, recall, support) == (pytest.approx(p), pytest.approx(r), n)
        assert f1 == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)


def test_confused_pairs_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    preds = np.array([1, 1, 0, 0, 1, 0, 3, 3, 2])
    rows = confused_pair_rows(labels, preds, NAMES)
    # a and b: 2 a as b, 1 b as a; c and d: 2 c as d, 1 d as c; a and c: 1 c as a; a-d, b-c,
    # b-d never: left out. Ties in label order.
    assert rows == [("a vs b", 3, "a", "b", 2, 1), ("c vs d", 3, "c", "d", 2, 1),
                    ("a vs c", 1, "a", "c", 0, 1)]
    assert confused_pair_rows(labels, preds, NAMES, top=1) == rows[:1]
    assert confused_pair_rows(labels, labels, NAMES) == []


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory, tiny_dirs):
    """The 3-class fixture through prepare, train, evaluate and export."""
    root = tmp_path_factory.mktemp("topics")
    data = tiny.fixture_topics_dir(root / "data")
    params = tiny.tiny_params(tiny_dirs["gpt2"], data, train={"epochs": 1},
                              eval={"bootstrap": 0})
    return tiny.run_stages(root / "run", params, in_process=True,
                           stages=("prepare", "train", "evaluate", "export"))


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_three_classes_through_evaluate_and_export(three_classes):
    run = three_classes
    predicted = [json.loads(line) for line in
                 (run / "outputs/evaluate/predictions.jsonl").read_text().splitlines()]
    names = ["cooking", "sport", "travel"]
    labels = np.array([names.index(p["label"]) for p in predicted])
    preds = np.array([names.index(p["predicted"]) for p in predicted])
    assert len(predicted) == 9 and np.bincount(labels).tolist() == [3, 3, 3]

    per_class = read_csv(run / "metrics/plots/per_class.csv")
    assert [r["class"] for r in per_class] == names
    for row, c in zip(per_class, range(3)):
        hit = ((preds == c) & (labels == c)).sum()
        precision = hit / (preds == c).sum() if (preds == c).any() else 0.0
        assert float(row["precision"]) == pytest.approx(precision, abs=1e-6)
        assert float(row["recall"]) == pytest.approx(hit / 3, abs=1e-6)
        assert int(row["support"]) == 3
    pairs = read_csv(run / "metrics/plots/confused_pairs.csv")
    wrong = int((labels != preds).sum())
    assert sum(int(p["count"]) for p in pairs) == wrong
    for p in pairs:
        a, b = names.index(p["class_a"]), names.index(p["class_b"])
        assert int(p["a_as_b"]) == ((labels == a) & (preds == b)).sum()
        assert int(p["b_as_a"]) == ((labels == b) & (preds == a)).sum()
    assert (run / "metrics/plots/per_class.png").read_bytes().startswith(b"\x89PNG")
    # metrics/eval.json stays the headline: no per-class keys
    assert set(json.loads((run / "metrics/eval.json").read_text())) == {
        "accuracy", "precision", "recall", "f1", "roc_auc", "loss", "n"}

    card = (run / "export/README.md").read_text()
    table = card.split("### By class", 1)[1].split("\n\n", 2)[1].splitlines()
    assert table[0] == "| Class | Precision | Recall | F1 | Support |"
    assert [line.split(" | ")[0].strip("| ") for line in table[2:]] == names
    for line, row in zip(table[2:], per_class):
        assert f"| {100 * float(row['f1']):.2f} | 3 |" in line
    if pairs:
        assert f"{pairs[0]['class_a']} and {pairs[0]['class_b']}, {pairs[0]['count']} times" \
            in card


def test_per_class_plots_are_declared_for_dvc():
    from test_pictures import plot_entries

    plots = plot_entries("evaluate")
    assert plots["metrics/plots/per_class.csv"]["x"] == "f1"
    assert plots["metrics/plots/per_class.csv"]["y"] == "class"
    assert plots["metrics/plots/confused_pairs.csv"]["template"] == "bar_horizontal_sorted"
    assert "metrics/plots/per_class.png" in plots


# ---------------------------------------------------------------------------------------------
# The PR report

def per_class_csv(f1: dict[str, float]) -> str:
    return "class,precision,recall,f1,support\n" + "".join(
        f"{name},{value},{value},{value},10\n" for name, value in f1.items())


PAIRS = ("pair,count,class_a,class_b,a_as_b,b_as_a\n"
         "c00 vs c01,7,c00,c01,4,3\nc02 vs c05,2,c02,c05,2,0\n")


def findings(classes: ClassFiles | None) -> Findings:
    return Findings(base="main", title="## t", params=[], metrics=[], headline_order=[],
                    stale=[], downstream=[], warnings=[], charts=[], classes=classes)


def class_rows(md: str) -> list[list[str]]:
    text = md.split("### By class", 1)[1].split("\n\n")[1]
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[2:]]


def test_pr_report_shows_every_class_up_to_a_dozen():
    base = {f"c{i:02d}": 0.5 for i in range(3)}
    now = {"c00": 0.75, "c01": 0.5, "c02": 0.25}
    md = pr_render.render(findings(ClassFiles(per_class_csv(base), per_class_csv(now), PAIRS)))
    assert md.index("### Headline") < md.index("### By class (every class of")
    assert class_rows(md) == [["c00", "0.5", "0.75", "+0.25", "0.75", "0.75", "10"],
                              ["c01", "0.5", "0.5", "0", "0.5", "0.5", "10"],
                              ["c02", "0.5", "0.25", "-0.25", "0.25", "0.25", "10"]]
    assert ("Most often confused with each other: c00 and c01, 7 times (4 c00 predicted as c01, "
            "3 c01 as c00); c02 and c05, 2 times") in md
    # a class new in the PR; two classes: no confusions named
    md = pr_render.render(findings(ClassFiles(None, per_class_csv({"x": 1.0, "y": 0.5}),
                                              PAIRS)))
    assert class_rows(md)[0][:4] == ["x", "—", "1", "new"]
    assert "confused" not in md
    assert "By class" not in pr_render.render(findings(ClassFiles(None, None, None)))
    assert "By class" not in pr_render.render(findings(None))


def test_pr_report_shows_the_weakest_of_many_classes():
    now = {f"c{i:02d}": round(1 - ((i * 7) % 20) / 20, 2) for i in range(20)}
    md = pr_render.render(findings(ClassFiles(per_class_csv(now), per_class_csv(now), PAIRS)))
    assert f"the {pr_render.WEAKEST} weakest of 20 classes by F1 in the PR" in md
    rows = class_rows(md)
    weakest = sorted(now, key=now.get)[:pr_render.WEAKEST]
    assert [r[0] for r in rows] == weakest
    assert [float(r[2]) for r in rows] == sorted(now.values())[:pr_render.WEAKEST]
    assert "c00 and c01, 7 times" in md
