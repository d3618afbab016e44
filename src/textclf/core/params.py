"""One typed, validated params object, read from params.yaml.

Every knob is documented where it is defined: in the project's params.yaml, which holds them
all, so `dvc exp run -S key=value` sets any of them and `dvc params diff` shows every change. The
dataclasses below only say which keys exist, their types and their allowed ranges; they hold no
values of their own. Loading fails with one message that lists every bad key (unknown, missing,
renamed, wrong type, out of range) and what is allowed, before any download or training.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from textclf.core.errors import ParamsError
from textclf.core.schema import Renames, build

Method = Literal["zero_shot", "finetune", "lora"]
Truncation = Literal["left", "right", "head_tail"]
ModelDtype = Literal["fp32", "bf16"]  # the dtype of the base model's frozen weights
LongTexts = Literal["truncate", "windows"]  # how evaluate and predict score a text over the limit
WindowCombine = Literal["mean_logits", "mean_probs"]  # how a text's window scores become one


def _positive_int(key: str, value: int) -> list[str]:
    return [] if value >= 1 else [f"{key} must be a positive integer, got {value}"]


def _at_least_zero(key: str, value: float, note: str = "") -> list[str]:
    return [] if value >= 0 else [f"{key} must be >= 0{note}, got {value}"]


def _fraction(key: str, value: float, closed_low: bool = True) -> list[str]:
    """[0, 1) (or (0, 1) when not closed_low): dropout rates, warmup and validation shares."""
    ok = (0.0 <= value if closed_low else 0.0 < value) and value < 1.0
    return [] if ok else [f"{key} must be in {'[' if closed_low else '('}0, 1), got {value}"]


def _blocks(key: str, value: int | str) -> list[str]:
    return [] if value == "all" or value >= 1 else [f"{key} must be >= 1 or 'all', got {value}"]


class Section:
    """A params section (or the whole params object): `to_dict` gives its keys and values."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DataParams(Section):
    source: str
    text_column: str
    label_column: str
    hub_config: str | None
    revision: str | None
    train_split: str
    test_split: str
    val_fraction: float
    train_size: int | None
    test_size: int | None
    max_tokens: int
    truncation: Truncation
    head_tokens: int
    label_names: list[str] | None

    def problems(self) -> list[str]:
        out = _fraction("data.val_fraction", self.val_fraction, closed_low=False)
        names = self.label_names
        # how many names it takes (one per class) is checked against the data (core/data.py)
        if names is not None and (len(set(names)) != len(names)
                                  or not all(n.strip() for n in names)):
            out.append(f"data.label_names must be null or a list of distinct, non-empty names, "
                       f"got {names}")
        if not self.source.strip():
            out.append("data.source must not be empty")
        elif _looks_like_path(self.source) and not Path(self.source).expanduser().is_dir():
            out.append(f"data.source: no such directory {self.source!r} (give 'imdb', a hub "
                       "dataset id, or an existing local directory)")
        out += _revision_problems("data.revision", self.revision, "data.source", self.source)
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                out.append(f"data.{key} must be a positive integer or null (all), got {value}")
        if self.max_tokens < 8:
            out.append(f"data.max_tokens must be at least 8, got {self.max_tokens}")
        if self.truncation == "head_tail" and not 0 < self.head_tokens < self.max_tokens:
            out.append(f"data.head_tokens must be in [1, data.max_tokens) = [1, {self.max_tokens}) "
                       f"for head_tail truncation, got {self.head_tokens}")
        return out


@dataclass(frozen=True)
class ZeroShotParams(Section):
    template: str
    answers: list[str]
    calibrate: bool
    content_free: str

    def problems(self) -> list[str]:
        out = []
        if self.template.count("{text}") != 1:
            out.append("zero_shot.template must contain '{text}' exactly once, got "
                       f"{self.template!r}")
        if len(self.answers) < 2 or len(set(self.answers)) != len(self.answers):
            out.append(f"zero_shot.answers must list at least 2 distinct words, got {self.answers}")
        return out


@dataclass(frozen=True)
class FinetuneParams(Section):
    trainable_blocks: int | Literal["all"]

    def problems(self) -> list[str]:
        return _blocks("finetune.trainable_blocks", self.trainable_blocks)


@dataclass(frozen=True)
class LoraParams(Section):
    r: int
    alpha: float
    dropout: float
    target_modules: list[str] | None
    trainable_blocks: int | Literal["all"]
    lr: float | None

    def problems(self) -> list[str]:
        out = _positive_int("lora.r", self.r) + _fraction("lora.dropout", self.dropout)
        out += _blocks("lora.trainable_blocks", self.trainable_blocks)
        if self.alpha <= 0:
            out.append(f"lora.alpha must be positive, got {self.alpha}")
        if self.target_modules is not None and not self.target_modules:
            out.append("lora.target_modules must be null (the family's default) or a non-empty "
                       "list")
        if self.lr is not None and self.lr <= 0:
            out.append(f"lora.lr must be positive or null (use train.lr), got {self.lr}")
        return out


@dataclass(frozen=True)
class TrainParams(Section):
    epochs: int
    batch_size: int
    lr: float
    processes: int
    weight_decay: float
    warmup_ratio: float
    schedule: Literal["linear", "cosine", "constant"]
    grad_clip: float
    head_dropout: float
    head: Literal["linear", "attention"]
    attention_heads: int
    attention_dropout: float
    group_by_length: bool
    mixed_precision: Literal["auto", "bf16", "fp32"]
    cache_frozen: Literal["auto"] | bool
    compile: bool
    gradient_checkpointing: bool
    log_every: int
    checkpoint_every: int

    def problems(self) -> list[str]:
        out = []
        for key in ("epochs", "batch_size", "processes", "log_every", "attention_heads"):
            out += _positive_int(f"train.{key}", getattr(self, key))
        if self.lr <= 0:
            out.append(f"train.lr must be positive, got {self.lr}")
        out += _at_least_zero("train.weight_decay", self.weight_decay)
        for key in ("warmup_ratio", "head_dropout", "attention_dropout"):
            out += _fraction(f"train.{key}", getattr(self, key))
        out += _at_least_zero("train.grad_clip", self.grad_clip, " (0 disables clipping)")
        out += _at_least_zero("train.checkpoint_every", self.checkpoint_every, " (0 disables)")
        return out


@dataclass(frozen=True)
class EvalParams(Section):
    batch_size: int
    bootstrap: int
    errors: int
    long_texts: LongTexts
    window_overlap: float
    window_combine: WindowCombine
    compile: bool

    def problems(self) -> list[str]:
        return (_positive_int("eval.batch_size", self.batch_size)
                + _at_least_zero("eval.bootstrap", self.bootstrap)
                + _at_least_zero("eval.errors", self.errors)
                + _fraction("eval.window_overlap", self.window_overlap))


@dataclass(frozen=True)
class ExportParams(Section):
    license: str | None
    language: list[str] | None

    def problems(self) -> list[str]:
        out = []
        if self.license is not None and (not self.license.strip() or " " in self.license):
            out.append(f"export.license must be a Hub license id such as 'mit' or 'apache-2.0', "
                       f"or null, got {self.license!r}")
        if self.language is not None and (not self.language or not all(
                code.strip() and " " not in code for code in self.language)):
            out.append(f"export.language must be null or a list of language codes such as "
                       f"[en], got {self.language}")
        return out


@dataclass(frozen=True)
class BaselineParams(Section):
    c_grid: list[float]
    ngrams: int
    min_df: int

    def problems(self) -> list[str]:
        out = _positive_int("baseline.ngrams", self.ngrams)
        out += _positive_int("baseline.min_df", self.min_df)
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            out.append(f"baseline.c_grid must be a non-empty list of positive numbers, got "
                       f"{self.c_grid}")
        return out


@dataclass(frozen=True)
class Params(Section):
    seed: int
    model: str
    model_revision: str | None
    model_dtype: ModelDtype
    method: Method
    data: DataParams
    zero_shot: ZeroShotParams
    finetune: FinetuneParams
    lora: LoraParams
    train: TrainParams
    eval: EvalParams
    export: ExportParams
    baseline: BaselineParams

    def problems(self) -> list[str]:
        out = []
        if self.seed < 0:
            out.append(f"seed must be a non-negative integer, got {self.seed}")
        if not self.model.strip():
            out.append("model must not be empty")
        elif _looks_like_path(self.model) and not Path(self.model).expanduser().is_dir():
            out.append(f"model: no such directory {self.model!r} (give a hub id such as 'gpt2' or "
                       "an existing local model directory)")
        out += _revision_problems("model_revision", self.model_revision, "model", self.model)
        for section in (self.data, self.zero_shot, self.finetune, self.lora, self.train, self.eval,
                        self.export, self.baseline):
            out.extend(section.problems())
        return out

    @property
    def learning_rate(self) -> float:
        """The learning rate of this run: lora.lr overrides train.lr for LoRA."""
        if self.method == "lora" and self.lora.lr is not None:
            return self.lora.lr
        return self.train.lr


def load_params(path: str | os.PathLike = "params.yaml", overrides: dict | None = None) -> Params:
    """Read params.yaml, deep-merge `overrides` on top, validate, return the typed object."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if overrides and isinstance(raw, dict):
        raw = deep_merge(raw, overrides)
    return parse_params(raw, source=str(path))


def parse_params(raw: dict, source: str = "params") -> Params:
    """`raw` (a params file's contents, every key), validated."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise ParamsError(f"invalid {source}: the top level must be a mapping, got "
                          f"{type(raw).__name__}")
    params = build(Params, raw, errors, RENAMES)
    if not errors:
        errors = params.problems()
    if errors:
        raise ParamsError(f"invalid {source}:\n  - " + "\n  - ".join(errors))
    return params


def deep_merge(base: dict, overrides: dict) -> dict:
    """A copy of `base` with `overrides` merged in, nested dicts merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def flat_params(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested params dict with dotted keys ("train.lr"), as DVC names params, in file order."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _revision_problems(key: str, revision: str | None, source_key: str, source: str) -> list[str]:
    """A hub revision (commit, tag or branch) pins a hub id only: a local directory has none."""
    if revision is None:
        return []
    if not revision.strip() or revision != revision.strip():
        return [f"{key} must be null or a commit, tag or branch name, got {revision!r}"]
    if source.strip() and _looks_like_path(source):
        return [f"{key} is {revision!r}, but {source_key} {source!r} is a local directory, which "
                f"has no hub revision (its files' content hash is recorded instead): set {key} "
                "to null"]
    return []


def _looks_like_path(value: str) -> bool:
    """True for values a user meant as a local path; hub ids look like 'name' or 'owner/name'."""
    return value.startswith(("/", ".", "~")) or Path(value).exists()


# ---------------------------------------------------------------------------------------------
# Spellings an earlier params.yaml of this repository holds: each is refused with the new one.
# Keys: old dotted name -> new dotted name
RENAMED = {
    "lora.blocks": "lora.trainable_blocks",  # one name for one idea, as finetune.trainable_blocks
    "finetune.head_dropout": "train.head_dropout",  # the head is trained by finetune and lora alike
}

# Values: (dotted key, old value) -> new value. The old fp32 spelling `no` could not be set:
# `dvc exp run -S train.mixed_precision=no` writes it unquoted, and YAML 1.1 (PyYAML) reads an
# unquoted no as false. An earlier file's quoted 'no' loses its quotes the same way at the next
# `dvc exp run -S` of any key (DVC rewrites the whole file), so both forms can arrive here.
RENAMED_VALUES = {("train.mixed_precision", "no"): "fp32", ("train.mixed_precision", False): "fp32"}
RENAMES = Renames(RENAMED, RENAMED_VALUES)
