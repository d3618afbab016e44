"""BERT with masked mean pooling and a linear head: the exported model of the `bert` family.

The export's config.json has a model_type of its own (MODEL_TYPE), which stock transformers
does not know, so that no tool can load it as stock BERT (whose [CLS] pooler it lacks) and score
other numbers: loading it any other way than these two raises.

- In a process that imports textclf: `import textclf.export` registers these classes with
  AutoConfig and AutoModelForSequenceClassification; no code is read from the directory.
- Anywhere else: this file is copied into the export, and config.json's `auto_map` names its
  classes, which load with `trust_remote_code=True`:

    pipeline("text-classification", model="export", trust_remote_code=True, truncation=True)

Stock BertForSequenceClassification classifies the [CLS] token through BERT's pooler (a dense
layer and tanh); textclf trains the mean of the last hidden states over the real tokens instead,
which no stock class computes. It imports only torch and transformers (not textclf), as the Hub
requires of a modelling file.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.configuration_bert import BertConfig
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

MODEL_TYPE = "textclf-bert-mean-pooled"  # config.json's model_type: unknown to stock transformers
# config.json's auto_map: the classes of this file, copied into the export as hf_pooling.py
AUTO_MAP = {"AutoConfig": "hf_pooling.BertMeanPooledConfig",
            "AutoModelForSequenceClassification": "hf_pooling.BertForMeanPooledClassification"}


class BertMeanPooledConfig(BertConfig):
    """BERT's configuration under the export's own model_type."""

    model_type = MODEL_TYPE


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden states of the real tokens (attention mask 1), padding left out."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class BertForMeanPooledClassification(BertPreTrainedModel):
    """BertModel without its [CLS] pooler, the masked mean of its last hidden states, dropout
    (active only in training) and a linear head with bias."""

    config_class = BertMeanPooledConfig

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, **kwargs):
        outputs = self.bert(input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        hidden = outputs.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        logits = self.classifier(self.dropout(masked_mean(hidden, attention_mask)))
        loss = None
        if labels is not None:  # trained as single-label classification (cross-entropy)
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)
