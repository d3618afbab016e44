"""Text to token ids, and the one truncation rule that training, evaluation and predict share.

A review is tokenized without special tokens and truncated to a budget of text tokens; the model
input is then `prefix + text ids + suffix`, where prefix/suffix are the tokenizer's special tokens
([CLS] ... [SEP] for BERT, nothing for GPT-2) and, for zero-shot scoring, the prompt around the
text. Keeping the specials outside the truncation means right truncation never drops [SEP].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .families import Family
from .params import ParamsError

TIKTOKEN_GPT2_PAD = 50256  # GPT-2 has no pad token: pad with <|endoftext|>, masked out anyway


@dataclass
class TextTokenizer:
    name: str  # "tiktoken:gpt2" or the tokenizer directory / hub id
    encode_batch: Callable[[Sequence[str]], list[list[int]]]  # texts -> ids, no special tokens
    decode: Callable[[Sequence[int]], str]
    pad_id: int
    special_prefix: list[int]  # added before the text by the tokenizer ([CLS])
    special_suffix: list[int]  # added after it ([SEP])
    # Causal BPE tokenizers mark word starts with a leading space: the text is encoded as
    # " " + text, so its first word gets the same token as it gets inside a prompt.
    leading_space: bool

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if self.leading_space:
            texts = [" " + t for t in texts]
        return self.encode_batch(list(texts))

    def encode_plain(self, text: str) -> list[int]:
        """Ids of a literal string (a prompt part or an answer word), with no leading space added."""
        return self.encode_batch([text])[0] if text else []

    def single_token(self, word: str) -> int:
        ids = self.encode_plain(word)
        if len(ids) != 1:
            pieces = [self.decode([i]) for i in ids]
            raise ParamsError(f"zero_shot.answers: answer word {word!r} is {len(ids)} tokens {pieces} for tokenizer "
                             f"{self.name}; zero-shot scoring needs single-token answer words "
                             "(mind the leading space, e.g. ' Positive')")
        return ids[0]

    @property
    def n_special(self) -> int:
        return len(self.special_prefix) + len(self.special_suffix)


def load_tokenizer(model: str, family: Family) -> TextTokenizer:
    """GPT-2 from the hub uses tiktoken's gpt2 encoding; anything else its own tokenizer files."""
    if family.name == "gpt2" and not Path(model).is_dir():
        encoding = tiktoken_gpt2()
        if encoding is None:
            raise OSError("tiktoken could not load its 'gpt2' encoding: it is downloaded on first "
                          "use and cached (TIKTOKEN_CACHE_DIR). Connect once, or set `model` to a "
                          "local GPT-2 directory that holds its tokenizer files.")
        return TextTokenizer(
            name="tiktoken:gpt2",
            encode_batch=encoding.encode_ordinary_batch,
            decode=encoding.decode,
            pad_id=TIKTOKEN_GPT2_PAD,
            special_prefix=[],
            special_suffix=[],
            leading_space=True,
        )
    return _hf_tokenizer(model, family)


def _hf_tokenizer(model: str, family: Family) -> TextTokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    prefix, suffix = _special_tokens_around(tok)
    pad_id = tok.pad_token_id
    if pad_id is None:  # GPT-2 style tokenizers: pad with EOS; the attention mask hides it
        pad_id = tok.eos_token_id if tok.eos_token_id is not None else 0

    def encode_batch(texts: Sequence[str]) -> list[list[int]]:
        # verbose=False: texts longer than the model's maximum are expected (truncated later),
        # so no "Token indices sequence length is longer than ..." warning
        return tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]

    return TextTokenizer(
        name=str(model),
        encode_batch=encode_batch,
        decode=tok.decode,
        pad_id=int(pad_id),
        special_prefix=prefix,
        special_suffix=suffix,
        leading_space=family.causal,
    )


def _special_tokens_around(tok) -> tuple[list[int], list[int]]:
    """The ids a tokenizer adds before and after a single text, found by encoding one word."""
    plain = tok("hello", add_special_tokens=False)["input_ids"]
    full = tok("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise ValueError(f"cannot locate the text among the special tokens of {tok.name_or_path}")


@functools.lru_cache(maxsize=1)
def tiktoken_gpt2():
    """tiktoken's gpt2 encoding, or None when it is neither cached nor downloadable."""
    try:
        import tiktoken

        return tiktoken.get_encoding("gpt2")
    except Exception:  # offline with no cache: network errors of several kinds
        return None


def truncate(ids: Sequence[int], budget: int, strategy: str, head_tokens: int) -> list[int]:
    """Keep at most `budget` ids: the end (left), the start (right), or head + tail."""
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    if strategy == "left":
        return ids[len(ids) - budget:]
    if strategy == "right":
        return ids[:budget]
    if strategy == "head_tail":
        head = min(head_tokens, budget)
        tail = budget - head
        return ids[:head] + (ids[len(ids) - tail:] if tail else [])
    raise ValueError(f"unknown truncation {strategy!r}")


@dataclass(frozen=True)
class InputFormat:
    """What surrounds the truncated text ids in the model input."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    def apply(self, text_ids: Sequence[int]) -> list[int]:
        return [*self.prefix, *text_ids, *self.suffix]

    @property
    def extra(self) -> int:
        return len(self.prefix) + len(self.suffix)


def classifier_format(tokenizer: TextTokenizer) -> InputFormat:
    return InputFormat(tuple(tokenizer.special_prefix), tuple(tokenizer.special_suffix))


def prompt_format(tokenizer: TextTokenizer, template: str) -> InputFormat:
    """The zero-shot prompt around the text, e.g. "Review: {text} Sentiment:".

    The text ids carry their own leading space, so the space before {text} is left to them.
    """
    before, after = template.split("{text}")
    return InputFormat(
        tuple(tokenizer.special_prefix + tokenizer.encode_plain(before.rstrip(" "))),
        tuple(tokenizer.encode_plain(after) + tokenizer.special_suffix),
    )


@dataclass
class TokenizedSplit:
    ids: list[np.ndarray]  # truncated text ids of each example (no special tokens, no prompt)
    labels: np.ndarray  # int64 class ids
    full_lengths: np.ndarray  # text length before truncation, in model tokens

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)

    def save(self, path: Path) -> None:
        offsets = np.cumsum([0] + [len(x) for x in self.ids]).astype(np.int64)
        flat = np.concatenate(self.ids).astype(np.int32) if self.ids else np.zeros(0, np.int32)
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, flat=flat, offsets=offsets, labels=self.labels,
                     full_lengths=self.full_lengths)

    @classmethod
    def load(cls, path: Path) -> "TokenizedSplit":
        with np.load(path) as z:
            flat, offsets = z["flat"], z["offsets"]
            ids = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
            return cls(ids, z["labels"].astype(np.int64), z["full_lengths"].astype(np.int64))


def tokenize_split(tokenizer: TextTokenizer, texts: Sequence[str], labels: np.ndarray,
                   max_tokens: int, truncation: str, head_tokens: int) -> TokenizedSplit:
    """Token ids of each text, truncated so that with the special tokens they fit `max_tokens`."""
    budget = max_tokens - tokenizer.n_special
    full = tokenizer.encode(texts)
    ids = [np.asarray(truncate(x, budget, truncation, head_tokens), dtype=np.int32) for x in full]
    return TokenizedSplit(ids, np.asarray(labels, dtype=np.int64),
                          np.array([len(x) for x in full], dtype=np.int64))


def length_in_gpt2_tokens(tokenizer: TextTokenizer, texts: Sequence[str],
                          full_lengths: np.ndarray) -> tuple[np.ndarray, str]:
    """Review lengths for the per-length table, in GPT-2 tokens when tiktoken can provide them
    (the reference's unit), else in the model's own tokens; returns (lengths, unit)."""
    if tokenizer.name == "tiktoken:gpt2":
        return full_lengths, "gpt2_tokens"
    encoding = tiktoken_gpt2()
    if encoding is None:
        return full_lengths, "model_tokens"
    return np.array([len(x) for x in encoding.encode_ordinary_batch(list(texts))]), "gpt2_tokens"
