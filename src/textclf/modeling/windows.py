"""Whole texts scored as overlapping windows, for the texts the truncation rule would cut.

A text over the model's input length (its text budget: data.max_tokens minus the special tokens)
is read as windows of `budget` tokens, each starting `stride` tokens after the one before and the
last ending at the text's end; each window gets the model's input format around it (special
tokens, or the zero-shot prompt) and is scored by predict_logits; the windows' scores are then
combined into one per text: the mean of their logits (mean_logits) or of their probabilities
(mean_probs, returned as log-probabilities so that a softmax gives that mean back).

Texts within the budget are one window, the text itself: their logits are the truncated split's,
passed in, so they score exactly as without windows. A window that equals a text's truncated ids
(left truncation keeps the last window, right truncation the first) takes the truncated split's
logits too instead of being scored again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from textclf.core.errors import DataError
from textclf.core.tokenization import TokenizedSplit, encode_texts, text_budget
from textclf.modeling.batching import Collator
from textclf.modeling.inference import predict_logits, softmax
from textclf.modeling.model_info import TrainedModelInfo

COMBINE_RULES = ("mean_logits", "mean_probs")


@dataclass(frozen=True)
class Windows:
    """How evaluate and predict read a text over the budget (params.yaml's eval.window_*)."""

    overlap: float  # share of a window's tokens also in the next one, in [0, 1)
    combine: str  # one of COMBINE_RULES

    def stride(self, budget: int) -> int:
        """Tokens between the starts of consecutive windows of `budget` tokens (at least 1)."""
        return max(1, budget - round(budget * self.overlap))


@dataclass(frozen=True)
class WindowScores:
    logits: np.ndarray  # (N, K) float32: combined for the texts over the budget
    windows: np.ndarray  # (N,) windows each text was read as (1 within the budget)
    scored: int  # windows scored by the model beyond the truncated split


def window_starts(length: int, budget: int, stride: int) -> list[int]:
    """Starts of the windows over a text of `length` tokens: 0, stride, 2 stride, ... while a
    window ends before the text does, then the one ending at its end; [0] within the budget."""
    if length <= budget:
        return [0]
    last = length - budget
    return list(range(0, last, stride)) + [last]


def combine_windows(logits: np.ndarray, owner: np.ndarray, n_texts: int,
                    rule: str) -> np.ndarray:
    """(n_texts, K) float32: the windows' logits (rows of `logits`, window i of text owner[i])
    combined per text by `rule`; every text owns at least one window."""
    if rule not in COMBINE_RULES:
        raise ValueError(f"unknown window combination {rule!r} (allowed: {COMBINE_RULES})")
    values = softmax(logits) if rule == "mean_probs" else logits
    total = np.zeros((n_texts, logits.shape[1]), dtype=np.float64)
    np.add.at(total, owner, values.astype(np.float64))
    mean = total / np.bincount(owner, minlength=n_texts)[:, None]
    return (np.log(mean) if rule == "mean_probs" else mean).astype(np.float32)


def whole_text_logits(model, split: TokenizedSplit, full_ids: Sequence[Sequence[int]],
                      truncated_logits: np.ndarray, budget: int, windows: Windows,
                      collator: Collator, batch_size: int, accelerator,
                      forward=None) -> WindowScores:
    """Every text of `split` scored whole. `full_ids` are its texts' ids before truncation
    (core.tokenization.encode_texts), `truncated_logits` predict_logits of `split` itself
    (`forward` as predict_logits takes it: the compiled scorer under eval.compile)."""
    if len(full_ids) != len(split) or len(truncated_logits) != len(split):
        raise ValueError(f"{len(full_ids)} whole texts and {len(truncated_logits)} logits for "
                         f"a split of {len(split)}")
    stride = windows.stride(budget)
    owner, reused, to_score, to_score_owner = [], [], [], []
    for i, full in enumerate(full_ids):
        if len(full) <= budget:
            continue
        full = np.asarray(full, dtype=np.int32)
        for start in window_starts(len(full), budget, stride):
            window = full[start:start + budget]
            owner.append(i)
            if np.array_equal(window, split.ids[i]):
                reused.append(len(owner) - 1)
            else:
                to_score.append(window)
                to_score_owner.append(len(owner) - 1)
    logits = np.array(truncated_logits, dtype=np.float32, copy=True)
    counts = np.ones(len(split), dtype=np.int64)
    if not owner:
        return WindowScores(logits, counts, 0)
    owner = np.asarray(owner)
    window_logits = np.empty((len(owner), logits.shape[1]), dtype=np.float32)
    window_logits[reused] = truncated_logits[owner[reused]]
    if to_score:
        part = TokenizedSplit(to_score, np.zeros(len(to_score), dtype=np.int64),
                              np.array([len(w) for w in to_score], dtype=np.int64))
        window_logits[to_score_owner] = predict_logits(model, part, collator, batch_size,
                                                       accelerator, forward, desc="windows")
    long_texts = np.unique(owner)
    combined = combine_windows(window_logits, np.searchsorted(long_texts, owner),
                               len(long_texts), windows.combine)
    logits[long_texts] = combined
    counts[long_texts] = np.bincount(owner)[long_texts]
    return WindowScores(logits, counts, len(to_score))


def whole_split_logits(model, info: TrainedModelInfo, model_dir, texts: Sequence[str],
                       split: TokenizedSplit, truncated_logits: np.ndarray, windows: Windows,
                       collator: Collator, batch_size: int, accelerator,
                       forward=None) -> WindowScores:
    """whole_text_logits of a prepared split (the evaluate stage's): its cleaned `texts`
    encoded again, whole, by the tokenizer the model was trained with."""
    tokenizer = info.load_tokenizer(model_dir)
    full = encode_texts(tokenizer, texts)
    if [len(x) for x in full] != split.full_lengths.tolist():
        raise DataError(f"the tokenizer of {info.base_model!r} now encodes the prepared texts "
                        "otherwise than prepare did: run the pipeline again (dvc repro)")
    return whole_text_logits(model, split, full, truncated_logits,
                             text_budget(tokenizer, info.max_tokens), windows, collator,
                             batch_size, accelerator, forward)
