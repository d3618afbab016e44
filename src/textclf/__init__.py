"""textclf: fine-tune and evaluate pretrained language models for text classification.

One module per concern: params (the validated params object), data (sources, cleaning, splits),
tokenization (tokenizers, truncation, cached token ids), families (what differs between GPT-2,
BERT and GPT-NeoX), models (build, freeze, LoRA, save, reload), zero_shot (prompt scoring),
batching, training (the Accelerate loop, checkpoints), inference, metrics, plots, reports.
Importing the package imports nothing heavy.
"""
