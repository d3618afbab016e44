"""Logits for a whole split: sorted, large batches, no autograd; with several processes, each
text scored by exactly one of them and the logits gathered back in split order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from textclf.core.errors import ParamsError
from textclf.core.progress import progress_bar
from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.batching import (
    Collator,
    TokenDataset,
    scoring_tokens,
    sorted_batches,
    to_device,
)
from textclf.modeling.onednn import onednn_products


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, split: TokenizedSplit, collator: Collator,
                   batch_size: int, accelerator,
                   forward: Callable[[dict], torch.Tensor] | None = None,
                   desc: str = "score") -> np.ndarray:
    """(N, K) float32 logits in the split's order. `model` is the plain classifier (not a DDP
    wrapper: processes may score different numbers of batches); it is put in eval mode (no
    dropout). The texts are sorted by length into batches of at most `batch_size` texts, and on
    a CPU of at most textclf.modeling.batching.scoring_tokens tokens (the fewest any process
    has). `forward` maps a batch on the device to its logits (default: the model on the batch's
    ids and mask; the train stage passes textclf.train.frozen_cache.cached_forward).
    A progress bar named `desc` shows on a terminal (textclf.core.progress). On a CPU the base
    model's products run through oneDNN, GELU fused (textclf.modeling.onednn), unless `forward`
    is compiled_scorer's.

    Under several processes, process r scores the sorted batches r, r + P, ..., so every text
    is scored once whatever the split's size; their logits are then gathered (each process's
    share padded to the longest) and put back in split order: the same numbers as one process.
    """
    forward = forward or (lambda batch: model(batch["input_ids"], batch["attention_mask"]))
    was_training = model.training
    model.eval()
    rank, processes = accelerator.process_index, accelerator.num_processes
    max_tokens = scoring_tokens(accelerator.device)
    if processes > 1 and max_tokens is not None:  # every process cuts the same batches
        max_tokens = int(accelerator.gather(
            torch.tensor([max_tokens], device=accelerator.device)).min())
    batches = sorted_batches(collator.width(split.lengths), batch_size, max_tokens)
    mine = batches[rank::processes]
    loader = torch.utils.data.DataLoader(TokenDataset(split), batch_sampler=mine,
                                         collate_fn=collator)
    chunks, order = [], []
    bf16 = accelerator.mixed_precision == "bf16"
    # oneDNN's products on a CPU; a compiled forward (eval.compile) fuses its own
    fused = accelerator.device.type == "cpu" and not getattr(forward, "compiled", False)
    with products_in_bf16(model, bf16), onednn_products(model, bf16, enabled=fused):
        for batch in progress_bar(loader, desc=desc, unit="batch", leave=False,
                                  enabled=accelerator.is_main_process):
            batch = to_device(batch, accelerator.device)
            with accelerator.autocast():
                logits = forward(batch)
            chunks.append(logits.float())
            order.append(batch["index"])
    model.train(was_training)
    device = accelerator.device
    logits = torch.cat(chunks) if chunks else torch.empty((0, 0), device=device)
    index = torch.cat(order) if order else torch.empty(0, dtype=torch.long, device=device)
    if processes > 1:
        logits, index = _gather_shares(logits, index, accelerator)
    out = torch.empty((len(split), logits.shape[1]), dtype=torch.float32)
    out[index.cpu()] = logits.cpu()
    return out.numpy()


def compiled_scorer(model: torch.nn.Module) -> Callable[[dict], torch.Tensor]:
    """eval.compile, `textclf predict --compile`: a `forward` for predict_logits running
    torch.compile's version of the trained `model`, compiled on its first batch with inductor's
    freezing (the weights folded in as constants: prepacked for the CPU's matrix products, and
    the elementwise work fused). For a model whose weights no longer change (evaluate, predict),
    never validation. Batch shapes change (texts and width): a dimension seen to change is
    compiled for any size from then on (torch's automatic dynamic shapes), so two or three
    compilations in all.

    A failure to compile (on a CPU: no C++ compiler) is an error naming the knob."""
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model)

    def forward(batch: dict) -> torch.Tensor:
        try:
            with inductor_config.patch(freezing=True):
                return compiled(batch["input_ids"], batch["attention_mask"])
        except Exception as e:  # dynamo and inductor raise their own kinds
            if not type(e).__module__.startswith("torch"):
                raise
            why = (str(e).strip() or type(e).__name__).splitlines()[0]
            raise ParamsError(f"eval.compile (predict --compile): torch.compile failed: {why}; "
                              "score without it (eval.compile false)") from None

    forward.compiled = True  # predict_logits leaves its products to the compiler
    return forward


@contextlib.contextmanager
def products_in_bf16(model: nn.Module, enabled: bool) -> Iterator[None]:
    """While a split is scored under bf16 autocast: the weights and biases of the base model's
    linear layers (nn.Linear, transformers' Conv1D) held in bf16, cast once per split rather
    than before every product of every batch (autocast keeps no cast of a weight that needs no
    gradient, as in scoring); put back as they were afterwards. The same numbers: autocast
    rounds them to the same bf16 values before each product. The classifier's own head and
    attention layer are left alone (the pooling follows the head's dtype), and so are the
    weights being trained (validation inside training): DistributedDataParallel's gradient
    hooks are bound to them and stop seeing their gradients once their data was swapped."""
    from transformers.pytorch_utils import Conv1D

    base = getattr(model, "backbone", None)
    if not enabled or base is None:
        yield
        return
    kept = [(p, p.data) for m in base.modules() if isinstance(m, (nn.Linear, Conv1D))
            for p in m.parameters(recurse=False)
            if p.dtype == torch.float32 and not p.requires_grad]
    try:
        for p, data in kept:
            p.data = data.to(torch.bfloat16)
        yield
    finally:
        for p, data in kept:
            p.data = data


def _gather_shares(logits: torch.Tensor, index: torch.Tensor, accelerator):
    """Every process's (logits, index), padded to the longest share (index -1 marks padding,
    which is dropped), concatenated over processes."""
    sizes = accelerator.gather(torch.tensor([logits.shape[0], logits.shape[1]],
                                            device=accelerator.device)).view(-1, 2)
    longest, classes = int(sizes[:, 0].max()), int(sizes[:, 1].max())
    padded = torch.zeros((longest, classes), dtype=torch.float32, device=accelerator.device)
    padded[: logits.shape[0], : logits.shape[1]] = logits
    padded_index = torch.full((longest,), -1, dtype=torch.long, device=accelerator.device)
    padded_index[: index.shape[0]] = index
    logits, index = accelerator.gather((padded, padded_index))
    kept = index >= 0
    return logits[kept], index[kept]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
