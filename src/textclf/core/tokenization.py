"""Text to token ids, and the one truncation rule that training, evaluation and predict share.

A review is tokenized without special tokens and truncated to a budget of text tokens; the model
input is then `prefix + text ids + suffix`, where prefix/suffix are the tokenizer's special tokens
([CLS] ... [SEP] for BERT, nothing for GPT-2) and, for zero-shot scoring, the prompt around the
text. Keeping the specials outside the truncation means right truncation never drops [SEP].

Each model is tokenized by its own tokenizer, or by tiktoken's gpt2 encoding when that tokenizer
is GPT-2's (the same ids, faster): `load_tokenizer` checks, whatever the architecture.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textclf.core.errors import ModelLoadError, ParamsError
from textclf.core.families import Family
from textclf.core.model_loading import pretrained
from textclf.core.progress import progress_bar

TIKTOKEN_GPT2 = "tiktoken:gpt2"  # TextTokenizer.name when tiktoken encodes the text
GPT2_VOCAB_SIZE = 50257  # GPT-2's BPE: 256 bytes, 50,000 merges and <|endoftext|>
# Texts whose ids exercise a tokenizer's whole pipeline: byte-level BPE, the pre-tokenizer's
# splits (contractions, digits, punctuation, runs of spaces, new lines), case, accents, other
# scripts, an emoji, a special token's text. A tokenizer of GPT-2's size that gives tiktoken's ids
# for all of them is GPT-2's; any other vocabulary or pre-tokenizer differs on some.
GPT2_PROBES = (
    "Hello world",
    " Positive Negative",
    "The film's ending wasn't 10/10, was it?!",
    "  two  spaces,\n\nnew lines\tand a tab ",
    "Café naïve — 東京 🙂",
    "a <|endoftext|> b",
)
# Texts encoded per call when tokenizing a split: the progress bar's step (shown for longer
# splits only)
ENCODE_CHUNK = 2000


@dataclass
class TextTokenizer:
    name: str  # "tiktoken:gpt2" or the tokenizer directory / hub id
    encode_batch: Callable[[Sequence[str]], list[list[int]]]  # texts -> ids, no special tokens
    decode: Callable[[Sequence[int]], str]
    pad_id: int
    special_prefix: list[int]  # added before the text by the tokenizer ([CLS])
    special_suffix: list[int]  # added after it ([SEP])
    # Causal models whose tokenizer writes a word start as part of the token after it (GPT-2's
    # "Ġgood", Gemma's "▁good") but not at the start of a string: the text is encoded as
    # " " + text, so its first word gets the same token as it gets inside a prompt. Tokenizers
    # that mark the first word themselves (Llama's SentencePiece "▁good") need none.
    leading_space: bool

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if self.leading_space:
            texts = [" " + t for t in texts]
        return self.encode_batch(list(texts))

    def encode_plain(self, text: str) -> list[int]:
        """Ids of a literal string (a prompt part or an answer word), with no leading space
        added."""
        return self.encode_batch([text])[0] if text else []

    def single_token(self, word: str) -> int:
        ids = self.encode_plain(word)
        if len(ids) != 1:
            pieces = [self.decode([i]) for i in ids]
            raise ParamsError(f"zero_shot.answers: answer word {word!r} is {len(ids)} tokens "
                              f"{pieces} for tokenizer {self.name}; zero-shot scoring needs "
                              "single-token answer words (mind the leading space, e.g. "
                              "' Positive')")
        return ids[0]

    @property
    def n_special(self) -> int:
        return len(self.special_prefix) + len(self.special_suffix)


def load_tokenizer(model: str, family: Family, revision: str | None = None) -> TextTokenizer:
    """The model's own tokenizer (a hub model's at `revision`), with tiktoken's gpt2 encoding
    doing the encoding when that tokenizer is GPT-2's: the same ids (tests/test_tokenization.py,
    on real reviews), faster. The architecture does not decide: a GPT-2 model may come with
    another vocabulary."""
    tok = _auto_tokenizer(model, revision)
    name, encode_batch, decode = str(model), _plain_encoder(tok), tok.decode
    encoding = _gpt2_encoding_if_same(tok, model)
    if encoding is not None:
        name, encode_batch, decode = TIKTOKEN_GPT2, encoding.encode_ordinary_batch, encoding.decode
    prefix, suffix = _special_tokens_around(tok)
    pad_id = tok.pad_token_id
    if pad_id is None:  # GPT-2 style tokenizers: pad with EOS; the attention mask hides it
        pad_id = tok.eos_token_id if tok.eos_token_id is not None else 0
    return TextTokenizer(
        name=name,
        encode_batch=encode_batch,
        decode=decode,
        pad_id=int(pad_id),
        special_prefix=prefix,
        special_suffix=suffix,
        leading_space=family.causal and not marks_first_word(encode_batch),
    )


def marks_first_word(encode_batch: Callable[[Sequence[str]], list[list[int]]]) -> bool:
    """Whether a string's first word gets the token it gets after a space: "movie" alone
    encodes as the end of "x movie" (SentencePiece with a dummy prefix), or not (byte-level
    BPE, Gemma)."""
    alone, after = encode_batch(["movie", "x movie"])
    return after[-len(alone):] == alone


def _auto_tokenizer(model: str, revision: str | None = None):
    from transformers import AutoTokenizer

    where = "local directory" if Path(model).is_dir() else "hub id"
    tok = pretrained(AutoTokenizer, model, what="the tokenizer of model", revision=revision)
    # Without tokenizer files beside config.json, transformers builds an empty tokenizer of the
    # config's type instead of failing: every text would become no ids at all
    if not tok("hello", add_special_tokens=False)["input_ids"]:
        raise ModelLoadError(
            f"model {model!r} ({where}) has no usable tokenizer: its tokenizer files "
            "(tokenizer.json, or vocab.json and merges.txt, or vocab.txt) are missing, and "
            f"transformers made one of {len(tok)} token(s). Save the tokenizer with the model "
            "(tokenizer.save_pretrained(<directory>)).")
    return tok


def _plain_encoder(tok) -> Callable[[Sequence[str]], list[list[int]]]:
    """Texts -> ids with the Hugging Face tokenizer: no special tokens added, and none read from
    the text either (split_special_tokens), so a review holding "[SEP]" or "<|endoftext|>"
    gets that text's ids, as tiktoken's encode_ordinary gives it. A fast tokenizer's Rust
    backend encodes without offsets (encode_batch_fast), when it gives the call's ids for
    GPT2_PROBES and SPECIAL_PROBES (`_backend_encoder`)."""

    def encode_batch(texts: Sequence[str]) -> list[list[int]]:
        # verbose=False: texts longer than the model's maximum are expected (truncated later),
        # so no "Token indices sequence length is longer than ..." warning
        return tok(list(texts), add_special_tokens=False, split_special_tokens=True,
                   verbose=False)["input_ids"]

    backend = _backend_encoder(tok)
    if backend is not None:
        probes = [*GPT2_PROBES, *_special_probes(tok)]
        if backend(probes) == encode_batch(probes):
            return backend
    return encode_batch


def _special_probes(tok) -> list[str]:
    """Texts holding the tokenizer's own special tokens, which must be split as text."""
    specials = [t for t in getattr(tok, "all_special_tokens", []) if t]
    return [f"a {t} b{t}" for t in specials]


def _backend_encoder(tok) -> Callable[[Sequence[str]], list[list[int]]] | None:
    """Texts -> ids by a fast tokenizer's Rust backend, its special tokens' text encoded as text
    (encode_special_tokens, what split_special_tokens sets) and no offsets computed
    (encode_batch_fast): the call's work without the Python around it. None for a tokenizer
    without that backend."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None

    def encode_batch(texts: Sequence[str]) -> list[list[int]]:
        before = backend.encode_special_tokens
        backend.encode_special_tokens = True
        try:
            return [e.ids for e in backend.encode_batch_fast(list(texts),
                                                             add_special_tokens=False)]
        finally:
            backend.encode_special_tokens = before

    return encode_batch


def _gpt2_encoding_if_same(tok, model: str):
    """tiktoken's gpt2 encoding if `tok` encodes text exactly as it does, else None."""
    if len(tok) != GPT2_VOCAB_SIZE:
        return None
    encoding = tiktoken_gpt2()
    if encoding is None:
        raise ModelLoadError(
            f"tiktoken's 'gpt2' encoding could not be loaded (model {model!r} has a tokenizer "
            f"of GPT-2's size, {GPT2_VOCAB_SIZE} tokens: if it is GPT-2's, tiktoken encodes for "
            "it). tiktoken downloads the encoding on first use into TIKTOKEN_CACHE_DIR "
            "(default: data-gym-cache in the system's temporary directory, which may be "
            "emptied): connect once, or set TIKTOKEN_CACHE_DIR to a directory holding GPT-2's "
            "vocab.bpe and encoder.json, each named by the sha1 hex digest of its download URL "
            "(tiktoken_ext/openai_public.py).")
    ours = _plain_encoder(tok)(GPT2_PROBES)
    return encoding if ours == encoding.encode_ordinary_batch(list(GPT2_PROBES)) else None


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
    def load(cls, path: Path) -> TokenizedSplit:
        with np.load(path) as z:
            flat, offsets = z["flat"], z["offsets"]
            ids = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
            return cls(ids, z["labels"].astype(np.int64), z["full_lengths"].astype(np.int64))


def check_head_tokens(tokenizer: TextTokenizer, max_tokens: int, truncation: str,
                      head_tokens: int) -> None:
    """head_tail must leave room for a tail in the text budget (max_tokens minus the special
    tokens the tokenizer adds), or `truncate` would silently cut on the right. Params validation
    checks head_tokens against max_tokens only: it knows no tokenizer. The prepare stage calls
    this before it reads or tokenizes any text."""
    budget = text_budget(tokenizer, max_tokens)
    if truncation == "head_tail" and not 0 < head_tokens < budget:
        raise ParamsError(
            f"data.head_tokens must be in [1, {budget}) for head_tail truncation with this "
            f"model, got {head_tokens}: data.max_tokens {max_tokens} minus the "
            f"{tokenizer.n_special} special tokens its tokenizer adds leaves {budget} text "
            "tokens, and the tail needs at least one")


def text_budget(tokenizer: TextTokenizer, max_tokens: int) -> int:
    """Text tokens in a model input of `max_tokens`: what the special tokens leave."""
    return max_tokens - tokenizer.n_special


def encode_texts(tokenizer: TextTokenizer, texts: Sequence[str]) -> list[list[int]]:
    """The whole ids of each text (no special tokens, no truncation), with a progress bar."""
    full: list[list[int]] = []
    with progress_bar(total=len(texts), desc="tokenize", unit=" texts",
                      enabled=len(texts) > ENCODE_CHUNK) as bar:
        for start in range(0, len(texts), ENCODE_CHUNK):
            chunk = texts[start:start + ENCODE_CHUNK]
            full += tokenizer.encode(chunk)
            bar.update(len(chunk))
    return full


def truncated_split(full: Sequence[Sequence[int]], labels: np.ndarray, budget: int,
                    truncation: str, head_tokens: int) -> TokenizedSplit:
    """Whole ids (encode_texts) cut to `budget` text tokens each by the one truncation rule."""
    ids = [np.asarray(truncate(x, budget, truncation, head_tokens), dtype=np.int32) for x in full]
    return TokenizedSplit(ids, np.asarray(labels, dtype=np.int64),
                          np.array([len(x) for x in full], dtype=np.int64))


def tokenize_split(tokenizer: TextTokenizer, texts: Sequence[str], labels: np.ndarray,
                   max_tokens: int, truncation: str, head_tokens: int) -> TokenizedSplit:
    """Token ids of each text, truncated so that with the special tokens they fit `max_tokens`."""
    return truncated_split(encode_texts(tokenizer, texts), labels,
                           text_budget(tokenizer, max_tokens), truncation, head_tokens)


def length_in_gpt2_tokens(tokenizer: TextTokenizer, texts: Sequence[str],
                          full_lengths: np.ndarray) -> tuple[np.ndarray, str]:
    """Review lengths for the per-length table, in GPT-2 tokens when tiktoken can provide them
    (the reference's unit), else in the model's own tokens; returns (lengths, unit)."""
    if tokenizer.name == TIKTOKEN_GPT2:
        return full_lengths, "gpt2_tokens"
    encoding = tiktoken_gpt2()
    if encoding is None:
        return full_lengths, "model_tokens"
    return np.array([len(x) for x in encoding.encode_ordinary_batch(list(texts))]), "gpt2_tokens"
