"""The export stage's library: the Hugging Face model directory and its model card."""
