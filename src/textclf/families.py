"""What differs between model families, in one table.

A family is picked by the Hugging Face config's `model_type`. Paths are attribute paths inside the
base model (`AutoModel`, no task head): GPT2Model, BertModel, GPTNeoXModel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import UnsupportedModelError


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
    )
}


def family_for(model_type: str) -> Family:
    """The family of a config's `model_type`, or a clear error naming the supported ones."""
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model family {model_type!r} is not supported (supported: {', '.join(FAMILIES)}); "
            "add a row to textclf.families.FAMILIES to support it")
    return FAMILIES[model_type]
