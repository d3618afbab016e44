"""BERT with masked mean pooling and a linear head: the exported model of the `bert` family.

This file is copied into an exported model directory, and its config.json points
AutoModelForSequenceClassification at the class below (`auto_map`), so the export loads with
`trust_remote_code=True`:

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
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden states of the real tokens (attention mask 1), padding left out."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class BertForMeanPooledClassification(BertPreTrainedModel):
    """BertModel without its [CLS] pooler, the masked mean of its last hidden states, dropout
    (active only in training) and a linear head with bias."""

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
