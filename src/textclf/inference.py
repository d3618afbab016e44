"""Logits for a whole split: sorted, large batches, no autograd, gathered across processes."""

from __future__ import annotations

import numpy as np
import torch

from .batching import Collator, TokenDataset, sorted_batches
from .frozen_cache import FrozenCache, model_inputs
from .progress import progress_bar
from .tokenization import TokenizedSplit


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, split: TokenizedSplit, collator: Collator,
                   batch_size: int, accelerator, cache: FrozenCache | None = None,
                   desc: str = "score") -> np.ndarray:
    """(N, K) float32 logits in the split's order. The model is put in eval mode (no dropout);
    a progress bar named `desc` shows on a terminal (textclf.progress)."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(
        TokenDataset(split), batch_sampler=sorted_batches(split.lengths, batch_size),
        collate_fn=collator, generator=torch.Generator())  # leaves the global RNG alone
    loader = accelerator.prepare_data_loader(loader)
    chunks, order = [], []
    for batch in progress_bar(loader, desc=desc, unit="batch", leave=False,
                              enabled=accelerator.is_main_process):
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
