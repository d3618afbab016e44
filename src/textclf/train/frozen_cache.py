"""The frozen-block cache (`train.cache_frozen`): what the frozen embeddings and blocks feed the
first trainable block, computed once per text and reused on every later pass over the split.

Exact: frozen modules always run without dropout (`Classifier.train` keeps them in eval mode),
and the cache keeps the hidden states the model itself feeds its first trainable block, in their
own dtype. Under bf16 autocast that is the fp32 residual stream (the blocks' bf16 outputs are
added to it in fp32), so cached and uncached training agree as closely as in fp32.

Interface: `cache_applies` (is there anything to cache), `FrozenCache.compute` (once per split),
`cached_forward` (batch -> logits: the classifier's own forward, with the frozen blocks skipped
and the first trainable block fed from the cache by `skipping_frozen_blocks`). The classifier
(textclf.modeling.classifier) knows nothing of the cache: this module builds on it, not back.
Memory: texts x tokens x hidden size x 4 bytes on the training device (the residual stream of
GPT-2, BERT and GPT-NeoX is fp32, also under bf16 autocast).
"""

from __future__ import annotations

import contextlib

import torch

from textclf.core.progress import progress_bar
from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.batching import Collator, sorted_batches
from textclf.modeling.classifier import Classifier, base_model, blocks_of


def cache_applies(cache_frozen: bool, model: Classifier) -> bool:
    """`train.cache_frozen` is on and the model has frozen blocks to skip."""
    return cache_frozen and model.first_trainable_block > 0


class FrozenCache:
    """The hidden states entering the first trainable block, one (length, hidden) tensor per
    text of a split, in split order."""

    def __init__(self, states: list[torch.Tensor]):
        self.states = states

    @classmethod
    @torch.inference_mode()
    def compute(cls, model: Classifier, split: TokenizedSplit, collator: Collator,
                batch_size: int, accelerator, desc: str = "cache") -> "FrozenCache":
        """Run the frozen part of `model` (unwrapped, in eval mode) over `split` once, under the
        accelerator's autocast as training runs it."""
        states: list[torch.Tensor | None] = [None] * len(split)
        batches = sorted_batches(split.lengths, batch_size)
        for index in progress_bar(batches, desc=desc, unit="batch", leave=False,
                                  enabled=accelerator.is_main_process):
            batch = collator([(i, split.ids[i], int(split.labels[i])) for i in index])
            ids = batch["input_ids"].to(accelerator.device)
            mask = batch["attention_mask"].to(accelerator.device)
            with accelerator.autocast():
                hidden = frozen_prefix(model, ids, mask)
            for row, i in enumerate(index):
                # as fed to the block: no cast (a bf16 copy of fp32 states is not exact)
                states[i] = hidden[row, : int(mask[row].sum())].clone()
        return cls(states)

    def batch(self, index: torch.Tensor, width: int) -> torch.Tensor:
        """The cached states of a batch, right-padded with zeros to `width` positions."""
        first = self.states[0]
        out = torch.zeros((len(index), width, first.shape[-1]), dtype=first.dtype,
                          device=first.device)
        for row, i in enumerate(index.tolist()):
            out[row, : len(self.states[i])] = self.states[i]
        return out

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

    handle = first.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        model.backbone(input_ids=input_ids, attention_mask=attention_mask)
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
        return args[0] if args else kwargs["hidden_states"]

    def feed(module, args, kwargs):
        if args:
            return (prefix_hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": prefix_hidden}

    handle = blocks[model.first_trainable_block].register_forward_pre_hook(feed, with_kwargs=True)
    for block in frozen:
        block.forward = passthrough
    try:
        yield
    finally:
        handle.remove()
        for block in frozen:
            del block.forward  # back to the class's forward
