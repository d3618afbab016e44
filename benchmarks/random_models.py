"""Randomly initialised models of the supported families, from their configs: no download.

The one builder the benchmarks (full-size and smaller models: speed does not depend on the
weights) and the tests (tiny models with their own small tokenizers, tests/tiny.py) share.
GPT-2, GPT-NeoX and the other decoders come with their LM head (zero-shot scoring needs it), the
encoders without a task head.
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
    if family in OTHER_FAMILIES:
        return _other_config(family, given, layers, width, heads, vocab, intermediate, positions,
                             dropout, eos_id, pad_id)
    raise ValueError(f"no random model for family {family!r}")


# The families with no full-size default here (their sizes must be given): transformers' config
# class and the class saved (decoders with their LM head, for zero-shot scoring).
OTHER_FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "roberta": ("RobertaConfig", "RobertaModel"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel"),
    "distilbert": ("DistilBertConfig", "DistilBertModel"),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model"),
    "modernbert": ("ModernBertConfig", "ModernBertModel"),
}


def _other_config(family, given, layers, width, heads, vocab, intermediate, positions, dropout,
                  eos_id, pad_id):
    import transformers

    config_class = getattr(transformers, OTHER_FAMILIES[family][0])
    ids = given(eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=pad_id)
    if family == "distilbert":
        return config_class(**given(n_layers=layers, dim=width, n_heads=heads,
                                    hidden_dim=intermediate, vocab_size=vocab,
                                    max_position_embeddings=positions, dropout=dropout,
                                    attention_dropout=dropout), **ids)
    sizes = given(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                  intermediate_size=intermediate, vocab_size=vocab,
                  max_position_embeddings=positions)
    if family in ("roberta", "xlm-roberta", "deberta-v2"):
        sizes.update(given(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
        if family != "deberta-v2" and positions is not None:
            sizes["max_position_embeddings"] = positions + 2  # ids start after the pad index
    elif family == "modernbert":
        sizes.update(given(embedding_dropout=dropout, attention_dropout=dropout,
                           mlp_dropout=dropout))
        ids.update(given(cls_token_id=pad_id, sep_token_id=eos_id))
    else:  # decoders: grouped-query attention (half as many key/value heads), as Llama 3's
        sizes.update(given(attention_dropout=dropout))
        if heads is not None and width is not None:
            sizes.update(num_key_value_heads=max(1, heads // 2) if family != "phi3" else heads,
                         head_dim=width // heads)
    return config_class(**sizes, **ids)


def save_random_model(family: str, directory: Path, seed: int = 0, **size):
    """A randomly initialised model of `family` (sizes as random_config's), saved with
    save_pretrained into `directory`; returns its config."""
    import torch
    from transformers import BertModel, GPT2LMHeadModel, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = random_config(family, **size)
    import transformers

    classes = {"gpt2": GPT2LMHeadModel, "bert": BertModel, "gpt_neox": GPTNeoXForCausalLM}
    model = (classes[family] if family in classes else
             getattr(transformers, OTHER_FAMILIES[family][1]))(config)
    model.save_pretrained(directory)
    return config
