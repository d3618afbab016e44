"""Local corpora in every supported layout load, bad data fails with a DataError that says what
to do, and the caps and the validation split are seeded and stratified."""

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.hub_cache import NEWSGROUPS
from support.tensors import PARAMS_YAML

from textclf.core.data import DataError, clean_text, load_corpus
from textclf.core.params import load_params

POSITIVE = ["A wonderful film, I loved it.", "Great acting and a moving story.",
            "Superb from start to finish.", "The best film of the year."]
NEGATIVE = ["Dull and far too long.", "Terrible script, awful acting.",
            "I walked out after an hour.", "Boring, predictable, painful."]


def rows(n_pos: int, n_neg: int, tag: str = "") -> list[dict]:
    """`n_pos` positive and `n_neg` negative rows with distinct texts."""
    pos = [{"text": f"{POSITIVE[i % 4]} {tag}pos{i}", "label": 1} for i in range(n_pos)]
    neg = [{"text": f"{NEGATIVE[i % 4]} {tag}neg{i}", "label": 0} for i in range(n_neg)]
    return pos + neg


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def jsonl_dir(root: Path, train: list[dict], test: list[dict]) -> Path:
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "test.jsonl", test)
    return root


def data_params(source: Path, **data):
    """The data section of params.yaml for a local source (validated as a whole)."""
    return load_params(PARAMS_YAML, {"data": {"source": str(source), **data}}).data


def load(source: Path, seed: int = 0, **data):
    return load_corpus(data_params(source, **data), seed)


def all_texts(corpus) -> set[str]:
    return set(corpus.train.texts) | set(corpus.val.texts) | set(corpus.test.texts)


# ---------------------------------------------------------------------------------------------
# Cleaning

@pytest.mark.parametrize("raw, clean", [
    ("end.<br />Next", "end. Next"),
    ("end.<br /><br />Next", "end. Next"),
    ("one<br>two<BR/>three", "one two three"),
    ("<br /><br />", ""),
    ("  spaced \t\n out  ", "spaced out"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


# ---------------------------------------------------------------------------------------------
# Layouts

def write_table(root: Path, split: str, records: list[dict], suffix: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{split}{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, records)
    elif suffix == ".jsonl.gz":
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    elif suffix == ".csv":
        pd.DataFrame(records).to_csv(path, index=False)
    elif suffix == ".parquet":
        pd.DataFrame(records).to_parquet(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".csv", ".parquet"])
def test_table_directories_load(tmp_path, suffix):
    train, test = rows(10, 10), rows(4, 4, tag="test")
    train[0]["text"] = 'Quotes "inside", commas, and a<br />break.'
    for split, records in (("train", train), ("test", test)):
        write_table(tmp_path, split, records, suffix)
    corpus = load(tmp_path)
    assert len(corpus.train) + len(corpus.val) == 20 and len(corpus.test) == 8
    assert corpus.label_names == ["0", "1"]
    assert "Quotes \"inside\", commas, and a break." in corpus.train.texts + corpus.val.texts
    by_text = {r["text"]: r["label"] for r in test}
    assert [by_text[t] for t in corpus.test.texts] == corpus.test.labels.tolist()


def test_aclimdb_directory_loads(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        for sub, texts in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = tmp_path / split / sub
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}_7.txt").write_text(f"{texts[i % 4]}<br /><br />{split} {sub} {i}")
    (tmp_path / "train" / "unsup").mkdir()  # aclImdb's unlabelled folder is ignored
    (tmp_path / "train" / "unsup" / "0_0.txt").write_text("no label")
    corpus = load(tmp_path, val_fraction=0.5)
    assert corpus.label_names == ["neg", "pos"]
    assert len(corpus.train) + len(corpus.val) == 12 and len(corpus.test) == 6
    for text, label in zip(corpus.test.texts, corpus.test.labels):
        assert ("test pos" in text) == (label == 1) and "<br" not in text
    assert "no label" not in all_texts(corpus)
    assert corpus.report["invalid_utf8"] == {"train": 0, "test": 0}


def test_string_labels_map_to_sorted_ids(tmp_path):
    train = [{"text": f"text {i}", "label": name}
             for i, name in enumerate(["pos", "neg", "pos", "neg"] * 3)]
    test = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    corpus = load(jsonl_dir(tmp_path, train, test), val_fraction=0.2)
    assert corpus.label_names == ["neg", "pos"]
    assert corpus.test.labels.tolist() == [1, 0]
    assert corpus.test.labels.dtype == np.int64


def test_three_classes(tmp_path):
    names = ["positive", "negative", "neutral"]
    train = [{"text": f"review {i} {names[i % 3]}", "label": names[i % 3]} for i in range(60)]
    test = [{"text": f"test {i} {names[i % 3]}", "label": names[i % 3]} for i in range(9)]
    corpus = load(jsonl_dir(tmp_path, train, test), val_fraction=0.2)
    assert corpus.label_names == ["negative", "neutral", "positive"]
    assert Counter(corpus.val.labels.tolist()) == {0: 4, 1: 4, 2: 4}
    assert Counter(corpus.train.labels.tolist()) == {0: 16, 1: 16, 2: 16}
    for text, label in zip(corpus.test.texts, corpus.test.labels):
        assert text.endswith(corpus.label_names[label])


# ---------------------------------------------------------------------------------------------
# Class names of integer labels

def test_hub_names_column_names_the_classes(offline_hub):
    # SetFit/20_newsgroups: plain integer labels, the newsgroup in label_text
    params = load_params(PARAMS_YAML, {"data": {"source": "SetFit/20_newsgroups"}})
    corpus = load_corpus(params.data, seed=0)
    assert corpus.label_names == NEWSGROUPS
    for text, label in zip(corpus.test.texts, corpus.test.labels):  # "Post 0 to <group>: ..."
        assert text.split()[3].rstrip(":") == corpus.label_names[label]
    assert corpus.report["dropped_empty"] == {"train": 1, "test": 0}


def test_hub_class_label_names_and_other_splits(offline_hub):
    sst2 = {"source": "stanfordnlp/sst2", "text_column": "sentence", "test_split": "validation"}
    corpus = load_corpus(load_params(PARAMS_YAML, {"data": sst2}).data, seed=0)
    assert corpus.label_names == ["negative", "positive"] and len(corpus.test) == 12
    with pytest.raises(DataError, match=r"SST-2: validation"):  # its test labels are hidden
        load_corpus(load_params(PARAMS_YAML, {"data": {**sst2, "test_split": "test"}}).data, 0)
    with pytest.raises(DataError) as error:
        load_corpus(load_params(PARAMS_YAML, {"data": {**sst2, "test_split": "dev"}}).data, 0)
    assert "has no split 'dev' (splits: train, validation, test); set data.test_split" in str(
        error.value)


@pytest.mark.parametrize("column", ["label_text", "label_name"])
def test_local_names_column_names_the_classes(tmp_path, column):
    names = {0: "negative", 1: "positive"}
    train, test = ([{**r, column: names[r["label"]]} for r in records]
                   for records in (rows(5, 5), rows(2, 2, tag="test")))
    corpus = load(jsonl_dir(tmp_path, train, test))
    assert corpus.label_names == ["negative", "positive"]
    assert [corpus.label_names[y] for y in corpus.test.labels] == [
        "positive" if "pos" in t else "negative" for t in corpus.test.texts]


@pytest.mark.parametrize("label_text", [
    lambda i, label: f"note {i % 3}",  # several names for one class: not class names
    lambda i, label: "same",  # one name for both classes
])
def test_names_column_that_is_not_one_to_one_is_ignored(tmp_path, label_text):
    train, test = ([{**r, "label_text": label_text(i, r["label"])} for i, r in enumerate(records)]
                   for records in (rows(5, 5), rows(2, 2, tag="test")))
    corpus = load(jsonl_dir(tmp_path, train, test))
    assert corpus.label_names == ["0", "1"]


def test_label_names_name_integer_classes(tmp_path):
    """data.label_names names the classes 0..K-1 in order, over the data's own names."""
    corpus = load(jsonl_dir(tmp_path, rows(5, 5), rows(2, 2, tag="test")),
                  label_names=["negative", "positive"])
    assert corpus.label_names == ["negative", "positive"]
    assert [corpus.label_names[y] for y in corpus.test.labels] == [
        "positive" if "pos" in t else "negative" for t in corpus.test.texts]
    named = jsonl_dir(tmp_path / "named", [{**r, "label_text": "abc"[r["label"]]}
                                           for r in rows(5, 5)], rows(2, 2, tag="test"))
    assert load(named).label_names == ["0", "1"]  # not one to one over both splits
    assert load(named, label_names=["bad", "good"]).label_names == ["bad", "good"]


@pytest.mark.parametrize("names", [["negative", "neutral", "positive"], list("abcd"),
                                   ["negative"], []])
def test_label_names_of_the_wrong_length_is_one_clear_error(tmp_path, names):
    with pytest.raises(DataError) as error:
        load(jsonl_dir(tmp_path, rows(5, 5), rows(2, 2, tag="test")), label_names=names)
    assert str(error.value) == (
        f"data.label_names lists {len(names)} name{'s' * (len(names) != 1)}, but the data has 2 "
        "classes (0, 1): give one name per class, in label order, or null for the data's own")


# ---------------------------------------------------------------------------------------------
# Bad data

@pytest.mark.parametrize("labels, message", [
    ([1, 2], "integer labels must be 0..K-1"),
    ([0, 2], "integer labels must be 0..K-1"),
    ([0, 0], "only one class"),
    (["pos", "pos"], "only one class"),
    ([0, None], "a label None (NoneType) is neither an integer class id nor a class name"),
])
def test_bad_labels(tmp_path, labels, message):
    train = [{"text": f"text {i}", "label": labels[i % 2]} for i in range(10)]
    test = [{"text": "t", "label": labels[0]}]
    with pytest.raises(DataError) as error:
        load(jsonl_dir(tmp_path, train, test))
    assert message in str(error.value)
    if message == "only one class":
        assert "classification needs at least two" in str(error.value)


def test_unlabelled_test_split_is_named(tmp_path):
    source = jsonl_dir(tmp_path, rows(5, 5), [{"text": "no label", "label": -1}])
    with pytest.raises(DataError, match="the test split has unlabelled rows.*data.test_split"):
        load(source)


def test_test_label_unseen_in_train(tmp_path):
    train = [{"text": f"t{i}", "label": ["a", "b"][i % 2]} for i in range(10)]
    source = jsonl_dir(tmp_path, train, [{"text": "x", "label": "c"}])
    with pytest.raises(DataError, match=r"test labels \['c'\] never occur in train"):
        load(source)


@pytest.mark.parametrize("column", ["text", "label"])
@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_missing_column(tmp_path, column, suffix):
    records = [{k: v for k, v in r.items() if k != column} for r in rows(5, 5)]
    write_table(tmp_path, "train", records, suffix)
    write_table(tmp_path, "test", records, suffix)
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert f"no column {column!r}" in str(error.value)
    assert "set data.text_column / data.label_column" in str(error.value)


def test_csv_keeps_strings_that_pandas_reads_as_missing(tmp_path):
    records = [{"text": f"review {i}", "label": ["NA", "EU"][i % 2]} for i in range(10)]
    records.append({"text": "N/A", "label": "EU"})
    for split in ("train", "test"):
        write_table(tmp_path, split, records, ".csv")
    corpus = load(tmp_path)
    assert corpus.label_names == ["EU", "NA"]
    assert "N/A" in corpus.test.texts and corpus.report["dropped_empty"]["test"] == 0


def test_other_column_names_are_used(tmp_path):
    records = [{"sentence": r["text"], "y": r["label"]} for r in rows(5, 5)]
    jsonl_dir(tmp_path, records, records)
    corpus = load(tmp_path, text_column="sentence", label_column="y")
    assert len(corpus.test) == 10


@pytest.mark.parametrize("suffix, content", [(".jsonl", b""), (".jsonl", b"\n  \n"),
                                             (".csv", b""), (".csv", b"text,label\n")])
def test_empty_file(tmp_path, suffix, content):
    write_table(tmp_path, "train", rows(5, 5), ".jsonl")
    (tmp_path / f"test{suffix}").write_bytes(content)
    with pytest.raises(DataError, match=r"data file .*test\.(jsonl|csv) is empty"):
        load(tmp_path)


def test_missing_split_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", rows(5, 5))
    with pytest.raises(DataError) as error:
        load(tmp_path)
    assert "no file for split 'test'" in str(error.value)
    assert "test.jsonl, test.jsonl.gz, test.csv, test.parquet" in str(error.value)


def test_two_files_for_one_split(tmp_path):
    jsonl_dir(tmp_path, rows(5, 5), rows(2, 2))
    write_table(tmp_path, "test", rows(2, 2), ".csv")
    with pytest.raises(DataError, match="2 files for split 'test'"):
        load(tmp_path)


def test_invalid_json_line_is_located(tmp_path):
    jsonl_dir(tmp_path, rows(5, 5), rows(2, 2))
    with open(tmp_path / "test.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"test\.jsonl, line 5: not valid JSON"):
        load(tmp_path)


def test_line_separator_characters_inside_json_strings(tmp_path):
    # JSON allows U+2028, U+2029 and U+0085 raw inside a string; only "\n" ends a record
    jsonl_dir(tmp_path, rows(5, 5), rows(2, 2))
    odd = "A film\u2028in two\u2029parts\x85and a coda, superb"
    with open(tmp_path / "train.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": odd, "label": 1}, ensure_ascii=False) + "\r\n")
    corpus = load(tmp_path)
    assert len(corpus.train) + len(corpus.val) == 11
    texts = corpus.train.texts + corpus.val.texts
    assert any(t.startswith("A film") and t.endswith("coda, superb") for t in texts)


# ---------------------------------------------------------------------------------------------
# Odd texts

def test_empty_texts_are_dropped_and_counted(tmp_path):
    train = rows(6, 6) + [{"text": "", "label": 1}, {"text": "   \n\t", "label": 0},
                          {"text": "<br /><br />", "label": 1}, {"text": None, "label": 0}]
    test = rows(2, 2, tag="test") + [{"text": " ", "label": 0}]
    corpus = load(jsonl_dir(tmp_path, train, test), val_fraction=0.25)
    assert corpus.report["dropped_empty"] == {"train": 4, "test": 1}
    assert len(corpus.train) + len(corpus.val) == 12 and len(corpus.test) == 4
    assert all(t.strip() for t in all_texts(corpus))


def test_split_of_only_empty_texts_fails(tmp_path):
    source = jsonl_dir(tmp_path, rows(5, 5), [{"text": " ", "label": 0}])
    with pytest.raises(DataError, match="the 'test' split has no non-empty texts"):
        load(source)


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    jsonl_dir(tmp_path, rows(5, 5), rows(2, 2))
    with open(tmp_path / "train.jsonl", "ab") as f:
        f.write(b'{"text": "caf\xe9 au lait, superb", "label": 1}\n')
        f.write(b'{"text": "\xff\xfe awful", "label": 0}\n')
    corpus = load(tmp_path)
    assert corpus.report["invalid_utf8"] == {"train": 2, "test": 0}
    texts = corpus.train.texts + corpus.val.texts
    assert "caf\ufffd au lait, superb" in texts
    assert "\ufffd\ufffd awful" in texts


def test_invalid_utf8_in_aclimdb_file(tmp_path):
    for split in ("train", "test"):
        for sub in ("pos", "neg"):
            (tmp_path / split / sub).mkdir(parents=True)
            for i in range(3):
                (tmp_path / split / sub / f"{i}.txt").write_text(f"{split} {sub} {i}")
    (tmp_path / "test" / "pos" / "9.txt").write_bytes(b"na\xefve and lovely")
    corpus = load(tmp_path, val_fraction=0.3)
    assert corpus.report["invalid_utf8"] == {"train": 0, "test": 1}
    assert "na\ufffdve and lovely" in corpus.test.texts


def test_very_long_review_loads(tmp_path):
    long = ("A long and winding review. " * 4000)[:100_000]
    jsonl_dir(tmp_path, rows(5, 5) + [{"text": long, "label": 1}], rows(2, 2))
    corpus = load(tmp_path)
    assert max(len(t) for t in corpus.train.texts + corpus.val.texts) == len(long.strip())


# ---------------------------------------------------------------------------------------------
# Caps and validation split: seeded and stratified

@pytest.fixture()
def imbalanced(tmp_path) -> Path:
    """200 positive, 100 negative training texts; 40 positive, 20 negative test texts."""
    return jsonl_dir(tmp_path, rows(200, 100), rows(40, 20, tag="test"))


def class_counts(split) -> dict[int, int]:
    return dict(Counter(split.labels.tolist()))


def test_validation_split_is_stratified(imbalanced):
    corpus = load(imbalanced, val_fraction=0.3)
    assert class_counts(corpus.val) == {1: 60, 0: 30}
    assert class_counts(corpus.train) == {1: 140, 0: 70}
    assert class_counts(corpus.test) == {1: 40, 0: 20}
    assert not set(corpus.train.texts) & set(corpus.val.texts)
    assert corpus.report["sizes"] == {"train": 210, "val": 90, "test": 60}


def test_caps_are_stratified(imbalanced):
    corpus = load(imbalanced, train_size=150, test_size=30, val_fraction=0.3)
    assert class_counts(corpus.val) == {1: 30, 0: 15}
    assert class_counts(corpus.train) == {1: 70, 0: 35}
    assert class_counts(corpus.test) == {1: 20, 0: 10}


def test_caps_larger_than_the_data_keep_everything(imbalanced):
    corpus = load(imbalanced, train_size=10_000, test_size=10_000)
    assert len(corpus.train) + len(corpus.val) == 300 and len(corpus.test) == 60


def test_splits_are_seeded(imbalanced):
    def split_texts(seed):
        corpus = load(imbalanced, seed=seed, train_size=150, test_size=30)
        return corpus.train.texts, corpus.val.texts, corpus.test.texts

    assert split_texts(1) == split_texts(1)
    other = split_texts(2)
    for a, b in zip(split_texts(1), other):
        assert a != b


def test_each_sample_depends_only_on_its_own_cap(imbalanced):
    uncapped_train = load(imbalanced, test_size=30)
    capped_train = load(imbalanced, train_size=150, test_size=30)
    assert capped_train.test.texts == uncapped_train.test.texts  # the same test set to compare on
    uncapped_test = load(imbalanced)
    assert uncapped_test.val.texts == uncapped_train.val.texts  # test_size leaves training alone
    assert uncapped_test.train.texts == uncapped_train.train.texts


def test_too_few_texts_for_a_validation_split(tmp_path):
    source = jsonl_dir(tmp_path, rows(1, 1), rows(1, 1))
    with pytest.raises(DataError, match="too few to carve a validation split"):
        load(source)
