"""The exported classes of textclf's attention head (train.head: attention), one per family.

Each is the family's base model (GPT2Model, BertModel without its pooler, GPTNeoXModel), one
self-attention layer over its last hidden states (padding masked out as a key), the family's
pooling (last real token, or masked mean over the real tokens), dropout and a linear head with
bias. No stock class computes this, so each config has a model_type of its own (MODEL_TYPES),
which stock transformers refuses to load; it loads as BERT's mean-pooled class does (see
hf_pooling.py): after `import textclf.export`, which registers these classes, or with
trust_remote_code=True from this file, copied into the export and named by config.json's
auto_map. It imports only torch and transformers (not textclf), as the Hub requires.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.configuration_bert import BertConfig
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel
from transformers.models.gpt2.configuration_gpt2 import GPT2Config
from transformers.models.gpt2.modeling_gpt2 import GPT2Model, GPT2PreTrainedModel
from transformers.models.gpt_neox.configuration_gpt_neox import GPTNeoXConfig
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXModel, GPTNeoXPreTrainedModel

MODULE = "hf_attention"  # the name this file has inside an export


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per sequence: the last real token (right padding) or the masked mean. (The
    same as textclf.modeling.classifier.pool: this file runs inside an export, without
    textclf, so it cannot import it; the export check compares the two on every export.)"""
    if how == "last":
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class AttentionHeadMixin:
    """The head on top of the base model; the family's class says where the base model is
    (base_model_prefix), how it is built and how it pools. config.attention_heads: the heads of
    the attention layer; config.attention_dropout_rate: its dropout while training."""

    pooling = "last"

    def _build_head(self, config):
        self.num_labels = config.num_labels
        self.attention = nn.MultiheadAttention(config.hidden_size, config.attention_heads,
                                               dropout=config.attention_dropout_rate,
                                               batch_first=True)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        outputs = self.base_model(input_ids, attention_mask=attention_mask, return_dict=True,
                                  **kwargs)
        hidden = outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        hidden = self.attention(hidden, hidden, hidden, key_padding_mask=attention_mask == 0,
                                need_weights=False)[0]
        logits = self.classifier(self.dropout(pool(hidden, attention_mask, self.pooling)))
        loss = None
        if labels is not None:  # trained as single-label classification (cross-entropy)
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


class GPT2AttentionHeadConfig(GPT2Config):
    model_type = "textclf-gpt2-attention-head"


class GPT2ForAttentionHeadClassification(AttentionHeadMixin, GPT2PreTrainedModel):
    config_class = GPT2AttentionHeadConfig

    def __init__(self, config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self._build_head(config)


class BertAttentionHeadConfig(BertConfig):
    model_type = "textclf-bert-attention-head"


class BertForAttentionHeadClassification(AttentionHeadMixin, BertPreTrainedModel):
    config_class = BertAttentionHeadConfig
    pooling = "mean"

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self._build_head(config)


class GPTNeoXAttentionHeadConfig(GPTNeoXConfig):
    model_type = "textclf-gpt-neox-attention-head"


class GPTNeoXForAttentionHeadClassification(AttentionHeadMixin, GPTNeoXPreTrainedModel):
    config_class = GPTNeoXAttentionHeadConfig

    def __init__(self, config):
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self._build_head(config)


# family name -> (config class, model class)
CLASSES = {"gpt2": (GPT2AttentionHeadConfig, GPT2ForAttentionHeadClassification),
           "bert": (BertAttentionHeadConfig, BertForAttentionHeadClassification),
           "gpt_neox": (GPTNeoXAttentionHeadConfig, GPTNeoXForAttentionHeadClassification)}
# model_type -> config.json's auto_map naming this file's classes
AUTO_MAPS = {config.model_type: {"AutoConfig": f"{MODULE}.{config.__name__}",
                                 "AutoModelForSequenceClassification": f"{MODULE}.{model.__name__}"}
             for config, model in CLASSES.values()}
