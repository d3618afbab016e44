"""Randomly initialised models of the supported families, from their configs: no download.

The one builder the benchmarks (full-size and smaller models: speed does not depend on the
weights) and the tests (tiny models with their own small tokenizers, tests/tiny.py) share.
GPT-2 and GPT-NeoX come with their LM head (zero-shot scoring needs it), BERT without a task head.
"""

from __future__ import annotations

from pathlib import Path


def random_config(family: str, layers: int | None = None, width: int | None = None,
                  heads: int | None = None, vocab: int | None = None,
                  intermediate: int | None = None, positions: int | None = None,
                  dropout: float | None = None, eos_id: int | None = None,
                  pad_id: int | None = None):
    """A transformers config of `family`; every size left out keeps the library's default, so no
    size at all is the full-size model (GPT-2 124M, bert-base-uncased). GPT models' bos/eos
    default to the last id of the vocabulary (<|endoftext|> in GPT-2's)."""
    from transformers import BertConfig, GPT2Config, GPTNeoXConfig

    def given(**kwargs):
        return {k: v for k, v in kwargs.items() if v is not None}

    if family == "gpt2":
        if vocab is not None and eos_id is None:
            eos_id = vocab - 1
        drop = given(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
        return GPT2Config(**given(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab,
                                  n_positions=positions, bos_token_id=eos_id,
                                  eos_token_id=eos_id), **drop)
    if family == "bert":
        if width is not None and intermediate is None:
            intermediate = 4 * width
        drop = given(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        return BertConfig(**given(num_hidden_layers=layers, hidden_size=width,
                                  num_attention_heads=heads, intermediate_size=intermediate,
                                  vocab_size=vocab, max_position_embeddings=positions,
                                  pad_token_id=pad_id), **drop)
    if family == "gpt_neox":
        if vocab is not None and eos_id is None:
            eos_id = vocab - 1
        drop = given(attention_dropout=dropout, hidden_dropout=dropout)
        return GPTNeoXConfig(**given(num_hidden_layers=layers, hidden_size=width,
                                     num_attention_heads=heads, intermediate_size=intermediate,
                                     vocab_size=vocab, max_position_embeddings=positions,
                                     bos_token_id=eos_id, eos_token_id=eos_id), **drop)
    raise ValueError(f"no random model for family {family!r}")


def save_random_model(family: str, directory: Path, seed: int = 0, **size):
    """A randomly initialised model of `family` (sizes as random_config's), saved with
    save_pretrained into `directory`; returns its config."""
    import torch
    from transformers import BertModel, GPT2LMHeadModel, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = random_config(family, **size)
    model = {"gpt2": GPT2LMHeadModel, "bert": BertModel,
             "gpt_neox": GPTNeoXForCausalLM}[family](config)
    model.save_pretrained(directory)
    return config
