"""textclf's exported classifier, one class for every family and head: the family's base model
(AutoModel of the base config, no task head; BERT and RoBERTa without their [CLS] pooler),
optionally one self-attention layer over its last hidden states (train.head: attention, padding
masked out as a key), the pooling of training (the last real token, or the masked mean), dropout
and a linear head with bias.

Stock transformers has no class computing this for most families (a masked-mean pooling; a head
with bias where the final norm has none to hold it), so the export's config.json has a
model_type of its own (MODEL_TYPE), holding the base model's config as `base_config`. Stock
transformers refuses that model_type rather than load another model and score other numbers; it
loads two ways:

- In a process that imports textclf: `import textclf.export` registers these classes with
  AutoConfig and AutoModelForSequenceClassification; no code is read from the directory.
- Anywhere else: this file is copied into the export and config.json's `auto_map` names its
  classes, which load with trust_remote_code=True:

    pipeline("text-classification", model="export", trust_remote_code=True, truncation=True)

It imports only torch and transformers (not textclf), as the Hub requires of a modelling file.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "textclf-classifier"  # config.json's model_type: unknown to stock transformers
MODULE = "hf_model"  # this file's name inside an export
# config.json's auto_map: the classes of this file, copied into the export
AUTO_MAP = {"AutoConfig": f"{MODULE}.TextclfClassifierConfig",
            "AutoModelForSequenceClassification": f"{MODULE}.TextclfForSequenceClassification"}
POOLINGS = ("last", "mean")


class TextclfClassifierConfig(PretrainedConfig):
    """The base model's config (base_config, any model_type AutoConfig knows) and the head:
    pooling "last" (the last real token) or "mean" (masked mean over the real tokens);
    attention_heads: the heads of the self-attention layer before the pooling (None: no such
    layer, a linear head on the pooled vector); attention_dropout_rate and head_dropout: their
    dropout while training; base_kwargs: AutoModel's extra arguments (BERT's and RoBERTa's
    add_pooling_layer=False: no [CLS] pooler)."""

    model_type = MODEL_TYPE
    sub_configs = {"base_config": AutoConfig}

    def __init__(self, base_config=None, pooling: str = "mean", attention_heads: int | None = None,
                 attention_dropout_rate: float = 0.0, head_dropout: float = 0.0,
                 base_kwargs: dict | None = None, **kwargs):
        if isinstance(base_config, dict):
            values = dict(base_config)
            base_config = AutoConfig.for_model(values.pop("model_type"), **values)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.base_config = base_config
        self.pooling = pooling
        self.attention_heads = attention_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.head_dropout = head_dropout
        self.base_kwargs = dict(base_kwargs or {})
        super().__init__(**kwargs)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per sequence: the last real token (the rightmost position the mask keeps) or
    the masked mean. (textclf.modeling.classifier.pool's: this file runs inside an export,
    without textclf, so it cannot import it; the export check compares the two on every export.)"""
    if how == "last":
        positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
        last = (positions * attention_mask).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class TextclfForSequenceClassification(PreTrainedModel):
    config_class = TextclfClassifierConfig
    base_model_prefix = "backbone"
    # the base model's own attention implementations apply (set on base_config)
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: TextclfClassifierConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        base = config.base_config
        # never the code a base config's auto_map might name, whatever base_kwargs say
        self.backbone = AutoModel.from_config(base, **{**config.base_kwargs,
                                                       "trust_remote_code": False})
        hidden = base.hidden_size
        self.attention = None if config.attention_heads is None else nn.MultiheadAttention(
            hidden, config.attention_heads, dropout=config.attention_dropout_rate,
            batch_first=True)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(hidden, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        kwargs.pop("token_type_ids", None)  # trained without them (one segment of type 0)
        outputs = self.backbone(input_ids, attention_mask=attention_mask, return_dict=True,
                                **kwargs)
        hidden = outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        if self.attention is not None:  # padding is masked out as a key, so it changes nothing
            hidden = self.attention(hidden, hidden, hidden, key_padding_mask=attention_mask == 0,
                                    need_weights=False)[0]
        pooled = pool(hidden, attention_mask, self.config.pooling)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:  # trained as single-label classification (cross-entropy)
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)
