"""A decoder's last block, computed at the pooled token only.

A causal model is pooled at each text's last real token, so of its last block only that row
reaches the head: every other position needs its keys and values, and nothing else. With the
last-token block on, the last block computes its layer norm and fused query/key/value projection
over every token (the keys and values), then attention with the one query, the output
projection, the second layer norm and the MLP over one row per text. On GPT-2 that is 3 d^2 of
the block's 12 d^2 multiply-adds per token, forward and backward: a twelfth of a 12-block
model's evaluation, and most of the work of a step that trains the last 2 blocks on the frozen-
block cache (what it gains: docs/performance.md, "Last-token block").

The same function: the query of the last real token attends to every real token (padding is
masked out as a key; every real token comes before the last one, so the causal mask adds
nothing), through the block's own modules, so LoRA adapters, dropout while training, bf16 weights
and quantized layers all act as in the whole block. Only the float rounding of the smaller
products differs (tests/test_last_token.py compares logits and gradients with the whole block).

The block's output keeps its shape (texts, tokens, hidden): the pooled rows hold the block's
output and the other rows zeros. Only the classifier reads it, at the pooled rows, and only
while its forward runs (`pooled_rows`); any other call runs the whole block.

Families: GPT-2 (`transformers` GPT2Block, without cross-attention or the eager upcast-and-
reorder attention). The other decoders run their whole last block.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# The attribute of the last block holding (rows, last positions, attention mask) while the
# classifier's forward runs; absent otherwise
POOLED = "_textclf_pooled"


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's last real token: the rightmost position the mask keeps (so with padding
    on either side)."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=1)


def last_token_block(backbone: nn.Module, family, attention_head: bool) -> nn.Module | None:
    """The last block of the base model `backbone`, its forward taught to compute the pooled
    rows only (`pooled_rows`), when the model allows it: GPT-2 pooled at the last token, with a
    linear head (an attention head reads every position). None otherwise."""
    if family.name != "gpt2" or family.pooling != "last" or attention_head:
        return None
    blocks = backbone.get_submodule(family.blocks)
    config = backbone.config
    if getattr(config, "add_cross_attention", False):
        return None
    if config._attn_implementation == "eager" and getattr(config, "reorder_and_upcast_attn",
                                                           False):
        return None
    block = blocks[-1]
    # bound to the block (a deep copy of the model rebinds it to the copy's block)
    block.forward = types.MethodType(_forward, block)
    return block


def _forward(block: nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The pooled rows (inside pooled_rows), else the class's whole forward."""
    pooled = block.__dict__.get(POOLED)
    if pooled is None:
        return type(block).forward(block, hidden_states, *args, **kwargs)
    return _gpt2_block_at(block, hidden_states, *pooled)


@contextlib.contextmanager
def pooled_rows(block: nn.Module | None, attention_mask: torch.Tensor,
                last: torch.Tensor) -> Iterator[None]:
    """While the classifier's forward runs: `block` (of last_token_block, or None: nothing to
    do) computes only the rows `last` (each text's last real token) of its output."""
    if block is None:
        yield
        return
    rows = torch.arange(attention_mask.size(0), device=attention_mask.device)
    setattr(block, POOLED, (rows, last, attention_mask))
    try:
        yield
    finally:
        delattr(block, POOLED)


def _gpt2_block_at(block: nn.Module, hidden: torch.Tensor, rows: torch.Tensor,
                   last: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """GPT2Block's forward (transformers' modeling_gpt2) at the rows `last` only."""
    attn = block.attn
    texts, tokens, width = hidden.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    residual = hidden[rows, last]  # (texts, width)
    query, key, value = attn.c_attn(block.ln_1(hidden)).split(width, dim=2)
    query = query[rows, last].view(texts, heads, 1, head_dim)
    key = key.view(texts, tokens, heads, head_dim).transpose(1, 2)
    value = value.view(texts, tokens, heads, head_dim).transpose(1, 2)
    keep = attention_mask.bool()[:, None, None, :]  # padding is no key
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=keep, scale=attn.scaling,
        dropout_p=attn.attn_dropout.p if attn.training else 0.0)
    out = attn.resid_dropout(attn.c_proj(out.reshape(texts, width)))
    out = out + residual
    out = out + block.mlp(block.ln_2(out))
    full = torch.zeros((texts, tokens, width), dtype=out.dtype, device=out.device)
    return full.index_put((rows, last), out)
