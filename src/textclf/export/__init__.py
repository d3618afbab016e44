"""The export stage's library: the Hugging Face model directory and its model card.

Importing it registers textclf's exported classes with transformers' Auto classes, so that
`pipeline("text-classification", model="export")` loads a BERT or attention-head export (its
model_type is textclf's own) with no remote code: see textclf.export.hf_pooling and hf_attention.
"""

from textclf.export.hf_loading import register_exported_classes

register_exported_classes()
