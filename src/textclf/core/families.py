"""What differs between model families, in one table; a model's config and what it allows.

A family is picked by the Hugging Face config's `model_type`. Paths are attribute paths inside the
base model (`AutoModel`, no task head): GPT2Model, BertModel, LlamaModel, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textclf.core.errors import ParamsError, UnsupportedModelError
from textclf.core.model_loading import CONFIG_FILE, check_model_dir, pretrained, shown_path
from textclf.core.params import Params


@dataclass(frozen=True)
class Family:
    name: str
    causal: bool  # a causal LM: zero-shot prompt scoring is possible, attention sees the left only
    # Modules before the first block, in forward order (frozen by partial fine-tuning); the last
    # one's output is what enters the first block.
    embeddings: tuple[str, ...]
    blocks: str  # the ModuleList of transformer blocks
    final_norm: str | None  # the norm after the last block (trained with the last blocks), if any
    lora_targets: tuple[str, ...]  # default LoRA target modules inside a block
    lora_layers_pattern: str  # the name peft matches to find block indices ("h" in "h.11.attn")
    lora_fan_in_fan_out: bool  # weights stored (in, out) as GPT-2's Conv1D, not (out, in)
    pooling: Literal["last", "mean"]  # last real token (causal) or masked mean (encoders)
    base_kwargs: tuple[tuple[str, object], ...] = ()  # extra AutoModel.from_pretrained kwargs
    # Position ids start after this many table rows (RoBERTa: after the padding index, 1, so
    # 2), which the longest input does not get: max_position_embeddings minus it
    position_offset: int = 0
    # A block returns (hidden states, attention weights) (DeBERTa), not the hidden states alone:
    # what a skipped frozen block returns (textclf.train.frozen_cache)
    block_returns_tuple: bool = False


def decoder(name: str, lora_targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Family:
    """A Llama-style decoder: embed_tokens, layers, a final RMSNorm (no bias) named norm, rotary
    positions computed by the model and handed to every layer. LoRA on the query and value
    projections by default, as LoRA's paper and BERT's row here."""
    return Family(name=name, causal=True, embeddings=("embed_tokens",), blocks="layers",
                  final_norm="norm", lora_targets=lora_targets, lora_layers_pattern="layers",
                  lora_fan_in_fan_out=False, pooling="last")


def encoder(name: str, blocks: str, lora_targets: tuple[str, ...], final_norm: str | None = None,
            **extra) -> Family:
    """A bidirectional encoder, classified by the masked mean of its last hidden states."""
    return Family(name=name, causal=False, embeddings=("embeddings",), blocks=blocks,
                  final_norm=final_norm, lora_targets=lora_targets,
                  lora_layers_pattern=blocks.rsplit(".", 1)[-1], lora_fan_in_fan_out=False,
                  pooling="mean", **extra)


# RoBERTa-style encoders: BERT's layout; the [CLS] pooler is not built, positions start at 2
ROBERTA_LIKE = {"base_kwargs": (("add_pooling_layer", False),), "position_offset": 2}


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="gpt2",
            causal=True,
            embeddings=("wte", "wpe", "drop"),
            blocks="h",
            final_norm="ln_f",
            # GPT-2 fuses Q, K and V into one projection, c_attn: LoRA on it adapts all three.
            lora_targets=("c_attn",),
            lora_layers_pattern="h",
            lora_fan_in_fan_out=True,
            pooling="last",
        ),
        Family(
            name="bert",
            causal=False,
            embeddings=("embeddings",),
            blocks="encoder.layer",
            final_norm=None,  # BERT is post-LN: each block ends with its own norm
            lora_targets=("query", "value"),
            lora_layers_pattern="layer",
            lora_fan_in_fan_out=False,
            pooling="mean",
            # The [CLS] pooler is not used (masked mean pooling instead): do not build it.
            base_kwargs=(("add_pooling_layer", False),),
        ),
        Family(
            name="gpt_neox",
            causal=True,
            embeddings=("embed_in", "emb_dropout"),
            blocks="layers",
            final_norm="final_layer_norm",
            # GPT-NeoX fuses Q, K and V into one projection as GPT-2 does.
            lora_targets=("query_key_value",),
            lora_layers_pattern="layers",
            lora_fan_in_fan_out=False,
            pooling="last",
        ),
        # Llama 3 and SmolLM2; Qwen2 and Qwen2.5; Mistral; Gemma 3 (its text-only models, as
        # gemma-3-1b and gemma-3-270m: model_type gemma3_text)
        decoder("llama"),
        decoder("qwen2"),
        decoder("mistral"),
        decoder("gemma3_text"),
        decoder("phi3", lora_targets=("qkv_proj",)),  # Phi-3 fuses Q, K and V as GPT-2 does
        encoder("roberta", "encoder.layer", ("query", "value"), **ROBERTA_LIKE),
        encoder("xlm-roberta", "encoder.layer", ("query", "value"), **ROBERTA_LIKE),
        encoder("distilbert", "transformer.layer", ("q_lin", "v_lin")),
        # DeBERTa-v2 and -v3: relative positions (the encoder's rel_embeddings, frozen unless
        # every block trains); no final norm
        encoder("deberta-v2", "encoder.layer", ("query_proj", "value_proj"),
                block_returns_tuple=True),
        # ModernBERT fuses Q, K and V into Wqkv and ends with a final norm (no bias)
        encoder("modernbert", "layers", ("Wqkv",), final_norm="final_norm"),
    )
}


def family_for(model_type: str, where: str | None = None) -> Family:
    """The family of a config's `model_type`, or a clear error naming the supported ones (and
    `where` the model_type was read)."""
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"{f'{where}: ' if where else ''}model family {model_type!r} is not supported "
            f"(supported: {', '.join(FAMILIES)}); add a row to textclf.core.families.FAMILIES "
            "to support it")
    return FAMILIES[model_type]


# ---------------------------------------------------------------------------------------------
# A model's config: its family, and what it allows (read before any weights are loaded)

def check_base_model(model: str, revision: str | None = None) -> Family | None:
    """The family of a base model (params.model at params.model_revision, or the base model of
    models/textclf.json at the commit it records), read from its config.json before anything of
    it loads, after refusing what textclf does not
    load (model_loading.check_model_dir: code it names, pickled or damaged weights); a model_type
    with no row in FAMILIES is refused too. None for a hub model that cannot be reached here
    (its load says why)."""
    config = check_model_dir(model, revision=revision)
    return family_for(config.get("model_type"), shown_path(model, CONFIG_FILE)) if config else None


def resolve_model(model: str, revision: str | None = None):
    """The model's config (at the hub `revision`) and family, reading only config.json (no
    weights), once check_base_model has read what the directory says."""
    from transformers import AutoConfig

    check_base_model(model, revision)
    config = pretrained(AutoConfig, model, revision=revision)
    return config, family_for(config.model_type)


def n_blocks(config) -> int:
    return int(config.num_hidden_layers)


def position_limit(config) -> tuple[int | None, str]:
    """The longest input the model's position embeddings take, and the config key that says so
    (GPT-2: n_positions; the others: max_position_embeddings, less the family's
    position_offset); None if there is none."""
    key = getattr(config, "attribute_map", {}).get("max_position_embeddings",
                                                    "max_position_embeddings")
    limit = getattr(config, key, None)
    offset = FAMILIES[config.model_type].position_offset if config.model_type in FAMILIES else 0
    return (int(limit) - offset if limit else None), key


def model_problems(params: Params, config, family: Family, extra_tokens: int = 0,
                   method_checks: bool = True) -> list[str]:
    """Params that contradict the model: checked after reading config.json, before the weights.

    `extra_tokens`: tokens the model sees on top of data.max_tokens (special tokens included
    in it): for zero-shot, the prompt template's words (`zero_shot.prompt_tokens`); 0 for
    finetune and lora. `method_checks`: also check the method against the model (zero-shot
    needs a causal LM, trainable blocks within the model's); the prepare stage, whose output
    does not depend on the method, leaves them to train."""
    out = []
    limit, key = position_limit(config)
    length = params.data.max_tokens + extra_tokens
    if limit is not None and length > limit:
        prompt = f" plus {extra_tokens} of the zero-shot prompt" if extra_tokens else ""
        out.append(f"data.max_tokens is {params.data.max_tokens}{prompt}, but {params.model!r} "
                   f"takes at most {limit} tokens ({key} in its config): set data.max_tokens "
                   f"to at most {limit - extra_tokens}")
    if not method_checks:
        return out
    if params.method == "zero_shot" and not family.causal:
        causal = ", ".join(name for name, f in FAMILIES.items() if f.causal)
        out.append(f"method: zero_shot needs a causal language model ({causal}); "
                   f"{params.model!r} is a {family.name} encoder: use finetune or lora")
    if params.method == "zero_shot" and getattr(config, "final_logit_softcapping", None):
        out.append(f"method: zero_shot scores the answer words' logits as a linear head, but "
                   f"{params.model!r} caps its logits (final_logit_softcapping "
                   f"{config.final_logit_softcapping}): use finetune or lora")
    if params.method in ("finetune", "lora"):
        section = params.finetune if params.method == "finetune" else params.lora
        value, blocks = section.trainable_blocks, n_blocks(config)
        if value != "all" and value > blocks:
            out.append(f"{params.method}.trainable_blocks is {value} but {params.model!r} has "
                       f"{blocks} blocks (allowed: 1..{blocks} or 'all')")
        heads, hidden = params.train.attention_heads, int(config.hidden_size)
        if params.train.head == "attention" and hidden % heads:
            out.append(f"train.attention_heads is {heads} but must divide the hidden size of "
                       f"{params.model!r}, {hidden} (train.head: attention)")
    return out


def checked_config_and_family(params: Params, extra_tokens: int = 0, method_checks: bool = True):
    """params.model's config (at params.model_revision) and family, after checking params
    against the config (no weights are loaded); `extra_tokens` and `method_checks` as in
    model_problems."""
    config, family = resolve_model(params.model, params.model_revision)
    problems = model_problems(params, config, family, extra_tokens, method_checks)
    if problems:
        raise ParamsError("invalid params for this model:\n  - " + "\n  - ".join(problems))
    return config, family
