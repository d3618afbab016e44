"""Model FLOPs per real token, as TFLOP/s counts them, and parameter counts.

TFLOP/s: the model FLOPs each side executes per second in the timed window, counted on real
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
`startup_seconds`) is not in TFLOP/s: its FLOPs are reported apart, as `cache_build_flops`.
A whole training run (train_run) counts everything in its clock (`whole_run_flops`): every
epoch's training and validation, and our cache's one-time build.

Our side's last-token block (GPT-2, GPT-NeoX: textclf.modeling.last_token) runs only its layer
norm and query/key/value projection per token; the rest of the block runs once per text. Its other
parameters (N_once) leave every per-token N on our side (and the once-per-text FLOPs are left out,
as attention scores are: 1/tokens of them). The plain side runs the whole block per token.
"""

from __future__ import annotations

import torch

from textclf.core.families import Family
from textclf.core.tokenization import InputFormat, TokenizedSplit
from textclf.modeling.classifier import base_model, blocks_of
from textclf.modeling.last_token import SUPPORTED


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
    once, once_trained = once_per_text(clf)
    once_trained = once_trained if training else 0
    out["n_once"], out["n_once_trained"] = once, once_trained
    out["flops_per_token"] = model_flops(out["n_forward"] - once,
                                         out["n_through"] - (once if training else 0),
                                         out["n_trained"] - once_trained)
    return out


def once_per_text(clf) -> tuple[int, int]:
    """N_once: the parameters of the last-token block computed once per text (all but its layer
    norm and query/key/value projection), and how many of them are trained."""
    block = getattr(clf, "last_token_block", None)
    if block is None:
        return 0, 0
    per_token = tuple(name + "." for name in SUPPORTED[clf.family.name].per_token)
    once = [p for n, p in block.named_parameters()
            if "lora_" not in n and not n.startswith(per_token)]
    return sum(p.numel() for p in once), sum(p.numel() for p in once if p.requires_grad)


def real_tokens(split: TokenizedSplit, fmt: InputFormat) -> int:
    """The model's real (non-padding) input tokens over `split`: text and special tokens."""
    return int(split.lengths.sum()) + fmt.extra * len(split)


def cache_build_flops(flops: dict[str, int], splits: list[TokenizedSplit],
                      fmt: InputFormat) -> int:
    """FLOPs of building the frozen-block cache once: a forward pass of the blocks the cached
    training skips, over every real token of `splits`."""
    tokens = sum(real_tokens(split, fmt) for split in splits)
    return 2 * (flops["n_model"] - flops["n_forward"]) * tokens


def whole_run_flops(flops: dict[str, int], train_tokens: int, val_tokens: int, epochs: int,
                    cached: bool, ours: bool) -> int:
    """FLOPs of a whole training run (train_run): each epoch trains on `train_tokens` and
    validates on `val_tokens` (forward only); `cached`: training and validation run on the
    frozen-block cache (forward through the trained blocks only), built once over both splits.
    Uncached (the plain side), every block runs forward every time. `ours`: the last-token
    block's N_once runs once per text (the plain side runs the whole block)."""
    n_forward = flops["n_through"] if cached else flops["n_model"]
    once, once_trained = (flops["n_once"], flops["n_once_trained"]) if ours else (0, 0)
    per_epoch = (model_flops(n_forward - once, flops["n_through"] - once,
                             flops["n_trained"] - once_trained) * train_tokens
                 + 2 * (n_forward - once) * val_tokens)
    build = 2 * (flops["n_model"] - n_forward) * (train_tokens + val_tokens)
    return epochs * per_epoch + build


def trainable_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
