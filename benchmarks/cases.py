"""What the benchmark runs: the models, methods and sizes, its settings, and each (model, method)
case: the saved random model, its params and the random-id splits both sides get.

Token ids are random (speed does not depend on them), so no tokenizer is needed for the models;
their lengths are drawn from the review lengths (inputs.py) and cut to `max_tokens` as the
pipeline cuts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from random_models import random_config

from textclf.core.params import Params, load_params
from textclf.core.tokenization import InputFormat, TokenizedSplit

MODELS = ("gpt2", "bert")
METHODS = ("zero_shot", "last2", "lora", "full", "eval", "train_run", "eval_run")
TRAINING_METHODS = ("last2", "lora", "full", "train_run")
# Whole runs, timed from start to end: train_run = the last-2 recipe trained for every epoch with
# validation each epoch (our frozen-block cache built inside the clock); eval_run = a whole test
# split evaluated. The other methods time a few steps (batches) after warm-up steps.
WHOLE_RUNS = ("train_run", "eval_run")
# A classifier's evaluation: both sides score with the same head (Case.head), and their
# probabilities are compared where the two models are the same function (same_function)
SCORING_METHODS = ("eval", "eval_run")
HEAD_STD = 0.02  # the head's random weights: transformers' initializer_range
# A side's key holding its (texts, classes) probabilities of a scoring method: compared by
# speed.py between the sides, then dropped (bench.json keeps the comparison)
PROBABILITIES = "probabilities"
# The per-step method that stands in for a whole run in the untimed warm-up round
WARMUP_STAND_IN = {"train_run": "last2", "eval_run": "eval"}
SIZES = ("full", "small", "tiny")
LAST_BLOCKS = 2  # blocks trained by the last2 method (with the final norm and the head)
NUM_LABELS = 2
# "Review: {text} Sentiment:" is 2 GPT-2 tokens before the text and 3 after it.
PROMPT_TOKENS = (2, 3)


@dataclass(frozen=True)
class Arch:
    """How to build one family's model from its config, and its token-id conventions."""
    config: Callable[[dict], Any]  # size overrides -> a transformers config
    pad_id: Callable[[Any], int]  # config -> the id the collators pad with
    prefix: tuple[int, ...]  # special ids before the text ([CLS])
    suffix: tuple[int, ...]  # special ids after it ([SEP])
    first_text_id: int  # random text ids are drawn from [first_text_id, vocab) minus the pad id


def _config(family: str):
    """size overrides -> the family's config (random_models.random_config; none = full size)."""
    return lambda size: random_config(family, **size)


ARCHS = {
    # GPT-2 has no pad token: pad with <|endoftext|> (the last id); the attention mask hides it.
    "gpt2": Arch(_config("gpt2"), lambda c: c.eos_token_id, (), (), 0),
    # bert-base-uncased ids: [PAD] 0, [CLS] 101, [SEP] 102; ordinary tokens start after [MASK] 103.
    "bert": Arch(_config("bert"), lambda c: c.pad_token_id, (101,), (102,), 104),
}
# Size overrides of the configs: full = the real models; small and tiny for CPU runs.
SIZE_OVERRIDES = {
    "full": {},
    "small": {"layers": 4, "width": 256, "heads": 4},
    "tiny": {"layers": 3, "width": 32, "heads": 2, "vocab": 1000},
}


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    methods: tuple[str, ...]
    size: str
    steps: int  # timed optimizer steps (training) or batches (scoring, evaluation)
    warmup: int  # untimed optimizer steps before them
    batch_size: int  # texts per training step
    eval_batch_size: int  # texts per scoring / evaluation batch
    max_tokens: int  # model input length in tokens, special tokens included
    seed: int
    plain_bf16: bool = False  # also run the plain recipe with bf16 mixed precision (a third side)
    run_texts: int = 2000  # whole runs: training texts (train_run) and test texts (eval_run)
    epochs: int = 3  # whole runs: epochs of train_run
    val_fraction: float = 0.1  # whole runs: validation texts = this share of run_texts, at least 1

    def problems(self) -> list[str]:
        out = [f"unknown model {m!r} (allowed: {', '.join(MODELS)})" for m in self.models
               if m not in MODELS]
        out += [f"unknown method {m!r} (allowed: {', '.join(METHODS)})" for m in self.methods
                if m not in METHODS]
        if self.size not in SIZES:
            out.append(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        for key in ("steps", "warmup", "batch_size", "eval_batch_size", "run_texts", "epochs"):
            if getattr(self, key) < 1:
                out.append(f"{key} must be a positive integer, got {getattr(self, key)}")
        if not 0 < self.val_fraction < 1:
            out.append(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.max_tokens < 8:
            out.append(f"max_tokens must be at least 8, got {self.max_tokens}")
        return out


@dataclass
class Case:
    """One (model, method): the saved random model and the data both sides get."""
    model: str  # gpt2 | bert
    method: str
    model_dir: Path
    config: Any
    params: Params  # params.yaml + overrides for this case; ours runs on exactly these
    train: TokenizedSplit
    val: TokenizedSplit  # scored once after training by our loop (outside the timed window)
    test: TokenizedSplit  # scoring / evaluation
    fmt: InputFormat  # special tokens (and the zero-shot prompt) around the text ids
    pad_id: int
    answer_ids: list[int]  # zero-shot: the answer words' ids
    # eval, eval_run: the (classes, hidden) head weight both sides score with (no bias), so
    # that where they compute the same function (GPT-2: the last real token's hidden state
    # times the head) their probabilities can be compared
    head: np.ndarray | None = None


def case_params(params_path: Path, model_dir: Path, method: str, settings: Settings) -> Params:
    """params.yaml with the benchmark's overrides: every other engine knob as configured."""
    engine_method = {"zero_shot": "zero_shot", "lora": "lora"}.get(method, "finetune")
    blocks = "all" if method == "full" else LAST_BLOCKS
    return load_params(params_path, overrides={
        "model": str(model_dir), "method": engine_method,
        "finetune": {"trainable_blocks": blocks},
        "data": {"max_tokens": settings.max_tokens},
        "train": {"batch_size": settings.batch_size,
                  "epochs": settings.epochs if method == "train_run" else 1},
        "eval": {"batch_size": settings.eval_batch_size},
    })


def make_case(model: str, method: str, model_dir: Path, config, lengths: np.ndarray,
              params_path: Path, settings: Settings, rng: np.random.Generator) -> Case:
    """The params and the random-id splits of one (model, method)."""
    arch = ARCHS[model]
    pad_id, vocab = int(arch.pad_id(config)), int(config.vocab_size)
    fmt, answer_ids = InputFormat(arch.prefix, arch.suffix), []
    if method == "zero_shot":
        prompt = [int(i) for i in rng.integers(arch.first_text_id, pad_id, sum(PROMPT_TOKENS))]
        fmt = InputFormat(tuple(prompt[:PROMPT_TOKENS[0]]), tuple(prompt[PROMPT_TOKENS[0]:]))
        answer_ids = [int(i) for i in rng.choice(np.arange(arch.first_text_id, pad_id), 2,
                                                 replace=False)]
    budget = settings.max_tokens - len(arch.prefix) - len(arch.suffix)

    def split(n: int) -> TokenizedSplit:
        return random_split(lengths, n, budget, arch.first_text_id, vocab, pad_id, rng)

    train, val, test = split_sizes(method, settings)
    head = (rng.normal(0.0, HEAD_STD, (NUM_LABELS, int(config.hidden_size))).astype(np.float32)
            if method in SCORING_METHODS else None)
    return Case(model, method, model_dir, config,
                case_params(params_path, model_dir, method, settings),
                train=split(train), val=split(val), test=split(test),
                fmt=fmt, pad_id=pad_id, answer_ids=answer_ids, head=head)


def split_sizes(method: str, settings: Settings) -> tuple[int, int, int]:
    """Texts of the train, validation and test splits of a case. Timed steps: what the warm-up
    and timed steps (batches) take, and a small validation split scored once after training
    (outside the timed window); whole runs: run_texts to train on, a validation share of them
    (as data.val_fraction holds out), run_texts to evaluate."""
    if method == "train_run":
        return settings.run_texts, max(1, round(settings.run_texts * settings.val_fraction)), 1
    if method == "eval_run":
        return 1, 1, settings.run_texts
    return (settings.batch_size * (settings.warmup + settings.steps),
            min(8, settings.eval_batch_size), settings.eval_batch_size * settings.steps)


def random_split(full_lengths: np.ndarray, n: int, budget: int, first_id: int, vocab: int,
                 avoid: int, rng: np.random.Generator) -> TokenizedSplit:
    """`n` texts of random ids whose lengths are drawn from `full_lengths`, cut to `budget`."""
    full = rng.choice(full_lengths, size=n, replace=True)
    ids = []
    for length in np.minimum(full, budget):
        x = rng.integers(first_id, vocab - 1, size=int(length))
        ids.append(np.where(x >= avoid, x + 1, x).astype(np.int32))  # skips the pad id
    return TokenizedSplit(ids, rng.integers(0, NUM_LABELS, size=n).astype(np.int64),
                          full.astype(np.int64))


def same_function(case: Case) -> bool:
    """Whether both sides' classifiers compute the same function given the same head: GPT-2's
    (GPT2ForSequenceClassification scores the last real token, as ours pools), not BERT's (the
    Trainer's takes [CLS] through BERT's pooler, ours the masked mean)."""
    return case.method in SCORING_METHODS and case.model == "gpt2"


def first(split: TokenizedSplit, n: int) -> TokenizedSplit:
    return TokenizedSplit(split.ids[:n], split.labels[:n], split.full_lengths[:n])
