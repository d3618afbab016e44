"""The frozen-block cache (`train.cache_frozen`): what the frozen embeddings and blocks feed the
first trainable block, computed once per text and reused on every later pass over the split.

Exact: frozen modules always run without dropout (`Classifier.train` keeps them in eval mode),
and the cache keeps the hidden states the frozen part hands the first trainable block, in their
own dtype. Under bf16 autocast that is the fp32 residual stream (the blocks' bf16 outputs are
added to it in fp32), so cached and uncached training agree as closely as in fp32. With
`model_dtype` bf16 it is the bf16 stream of the bf16 frozen blocks, kept before the trained
block's cast to fp32 (textclf.modeling.classifier.keep_frozen_in), which is exact.

Interface: `choose_placement` (where the cache goes, and why: `train.cache_frozen` auto, true or
false), `FrozenCache.compute` (once per split), `cached_forward` (batch -> logits: the
classifier's own forward, with the frozen blocks skipped and the first trainable block fed from
the cache by `skipping_frozen_blocks`). The classifier (textclf.modeling.classifier) knows
nothing of the cache: this module builds on it, not back.

Memory: texts x tokens x hidden size x the bytes of the embeddings' dtype (4; 2 with model_dtype
bf16: the residual stream of GPT-2, BERT and GPT-NeoX keeps the dtype of the embeddings, also
under bf16 autocast), estimated before anything is computed. Placement:
- device: the states live on the training device; a batch is gathered there.
- host: the states live in host memory (on a GPU: each batch is gathered into pinned memory and
  copied to the GPU without blocking); the same values, so the same results, as on the device.
- off: every step runs the frozen blocks.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from textclf.core.progress import progress_bar
from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.batching import Collator, sorted_batches
from textclf.modeling.classifier import Classifier, base_model, blocks_of
from textclf.modeling.device import gpu_free_bytes

# train.cache_frozen: auto places the cache where its estimated size is at most this share of
# the free memory (measured after the model and optimizer are placed): the rest is left to
# training's activations and gradients, to evaluation, and to other programs.
CACHE_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class CachePlacement:
    """Where the frozen-block cache goes (device, host or off), why, and its estimated size."""
    where: Literal["device", "host", "off"]
    reason: str
    estimated_bytes: int = 0


def estimated_cache_bytes(model: Classifier, splits: list[TokenizedSplit],
                          extra_tokens: int) -> int:
    """texts x tokens x hidden x bytes, exactly: every text's own length (plus the `extra_tokens`
    the input format adds around it), the width of the residual stream, its dtype's size."""
    tokens = sum(int(split.lengths.sum()) + extra_tokens * len(split) for split in splits)
    backbone = base_model(model)
    # the embeddings' dtype: fp32 (also under autocast), bf16 with model_dtype bf16
    element = next(backbone.parameters()).element_size()
    return tokens * backbone.config.hidden_size * element


def host_available_bytes(meminfo: Path = Path("/proc/meminfo"),
                         cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory the host can still give: Linux's MemAvailable, lowered to what is left under a
    cgroup v2 limit (containers); None if unknown (no /proc: auto then leaves the cache off)."""
    available = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if available is not None and limit != "max":
            used = int((cgroup / "memory.current").read_text())
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return available


def _gb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1e9:.2f} GB"


def placement_for(cache_frozen: bool | str, estimated: int, device: torch.device,
                  device_free: int | None, host_free: int | None) -> CachePlacement:
    """The rule (no measuring): false = off; true = on the device; auto = on the device if the
    estimate fits in CACHE_MEMORY_SHARE of its free memory, else in host memory if it fits there
    (a GPU's host; on a CPU the device is the host), else off."""
    if cache_frozen is False:
        return CachePlacement("off", "train.cache_frozen is false")
    if cache_frozen is True:
        return CachePlacement("device", "train.cache_frozen is true", estimated)
    share = f"{CACHE_MEMORY_SHARE:.0%}"

    def fits(free: int | None) -> bool:
        return free is not None and estimated <= CACHE_MEMORY_SHARE * free

    what = f"estimated {_gb(estimated)}"
    if fits(device_free):
        return CachePlacement("device", f"auto: {what} fits in {share} of the "
                              f"{_gb(device_free)} free on {device.type}", estimated)
    if device.type != "cpu" and fits(host_free):
        return CachePlacement("host", f"auto: {what} is over {share} of the {_gb(device_free)} "
                              f"free on {device.type}, fits in {share} of the host's "
                              f"{_gb(host_free)}", estimated)
    where = (f"{_gb(device_free)} free on {device.type}" if device.type == "cpu" else
             f"{_gb(device_free)} free on {device.type} and the host's {_gb(host_free)}")
    return CachePlacement("off", f"auto: {what} is over {share} of the {where}", estimated)


def choose_placement(cache_frozen: bool | str, model: Classifier, splits: list[TokenizedSplit],
                     extra_tokens: int, device: torch.device) -> CachePlacement:
    """`train.cache_frozen` on this model, data and device: off when no block is frozen (LoRA
    and fine-tuning of every block, zero-shot), else placement_for with the memory measured now."""
    if model.first_trainable_block == 0:
        return CachePlacement("off", "no frozen blocks to cache")
    if cache_frozen is False:
        return placement_for(False, 0, device, None, None)
    estimated = estimated_cache_bytes(model, splits, extra_tokens)
    # the processes accelerate launch / torchrun start on this machine share its memory, and
    # each caches the whole split
    host_free = host_available_bytes()
    if host_free is not None:
        host_free //= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    device_free = (gpu_free_bytes(device) if device.type == "cuda" else
                   host_free if device.type == "cpu" else None)
    return placement_for(cache_frozen, estimated, device, device_free, host_free)


class FrozenCache:
    """The hidden states entering the first trainable block, one (length, hidden) tensor per
    text of a split, in split order, kept where the placement says; `batch` returns them on
    `device` (the training device)."""

    def __init__(self, states: list[torch.Tensor], device: torch.device | None = None):
        self.states = states
        self.device = device if device is not None else (
            states[0].device if states else torch.device("cpu"))

    @classmethod
    @torch.inference_mode()
    def compute(cls, model: Classifier, split: TokenizedSplit, collator: Collator,
                batch_size: int, accelerator, desc: str = "cache",
                where: Literal["device", "host"] = "device") -> FrozenCache:
        """Run the frozen part of `model` (unwrapped, in eval mode) over `split` once, under the
        accelerator's autocast as training runs it; keep the states on the device or the host."""
        store = accelerator.device if where == "device" else torch.device("cpu")
        states: list[torch.Tensor | None] = [None] * len(split)
        batches = sorted_batches(collator.width(split.lengths), batch_size)
        for index in progress_bar(batches, desc=desc, unit="batch", leave=False,
                                  enabled=accelerator.is_main_process):
            batch = collator([(i, split.ids[i], int(split.labels[i])) for i in index])
            ids = batch["input_ids"].to(accelerator.device)
            mask = batch["attention_mask"].to(accelerator.device)
            with accelerator.autocast():
                hidden = frozen_prefix(model, ids, mask)
            hidden = hidden.to(store)  # one copy per batch, not per text
            for row, i in enumerate(index):
                # as fed to the block: no cast (a bf16 copy of fp32 states is not exact)
                states[i] = hidden[row, : int(mask[row].sum())].clone()
        return cls(states, accelerator.device)

    def batch(self, index: torch.Tensor, width: int) -> torch.Tensor:
        """The cached states of a batch on the training device, right-padded with zeros to
        `width` positions (gathered in pinned host memory when the states are on the host of a
        GPU, then copied without blocking)."""
        first = self.states[0]
        pinned = first.device.type == "cpu" and self.device.type == "cuda"
        out = torch.zeros((len(index), width, first.shape[-1]), dtype=first.dtype,
                          device=first.device, pin_memory=pinned)
        for row, i in enumerate(index.tolist()):
            out[row, : len(self.states[i])] = self.states[i]
        return out.to(self.device, non_blocking=pinned)

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states)


def cached_forward(model: torch.nn.Module, classifier: Classifier, cache: FrozenCache | None):
    """A function from a collated batch (on the device) to its logits: `model` (the classifier
    or accelerate's wrapper of it) on the batch's ids and mask; with a cache, the frozen blocks
    of `classifier` (the unwrapped model) are skipped and its first trainable block receives the
    batch's cached states."""
    def forward(batch: dict) -> torch.Tensor:
        if cache is None:
            return model(batch["input_ids"], batch["attention_mask"])
        prefix = cache.batch(batch["index"], batch["input_ids"].shape[1])
        with skipping_frozen_blocks(classifier, prefix):
            return model(batch["input_ids"], batch["attention_mask"])

    return forward


class _PrefixReady(Exception):
    """Stops a forward pass once the first trainable block's input is captured."""


@torch.no_grad()
def frozen_prefix(model: Classifier, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden states entering the first trainable block. The model's own forward runs (its
    masks, positions, rotary embeddings) and stops at that block."""
    first = blocks_of(base_model(model), model.family)[model.first_trainable_block]
    captured = []

    def capture(module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _PrefixReady

    # prepended: before the block's own hooks (keep_frozen_in's cast), what the frozen part made
    handle = first.register_forward_pre_hook(capture, with_kwargs=True, prepend=True)
    try:
        model.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _PrefixReady:
        pass
    finally:
        handle.remove()
    return captured[0]


@contextlib.contextmanager
def skipping_frozen_blocks(model: Classifier, prefix_hidden: torch.Tensor):
    """During one forward: the frozen blocks pass their input through, and the first trainable
    block receives `prefix_hidden` instead, exactly as cached. The embeddings still run (table
    lookups), so whatever the model derives from their output (rotary tables, their dtype) is
    what the uncached forward derives."""
    blocks = blocks_of(base_model(model), model.family)
    frozen = list(blocks[: model.first_trainable_block])

    def passthrough(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, None) if model.family.block_returns_tuple else hidden

    def feed(module, args, kwargs):
        if args:
            return (prefix_hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": prefix_hidden}

    # prepended: the block's own hooks (keep_frozen_in's cast) then see the cached states
    handle = blocks[model.first_trainable_block].register_forward_pre_hook(feed, with_kwargs=True,
                                                                           prepend=True)
    for block in frozen:
        block.forward = passthrough
    try:
        yield
    finally:
        handle.remove()
        for block in frozen:
            del block.forward  # back to the class's forward
