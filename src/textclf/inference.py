"""Logits for a whole split: sorted, large batches, no autograd, gathered across processes."""

from __future__ import annotations

import numpy as np
import torch

from .batching import Collator, TokenDataset, sorted_batches
from .tokenization import TokenizedSplit


class PrefixCache:
    """The frozen blocks' output for every text of a split, computed once (`cache_frozen`).

    Exact: frozen blocks always run without dropout. Memory: texts x tokens x hidden size x
    4 bytes (2 in bf16), on the training device.
    """

    def __init__(self, states: list[torch.Tensor]):
        self.states = states  # one (length, hidden) tensor per text, in split order

    @classmethod
    @torch.inference_mode()
    def compute(cls, model, split: TokenizedSplit, collator: Collator, batch_size: int,
                accelerator) -> "PrefixCache":
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        states: list[torch.Tensor | None] = [None] * len(split)
        for index in sorted_batches(split.lengths, batch_size):
            batch = collator([(i, split.ids[i], int(split.labels[i])) for i in index])
            ids = batch["input_ids"].to(accelerator.device)
            mask = batch["attention_mask"].to(accelerator.device)
            with accelerator.autocast():
                hidden = model.frozen_prefix(ids, mask)
            for row, i in enumerate(index):
                states[i] = hidden[row, : int(mask[row].sum())].to(dtype).clone()
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


def model_inputs(batch: dict, cache: PrefixCache | None) -> dict:
    """The model's keyword arguments for a batch, with the cached prefix if there is one."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if cache is not None:
        inputs["prefix_hidden"] = cache.batch(batch["index"], batch["input_ids"].shape[1])
    return inputs


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, split: TokenizedSplit, collator: Collator,
                   batch_size: int, accelerator, cache: PrefixCache | None = None) -> np.ndarray:
    """(N, K) float32 logits in the split's order. The model is put in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(
        TokenDataset(split), batch_sampler=sorted_batches(split.lengths, batch_size),
        collate_fn=collator, generator=torch.Generator())  # leaves the global RNG alone
    loader = accelerator.prepare_data_loader(loader)
    chunks, order = [], []
    for batch in loader:
        with accelerator.autocast():
            logits = model(**model_inputs(batch, cache))
        logits, index = accelerator.gather_for_metrics((logits.float(), batch["index"]))
        chunks.append(logits.cpu())
        order.append(index.cpu())
    model.train(was_training)
    out = torch.empty((len(split), chunks[0].shape[1]), dtype=torch.float32)
    out[torch.cat(order)] = torch.cat(chunks)
    return out.numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
