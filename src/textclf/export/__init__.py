"""The export stage's library: the Hugging Face model directory and its model card.

Importing it registers textclf's exported classes with transformers' Auto classes, so that
`pipeline("text-classification", model="export")` loads an export of textclf's own class (every
family but GPT-2's and GPT-NeoX's linear head) with no remote code: see textclf.export.hf_model.
"""

from textclf.export.hf_loading import register_exported_classes

register_exported_classes()
