"""The prepare stage's output directory: token ids per split, test texts, and what made them
(the texts of every split, for a stage without a tokenizer: prepared_texts.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textclf.core import paths
from textclf.core.data import Corpus
from textclf.core.families import Family
from textclf.core.params import Params
from textclf.core.prepared_texts import read_rows
from textclf.core.provenance import Provenance
from textclf.core.tokenization import TextTokenizer, TokenizedSplit

# meta["length_unit"]: what the test texts' lengths count (the per-length table and figure)
LENGTH_UNITS = {"gpt2_tokens": "GPT-2 tokens", "model_tokens": "the model's tokens"}
# The evaluate stage's per-length table's row of the texts over the input length (model tokens)
OVER_LIMIT = "over_limit"


@dataclass
class Prepared:
    train: TokenizedSplit
    val: TokenizedSplit
    test: TokenizedSplit
    test_texts: list[str]
    test_lengths: np.ndarray  # untruncated length of each test text, in meta["length_unit"]
    meta: dict

    @property
    def label_names(self) -> list[str]:
        return self.meta["label_names"]


def prepared_meta(params: Params, family: Family, tokenizer: TextTokenizer, corpus: Corpus,
                  length_unit: str, inputs: dict) -> dict:
    """How the token ids were made: train, evaluate and predict rebuild inputs from this; and
    what the run reads (`inputs`: provenance.run_inputs)."""
    return {
        "model": params.model,
        "family": family.name,
        "tokenizer": tokenizer.name,
        "label_names": corpus.label_names,
        "max_tokens": params.data.max_tokens,
        "truncation": params.data.truncation,
        "head_tokens": params.data.head_tokens,
        "length_unit": length_unit,
        "inputs": inputs,
    }


# Keys of meta.json that fix the input format, and where params.yaml sets them
FORMAT_KEYS = {"model": lambda p: p.model, "max_tokens": lambda p: p.data.max_tokens,
               "truncation": lambda p: p.data.truncation,
               "head_tokens": lambda p: p.data.head_tokens}


def prepared_format_problems(meta: dict, params: Params) -> list[str]:
    """Where prepared data disagrees with params on how texts were cut (a stale prepare)."""
    return [f"{key} is {meta.get(key)!r} there, {get(params)!r} in params"
            for key, get in FORMAT_KEYS.items() if meta.get(key) != get(params)]


def model_input_problems(meta: dict, model: Provenance) -> list[str]:
    """Where the model that params load now (`model`: provenance.model_provenance) is not the one
    the prepared data was made with: another revision or a moved branch on the hub, an edited
    local directory."""
    recorded = (meta.get("inputs") or {}).get("model")
    if recorded is None:
        return ["the model it was made with is not recorded"]
    made_with = Provenance.from_dict(recorded)
    if (made_with.source, made_with.commit, made_with.sha256) != (model.source, model.commit,
                                                                  model.sha256):
        return [f"it was made with {made_with.shown()}, params load {model.shown()}"]
    return []


def load_prepared(directory: Path, with_train: bool = True) -> Prepared:
    directory = Path(directory)
    meta_path = directory / paths.META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} holds no prepared data ({paths.META} is missing); "
                                "run the prepare stage first (dvc repro prepare)")
    meta = json.loads(meta_path.read_text())
    rows = read_rows(directory, "test")

    def split(name: str) -> TokenizedSplit | None:
        if name != "test" and not with_train:
            return None
        return TokenizedSplit.load(directory / paths.SPLIT_FILE.format(split=name))

    return Prepared(split("train"), split("val"), split("test"), [r["text"] for r in rows],
                    np.array([r["length"] for r in rows], dtype=np.int64), meta)
