"""A decoder's last block, computed at the pooled token only.

A causal model is pooled at each text's last real token, so of its last block only that row
reaches the head: every other position needs its keys and values, and nothing else. With the
last-token block on, the last block computes its layer norm and fused query/key/value projection
over every token (the keys and values), then attention with the one query, the output
projection, the second layer norm and the MLP over one row per text. On GPT-2 that is 3 d^2 of
the block's 12 d^2 multiply-adds per token, forward and backward (GPT-NeoX's blocks are built
alike). That saves 1/16 of a 12-block model's evaluation, and 3/8 of a step that trains the last
2 blocks on the frozen-block cache (measured: docs/performance.md, "AMD EPYC, quiet, with the
last-token block").

The same function: the query of the last real token attends to every real token (padding is
masked out as a key; every real token comes before the last one, so the causal mask adds
nothing), through the block's own modules, so LoRA adapters, dropout while training, bf16 weights
and quantized layers all act as in the whole block. Only the float rounding of the smaller
products differs (tests/test_last_token.py compares logits and gradients with the whole block).

The block's output keeps its shape (texts, tokens, hidden): the pooled rows hold the block's
output and the other rows zeros. Only the classifier asks for it, by passing `pooled_kwargs` to
the base model's call (transformers hands a model's extra keyword arguments to every block, and
the attention functions ignore ones they do not know); any other call runs the whole block. Nothing
is stored on the model while a forward runs, so threads may share it, and torch.compile traces it.

Families (SUPPORTED): GPT-2 (transformers' GPT2Block, without cross-attention or the eager
upcast-and-reorder attention) and GPT-NeoX (Pythia; GPTNeoXLayer, rotary positions, parallel or
sequential residual). The other decoders (Llama-like, with grouped keys and sliding windows) run
their whole last block.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Support(NamedTuple):
    """What the last-token block needs of a family (the table SUPPORTED, at the end)."""
    # the block's modules that still run over every token: its first layer norm and the
    # query/key/value projection
    per_token: tuple[str, str]
    # (block, hidden states, rows, last positions, attention mask, the block's other keyword
    # arguments as a dict) -> the block's output at the rows `last` (zeros elsewhere)
    block_at: Callable[..., torch.Tensor]


# The keyword argument of the base model's call that carries (rows, last positions, attention
# mask) to the last block
POOLED = "textclf_pooled"


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's last real token: the rightmost position the mask keeps (so with padding
    on either side)."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=1)


def last_token_block(backbone: nn.Module, family, attention_head: bool) -> nn.Module | None:
    """The last block of the base model `backbone`, its forward taught to compute the pooled
    rows only (called with `pooled_kwargs`), when the model allows it: a family of SUPPORTED
    pooled at the last token, with a linear head (an attention head reads every position). None
    otherwise."""
    if family.name not in SUPPORTED or family.pooling != "last" or attention_head:
        return None
    config = backbone.config
    if getattr(config, "add_cross_attention", False):
        return None
    if config._attn_implementation == "eager" and getattr(config, "reorder_and_upcast_attn",
                                                           False):
        return None
    block = backbone.get_submodule(family.blocks)[-1]
    # holds the block (a deep copy of the model gives the copy's block its own)
    block.forward = functools.partial(_forward, block, SUPPORTED[family.name].block_at)
    return block


def _forward(block: nn.Module, block_at: Callable[..., torch.Tensor],
             hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The pooled rows (called with pooled_kwargs), else the class's whole forward."""
    pooled = kwargs.pop(POOLED, None)
    if pooled is None:
        return type(block).forward(block, hidden_states, *args, **kwargs)
    return block_at(block, hidden_states, *pooled, kwargs)


def pooled_kwargs(block: nn.Module | None, attention_mask: torch.Tensor,
                  last: torch.Tensor) -> dict:
    """The keyword arguments of the base model's call that make `block` (of last_token_block;
    None: nothing to add) compute only the rows `last` (each text's last real token)."""
    if block is None:
        return {}
    rows = torch.arange(attention_mask.size(0), device=attention_mask.device)
    return {POOLED: (rows, last, attention_mask)}


def _gpt2_block_at(block: nn.Module, hidden: torch.Tensor, rows: torch.Tensor,
                   last: torch.Tensor, attention_mask: torch.Tensor,
                   block_kwargs: dict) -> torch.Tensor:
    """GPT2Block's forward (transformers' modeling_gpt2) at the rows `last` only."""
    attn = block.attn
    texts, tokens, width = hidden.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    residual = hidden[rows, last]  # (texts, width)
    query, key, value = attn.c_attn(block.ln_1(hidden)).split(width, dim=2)
    query = query[rows, last].view(texts, heads, 1, head_dim)
    key = key.view(texts, tokens, heads, head_dim).transpose(1, 2)
    value = value.view(texts, tokens, heads, head_dim).transpose(1, 2)
    out = _attend(query, key, value, attention_mask, attn.scaling,
                  attn.attn_dropout.p if attn.training else 0.0)
    out = attn.resid_dropout(attn.c_proj(out))
    out = out + residual
    out = out + block.mlp(block.ln_2(out))
    return _scattered(out, hidden.shape, rows, last)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
            attention_mask: torch.Tensor, scale: float, dropout: float) -> torch.Tensor:
    """One query per text (texts, heads, 1, head_dim) over its real tokens' keys and values
    (texts, heads, tokens, head_dim): (texts, heads x head_dim)."""
    keep = attention_mask.bool()[:, None, None, :]  # padding is no key
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=keep, scale=scale,
                                         dropout_p=dropout)
    return out.reshape(query.size(0), -1)


def _gpt_neox_block_at(block: nn.Module, hidden: torch.Tensor, rows: torch.Tensor,
                       last: torch.Tensor, attention_mask: torch.Tensor,
                       block_kwargs: dict) -> torch.Tensor:
    """GPTNeoXLayer's forward (transformers' modeling_gpt_neox: rotary positions, parallel or
    sequential residual) at the rows `last` only; the rotary tables are the block's
    `position_embeddings` keyword argument."""
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    attn = block.attention
    texts, tokens, width = hidden.shape
    qkv = attn.query_key_value(block.input_layernorm(hidden))
    qkv = qkv.view(texts, tokens, -1, 3 * attn.head_size).transpose(1, 2)
    query, key, value = qkv.chunk(3, dim=-1)  # (texts, heads, tokens, head_size)
    cos, sin = block_kwargs["position_embeddings"]
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    query = query[rows, :, last].unsqueeze(2)
    out = _attend(query, key, value, attention_mask, attn.scaling,
                  attn.attention_dropout if attn.training else 0.0)
    out = block.post_attention_dropout(attn.dense(out))
    residual = hidden[rows, last]
    if block.use_parallel_residual:
        mlp = block.mlp(block.post_attention_layernorm(residual))
        out = block.post_mlp_dropout(mlp) + out + residual
    else:
        out = out + residual
        out = block.post_mlp_dropout(block.mlp(block.post_attention_layernorm(out))) + out
    return _scattered(out, hidden.shape, rows, last)


def _scattered(out: torch.Tensor, shape: torch.Size, rows: torch.Tensor,
               last: torch.Tensor) -> torch.Tensor:
    """The block's output of shape (texts, tokens, hidden): `out` at the rows `last`, zeros
    elsewhere."""
    full = torch.zeros(shape, dtype=out.dtype, device=out.device)
    return full.index_put((rows, last), out)


# The families whose last block computes the pooled rows only
SUPPORTED = {
    "gpt2": Support(("ln_1", "attn.c_attn"), _gpt2_block_at),
    "gpt_neox": Support(("input_layernorm", "attention.query_key_value"), _gpt_neox_block_at),
}
