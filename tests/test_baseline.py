"""The baseline stage: TF-IDF + logistic regression on the texts prepare chose (the same split
and cleaning as the model's), its C chosen on the validation split, the test split scored with
evaluate's metrics and intervals; and the texts prepare stores for it."""

import gzip
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import tiny

from textclf.baseline.tfidf import fit_baseline
from textclf.core import paths
from textclf.core.data import Split, clean_text
from textclf.core.errors import DataError, ParamsError
from textclf.core.params import load_params
from textclf.core.prepared_texts import SPLITS, load_texts
from textclf.core.tokenization import TokenizedSplit

REPO = Path(__file__).resolve().parents[1]
IMDB = REPO.parent / "shared" / "data" / "imdb" / "train.jsonl.gz"
GRID = [0.01, 1.0, 100.0]


def split_of(rows: list[dict]) -> Split:
    return Split([clean_text(r["text"]) for r in rows], np.array([r["label"] for r in rows]))


@pytest.fixture(scope="module")
def fixture_splits() -> tuple[Split, Split, Split]:
    """The 40 fixture reviews (classes alternate): 24 to train, 8 to validate, 8 to test."""
    rows = tiny.fixture_reviews()
    return split_of(rows[:24]), split_of(rows[24:32]), split_of(rows[32:])


# ---------------------------------------------------------------- the library

def test_c_is_the_one_of_highest_validation_accuracy(fixture_splits):
    train, val, _ = fixture_splits
    fit = fit_baseline(train, val, 2, GRID, ngrams=2, min_df=1)
    assert [v["c"] for v in fit.validation] == GRID
    best = max(fit.validation, key=lambda v: (v["accuracy"], -v["loss"]))
    assert fit.c == best["c"]
    # the validation split decides: with its labels flipped, each C's accuracy is the
    # complement, and the C kept is the best on those labels
    flipped = Split(val.texts, 1 - val.labels)
    other = fit_baseline(train, flipped, 2, GRID, ngrams=2, min_df=1)
    for a, b in zip(fit.validation, other.validation):
        assert a["accuracy"] + b["accuracy"] == pytest.approx(1.0)
    assert other.c == max(other.validation, key=lambda v: (v["accuracy"], -v["loss"]))["c"]
    # and the kept model is the one fitted with that C
    assert fit.model.C == fit.c and other.model.C == other.c


def test_equal_validation_accuracy_is_decided_by_validation_loss():
    words = {0: "awful dull boring bad", 1: "great superb wonderful good"}
    train = Split([f"{words[i % 2]} film {i}" for i in range(20)], np.arange(20) % 2)
    val = Split([words[0], words[1]], np.array([0, 1]))
    fit = fit_baseline(train, val, 2, GRID, ngrams=1, min_df=1)
    assert {v["accuracy"] for v in fit.validation} == {1.0}  # every C is right on both
    assert fit.c == min(fit.validation, key=lambda v: v["loss"])["c"] == 100.0  # most confident


def test_the_fit_is_deterministic(fixture_splits):
    train, val, test = fixture_splits
    first, second = (fit_baseline(train, val, 2, GRID, ngrams=2, min_df=1) for _ in range(2))
    assert first.validation == second.validation and first.c == second.c
    assert np.array_equal(first.predict_proba(test.texts), second.predict_proba(test.texts))


def test_probabilities_have_a_column_per_class_even_one_absent_from_training(fixture_splits):
    train, val, test = fixture_splits
    probs = fit_baseline(train, val, 3, GRID, ngrams=2, min_df=1).predict_proba(test.texts)
    assert probs.shape == (len(test), 3)
    assert np.allclose(probs.sum(axis=1), 1.0) and (probs[:, 2] == 0).all()


def test_three_classes_get_one_multinomial_fit_and_evaluates_macro_metrics():
    from textclf.evaluate.metrics import headline_metrics

    words = {0: "goal match referee striker", 1: "vote senate ballot minister",
             2: "guitar chorus album drummer"}
    def split(n, offset):
        return Split([f"{words[i % 3]} story {i}" for i in range(offset, offset + n)],
                     np.arange(offset, offset + n) % 3)

    train, val, test = split(30, 0), split(9, 30), split(9, 39)
    fit = fit_baseline(train, val, 3, GRID, ngrams=1, min_df=1)
    probs = fit.predict_proba(test.texts)
    assert probs.shape == (9, 3) and (probs.argmax(axis=1) == test.labels).all()
    metrics, counts = headline_metrics(test.labels, probs, 20, seed=0)
    assert metrics["accuracy"] == metrics["f1"] == 1.0 and counts == {}  # macro, no binary counts


def test_impossible_fits_are_one_clear_error(fixture_splits):
    train, val, _ = fixture_splits
    with pytest.raises(DataError, match="baseline.min_df = 1000"):
        fit_baseline(train, val, 2, GRID, ngrams=2, min_df=1000)
    one_class = Split(train.texts, np.zeros(len(train), dtype=np.int64))
    with pytest.raises(DataError, match="single class"):
        fit_baseline(one_class, val, 2, GRID, ngrams=2, min_df=1)


@pytest.mark.parametrize("section, message", [
    ({"c_grid": []}, "baseline.c_grid must be a non-empty list of positive numbers"),
    ({"c_grid": [1.0, -2.0]}, "baseline.c_grid must be a non-empty list of positive numbers"),
    ({"c_grid": ["a"]}, "baseline.c_grid must be a list of a finite number"),
    ({"ngrams": 0}, "baseline.ngrams must be a positive integer"),
    ({"min_df": 0}, "baseline.min_df must be a positive integer"),
])
def test_bad_baseline_params_are_named(section, message):
    with pytest.raises(ParamsError, match=message):
        load_params(REPO / "params.yaml", {"baseline": section})


def test_the_baseline_knobs_are_no_difference_from_the_published_reference():
    """The model card lists how a run's params differ from its published reference: the
    baseline's knobs change no model, so they are never among them (nor read by export)."""
    from textclf.export.reference import find_reference

    config = yaml.safe_load((REPO / "compare/params.yaml").read_text())
    params = load_params(REPO / "params.yaml", {"baseline": {"min_df": 5, "c_grid": [2.0]}})
    ref = find_reference(params, config, REPO / "params.yaml")
    assert ref.run == "gpt2_finetune" and ref.differences == []


# ---------------------------------------------------------------- the stage

@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_dirs, data_dir) -> Path:
    """prepare, baseline, then a zero-shot train and evaluate, in this process."""
    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, method="zero_shot")
    return tiny.run_stages(tmp_path_factory.mktemp("baseline"), params,
                           stages=("prepare", "baseline", "train", "evaluate"), in_process=True)


def test_prepare_stores_the_texts_of_each_split_as_it_cut_them(run, data_dir):
    prepared = run / "data/prepared"
    texts = {name: load_texts(prepared, name) for name in SPLITS}
    for name, split in texts.items():
        ids = TokenizedSplit.load(prepared / paths.SPLIT_FILE.format(split=name))
        assert np.array_equal(split.labels, ids.labels), name
        assert all(t == clean_text(t) and t for t in split.texts), name
    source = {name: sorted(clean_text(json.loads(line)["text"]) for line in
                           (data_dir / f"{name}.jsonl").read_text().splitlines())
              for name in ("train", "test")}
    assert sorted(texts["train"].texts + texts["val"].texts) == source["train"]
    assert not set(texts["train"].texts) & set(texts["val"].texts)
    assert sorted(texts["test"].texts) == source["test"]


def test_the_baseline_writes_evaluates_metrics_on_the_same_test_texts(run):
    baseline = json.loads((run / "metrics/baseline.json").read_text())
    evaluation = json.loads((run / "metrics/eval.json").read_text())
    assert set(baseline) == set(evaluation)
    assert baseline["n"] == evaluation["n"] == 12
    assert baseline["accuracy_ci_low"] <= baseline["accuracy"] <= baseline["accuracy_ci_high"]
    info = json.loads((run / "outputs/baseline/run.json").read_text())
    grid = load_params(run / "params.yaml").baseline.c_grid
    assert info["c"] in grid and [v["c"] for v in info["validation"]] == grid
    assert info["n"] == {"train": 21, "val": 7, "test": 12}
    assert info["vocabulary_size"] > 0 and info["seconds"] >= 0
    assert info["tp"] + info["fp"] + info["fn"] + info["tn"] == 12


def test_the_baseline_reads_texts_only_and_gives_the_same_numbers_again(run, tmp_path):
    """No token ids, no meta.json, no model: the three text files are all it reads."""
    texts_only = tmp_path / "prepared"
    texts_only.mkdir()
    for name in SPLITS:
        shutil.copy(run / "data/prepared" / paths.TEXTS_FILE.format(split=name), texts_only)
    script, *args = tiny.stage_command("baseline", run / "params.yaml", tmp_path)[1:]
    args[args.index("--prepared") + 1] = str(texts_only)
    assert tiny.run_script_in_process(Path(script), args) == 0
    assert (tmp_path / "metrics/baseline.json").read_bytes() == \
        (run / "metrics/baseline.json").read_bytes()


# ---------------------------------------------------------------- real reviews

@pytest.mark.skipif(not IMDB.is_file(), reason=f"needs {IMDB}")
def test_on_real_reviews_the_baseline_is_strong_and_quick():
    """2,400 real IMDb reviews (balanced): 1,600 to train, 400 to validate, 400 to test."""
    pos, neg = [], []
    with gzip.open(IMDB, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            (pos if row["label"] == 1 else neg).append(row)
            if len(pos) >= 1200 and len(neg) >= 1200:
                break
    rows_ = [r for pair in zip(pos[:1200], neg[:1200]) for r in pair]
    train, val, test = split_of(rows_[:1600]), split_of(rows_[1600:2000]), split_of(rows_[2000:])
    grid = yaml.safe_load((REPO / "params.yaml").read_text())["baseline"]["c_grid"]
    started = time.perf_counter()
    fit = fit_baseline(train, val, 2, grid, ngrams=2, min_df=2)
    accuracy = (fit.predict_proba(test.texts).argmax(axis=1) == test.labels).mean()
    assert time.perf_counter() - started < 60
    assert fit.vocabulary_size > 10_000  # words and word pairs of real reviews
    assert accuracy > 0.8, accuracy  # a strong baseline: well above chance on real text
