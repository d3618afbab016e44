"""Load a labelled text corpus, clean it, cap it and carve a validation split out of train.

Sources (`data.source`):
- "imdb": the hub dataset stanfordnlp/imdb;
- any other hub dataset id (with `data.hub_config`, the text/label column names and split names);
  a hub dataset is read at `data.revision` (every split), and the commit read is recorded;
- a local aclImdb-style directory: <split>/pos/*.txt and <split>/neg/*.txt;
- a local directory with <split>.jsonl, .jsonl.gz, .csv or .parquet files (text and label columns).
A local directory is recorded by the content hash of the files read (core/provenance.py).

Class names come from `data.label_names` if set (one per class, in label order); else from string
labels (sorted), or for integer labels from the hub dataset's ClassLabel feature, a
`<label column>_text` / `_name` column that pairs them one to one (SetFit/20_newsgroups'
label_text), aclImdb's neg/pos folders; else they are the numbers.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textclf.core.errors import DataError
from textclf.core.params import DataParams
from textclf.core.provenance import Provenance, cached_dataset_commit, files_sha256

IMDB_HUB_ID = "stanfordnlp/imdb"
TABLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".parquet")
HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
WHITESPACE = re.compile(r"\s+")
# Columns beside an integer label column that may name its classes: SetFit's datasets have
# label_text beside label (20_newsgroups: 3 -> comp.sys.ibm.pc.hardware)
NAMES_COLUMN_SUFFIXES = ("_text", "_name")


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 class ids 0..K-1

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> Split:
        return Split([self.texts[i] for i in index], self.labels[index])


@dataclass
class Corpus:
    train: Split
    val: Split
    test: Split
    label_names: list[str]
    report: dict[str, Any] = field(default_factory=dict)  # counts for the prepare stage's report
    # what was read: the hub dataset's commit, or the content hash of the local files
    provenance: Provenance | None = None


def clean_text(text: str) -> str:
    """HTML line breaks become spaces (so "end.<br />Next" reads "end. Next"); whitespace
    collapses."""
    return WHITESPACE.sub(" ", HTML_BREAK.sub(" ", text)).strip()


def load_corpus(p: DataParams, seed: int) -> Corpus:
    raw, names_hint, report, provenance = read_source(p)
    report["dropped_empty"] = {}
    texts = {}
    for split, (split_texts, split_labels) in raw.items():
        cleaned = [clean_text(t) if isinstance(t, str) else "" for t in split_texts]
        keep = [i for i, t in enumerate(cleaned) if t]
        report["dropped_empty"][split] = len(cleaned) - len(keep)
        if not keep:
            raise DataError(f"data.source {p.source!r}: the {split!r} split has no non-empty texts")
        texts[split] = ([cleaned[i] for i in keep], [split_labels[i] for i in keep])

    train_labels, test_labels, names = encode_labels(
        texts["train"][1], texts["test"][1], names_hint, p.source, p.label_names)
    train = Split(texts["train"][0], train_labels)
    test = Split(texts["test"][0], test_labels)

    # One random stream per draw: capping train does not change which test texts are kept.
    train_rng, test_rng, val_rng = (np.random.default_rng(s)
                                    for s in np.random.SeedSequence(seed).spawn(3))
    if p.train_size is not None and p.train_size < len(train):
        train = train.subset(stratified_sample(train.labels, p.train_size, train_rng))
    if p.test_size is not None and p.test_size < len(test):
        test = test.subset(stratified_sample(test.labels, p.test_size, test_rng))
    n_val = max(len(names), round(p.val_fraction * len(train)))
    if n_val >= len(train):
        raise DataError(f"data: {len(train)} training texts are too few to carve a validation "
                        f"split of {n_val}; lower data.val_fraction or raise data.train_size")
    val_index = stratified_sample(train.labels, n_val, val_rng)
    train_index = np.setdiff1d(np.arange(len(train)), val_index)
    val, train = train.subset(val_index), train.subset(train_index)
    report["sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    return Corpus(train, val, test, names, report, provenance)


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices, sorted, with each class in proportion (largest remainder), drawn by `rng`."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def encode_labels(train: list, test: list, names_hint: list[str] | None, source: str,
                  label_names: list[str] | None = None):
    """Class ids 0..K-1 for both splits, and the class names: `label_names` (data.label_names)
    if given, else the data's own (`names_hint`, string labels, or the numbers).

    Integer labels must already be 0..K-1; string labels are mapped in sorted order.
    """
    kind = _label_kind(train + test, source)
    if kind == "str":
        names = sorted(set(train))
        unknown = sorted(set(test) - set(names))
        if unknown:
            raise DataError(f"data.source {source!r}: test labels {unknown[:5]} never occur in "
                            "train")
        index = {name: i for i, name in enumerate(names)}
        train_ids = np.array([index[v] for v in train], dtype=np.int64)
        test_ids = np.array([index[v] for v in test], dtype=np.int64)
    else:
        train_ids = np.array([int(v) for v in train], dtype=np.int64)
        test_ids = np.array([int(v) for v in test], dtype=np.int64)
        if (test_ids < 0).any():
            raise DataError(f"data.source {source!r}: the test split has unlabelled rows (label "
                            f"{test_ids.min()}); choose a labelled split with data.test_split "
                            "(SST-2: validation)")
        k = int(train_ids.max()) + 1
        seen = set(np.unique(train_ids).tolist())
        if len(seen) < 2:
            raise DataError(f"data.source {source!r}: only one class ({int(train_ids[0])}) in "
                            "train; classification needs at least two")
        if train_ids.min() < 0 or seen != set(range(k)) or test_ids.max() >= k:
            raise DataError(f"data.source {source!r}: integer labels must be 0..K-1 with every "
                            f"class present in train; train has {sorted(seen)[:20]}, test has "
                            f"{np.unique(test_ids).tolist()[:20]}")
        names = (list(names_hint) if names_hint and len(names_hint) == k
                 else [str(i) for i in range(k)])
    if len(names) < 2:
        raise DataError(f"data.source {source!r}: only one class ({names[0]!r}) in train; "
                        "classification needs at least two")
    if label_names is not None:
        if len(label_names) != len(names):
            n = len(label_names)
            raise DataError(f"data.label_names lists {n} name{'s' * (n != 1)}, but the data has "
                            f"{len(names)} classes ({', '.join(names)}): give one name per class, "
                            "in label order, or null for the data's own")
        names = list(label_names)
    return train_ids, test_ids, names


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) or (
        isinstance(v, float) and v.is_integer())


def _label_kind(values: list, source: str) -> str:
    if all(_is_int(v) for v in values):
        return "int"
    if all(isinstance(v, str) and v.strip() for v in values):
        return "str"
    bad = next(v for v in values if not _is_int(v) and not (isinstance(v, str) and v.strip()))
    raise DataError(f"data.source {source!r}: a label {bad!r} ({type(bad).__name__}) is neither "
                    "an integer class id nor a class name; fix or drop those rows")


def _names_beside(raw: dict, name_values: dict[str, list]) -> list[str] | None:
    """Class names of integer labels 0..K-1 from the first column (of `name_values`, each
    holding a value per row of every split of `raw`) that pairs each integer with one name and
    each name with one integer; else None (a column that means something else, and the classes
    keep their numbers)."""
    labels = [v for _, split_labels in raw.values() for v in split_labels]
    if not labels or not all(_is_int(v) for v in labels):
        return None
    for values in name_values.values():
        if len(values) != len(labels) or not all(isinstance(n, str) and n.strip() for n in values):
            continue
        pairs = {(int(v), n.strip()) for v, n in zip(labels, values)}
        by_id = dict(pairs)
        one_to_one = len(by_id) == len(pairs) == len(set(by_id.values()))
        if one_to_one and set(by_id) == set(range(len(by_id))):
            return [by_id[i] for i in range(len(by_id))]
    return None


# ---------------------------------------------------------------------------------------------
# Reading sources: each returns {split: (texts, raw labels)}, class names if known, a report,
# and what it read (a hub commit, or the files read).

def read_source(p: DataParams):
    splits = {"train": p.train_split, "test": p.test_split}
    path = Path(p.source).expanduser()
    if not path.is_dir():
        return _read_hub(p, splits)
    if (path / p.train_split / "pos").is_dir() and (path / p.train_split / "neg").is_dir():
        raw, names, report, files = _read_aclimdb(path, splits)
    else:
        raw, names, report, files = _read_tables(path, splits, p.text_column, p.label_column)
    return raw, names, report, Provenance(p.source, None, None, files_sha256(path, files))


def _read_aclimdb(root: Path, splits: dict[str, str]):
    raw, report, files = {}, {"invalid_utf8": {}}, []
    for split, name in splits.items():
        texts, labels, invalid = [], [], 0
        for label, sub in enumerate(("neg", "pos")):
            folder = root / name / sub
            if not folder.is_dir():
                raise DataError(f"data.source {str(root)!r}: missing folder {folder}")
            for f in sorted(folder.glob("*.txt")):
                files.append(f)
                text, bad = _decode(f.read_bytes())
                texts.append(text)
                labels.append(label)
                invalid += bad
        if not texts:
            raise DataError(f"data.source {str(root)!r}: no *.txt reviews under {root / name}")
        raw[split] = (texts, labels)
        report["invalid_utf8"][split] = invalid
    return raw, ["neg", "pos"], report, files


def _read_tables(root: Path, splits: dict[str, str], text_col: str, label_col: str):
    raw, report, name_values, files = {}, {"invalid_utf8": {}}, {}, []
    for split, name in splits.items():
        found = [root / (name + s) for s in TABLE_SUFFIXES if (root / (name + s)).is_file()]
        if len(found) != 1:
            what = "no file" if not found else f"{len(found)} files"
            raise DataError(
                f"data.source {str(root)!r}: {what} for split {name!r}; expected one of "
                f"{', '.join(name + s for s in TABLE_SUFFIXES)} (or an aclImdb-style "
                f"{name}/pos, {name}/neg layout)")
        files.append(found[0])
        rows, invalid = read_table(found[0])
        if not rows:
            raise DataError(f"data file {found[0]} is empty")
        for col in (text_col, label_col):
            if col not in rows[0]:
                raise DataError(f"data file {found[0]}: no column {col!r} (columns: "
                                f"{', '.join(map(str, rows[0]))}); set data.text_column / "
                                "data.label_column")
        raw[split] = ([r.get(text_col) for r in rows], [r.get(label_col) for r in rows])
        report["invalid_utf8"][split] = invalid
        for col in (label_col + suffix for suffix in NAMES_COLUMN_SUFFIXES):
            name_values.setdefault(col, []).extend(r.get(col) for r in rows)
    return raw, _names_beside(raw, name_values), report, files


def read_table(path: Path) -> tuple[list[dict], int]:
    """Rows of a .jsonl(.gz)/.csv/.parquet file, and how many lines had invalid UTF-8 bytes."""
    if path.name.endswith(".parquet"):
        import pandas as pd

        return pd.read_parquet(path).to_dict("records"), 0
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    text, invalid = _decode(data)
    if path.name.endswith(".csv"):
        import pandas as pd

        if not text.strip():
            return [], invalid
        # keep_default_na=False: a class named "NA" or a text "N/A" stays a string
        return pd.read_csv(io.StringIO(text), keep_default_na=False,
                           na_values=[""]).to_dict("records"), invalid
    return jsonl_rows(text, path), invalid


def jsonl_rows(text: str, path: Path, string_field: str | None = None) -> list[dict]:
    """The JSON objects of JSON-lines text (blank lines skipped); a bad line, or one whose
    `string_field` (if given) is not a string, is a DataError naming the file and line."""
    rows = []
    # split on "\n" only: str.splitlines() also splits on U+2028, U+0085 and other characters
    # that JSON allows raw inside a string (real reviews hold them)
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"data file {path}, line {number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"data file {path}, line {number}: expected a JSON object per line")
        if string_field is not None and not isinstance(row.get(string_field), str):
            raise DataError(f"data file {path}, line {number}: expected a JSON object with a "
                            f"string {string_field!r} field")
        rows.append(row)
    return rows


def _decode(data: bytes) -> tuple[str, int]:
    """UTF-8 text; invalid bytes become U+FFFD, and the count of affected lines is returned."""
    try:
        return data.decode("utf-8-sig"), 0  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError:
        lines = data.split(b"\n")
        bad = 0
        for line in lines:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
        return data.decode("utf-8-sig", errors="replace"), bad


def _read_hub(p: DataParams, splits: dict[str, str]):
    hub_id = IMDB_HUB_ID if p.source == "imdb" else p.source
    dataset, commit = hub_dataset(hub_id, p)
    raw, names, name_values = {}, None, {}
    for split, name in splits.items():
        if name not in dataset:
            raise DataError(f"hub dataset {hub_id!r} has no split {name!r} (splits: "
                            f"{', '.join(dataset)}); set data.{split}_split")
        ds = dataset[name]
        for col in (p.text_column, p.label_column):
            if col not in ds.column_names:
                raise DataError(f"hub dataset {hub_id!r}: no column {col!r} (columns: "
                                f"{', '.join(ds.column_names)}); set data.text_column / "
                                "data.label_column")
        # Class names: the label feature's (a ClassLabel), else a names column beside it
        names = names or getattr(ds.features[p.label_column], "names", None)
        raw[split] = (list(ds[p.text_column]), list(ds[p.label_column]))
        for col in (p.label_column + suffix for suffix in NAMES_COLUMN_SUFFIXES):
            if col in ds.column_names:
                name_values.setdefault(col, []).extend(ds[col])
    return (raw, names or _names_beside(raw, name_values), {},
            Provenance(hub_id, p.revision, commit, None))


def hub_dataset(hub_id: str, p: DataParams):
    """Every split of the hub dataset at data.revision, and the commit they were read at (the
    dataset builder's hash: `datasets` names a hub dataset's cached copy by its commit)."""
    from datasets import load_dataset_builder

    try:
        # All splits at once: datasets downloads and prepares the whole configuration anyway
        builder = load_dataset_builder(hub_id, p.hub_config, revision=p.revision)
        if p.revision is not None:
            builder = pinned_cached_copy(builder, hub_id, p.revision)
        builder.download_and_prepare()
        return builder.as_dataset(), builder.hash
    except DataError:
        raise
    except Exception as e:  # network, unknown dataset or configuration: many exception types
        raise DataError(
            f"data.source {p.source!r}: could not load hub dataset {hub_id!r}"
            f"{'' if p.revision is None else f' at revision {p.revision!r}'} "
            f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}). Check the id, "
            "data.hub_config and data.revision, or point data.source at a local "
            "directory.") from None


def pinned_cached_copy(builder, hub_id: str, revision: str):
    """The builder of the copy of `revision` in the datasets cache. Without the hub (offline, or
    unreachable), `datasets` reads the latest copy it cached, whatever the revision asked: that
    builder is replaced by the one of the commit `revision` names (a commit hash, or a tag or
    branch resolved online before), and a revision the cache does not hold is a DataError."""
    from datasets.packaged_modules.cache.cache import Cache

    if not isinstance(builder, Cache):  # the hub answered: datasets read `revision` itself
        return builder
    commit = cached_dataset_commit(hub_id, revision)
    if commit == builder.hash:
        return builder
    root = Path(builder.cache_dir).parents[2]  # <cache>/<org>___<name>/<config>/<version>/<hash>
    copies = sorted(root.glob(f"{builder.config.name}/*/{commit}")) if commit else []
    if not copies:
        raise DataError(
            f"data.revision {revision!r}: hub dataset {hub_id!r} cannot be reached and its "
            f"cached copies do not hold that revision (the latest is commit {builder.hash}): "
            "connect to the hub once, or set data.revision to a commit the cache holds")
    return Cache(cache_dir=str(root.parent), dataset_name=builder.dataset_name, repo_id=hub_id,
                 config_name=builder.config.name, version=copies[0].parent.name, hash=commit)
