"""Dynamic int8 quantization of a loaded classifier: an opt-in, faster predict on CPUs
(`textclf predict --quantize int8`), never the default.

Inside the transformer blocks (where nearly all of a forward pass's FLOPs are), every linear
layer becomes torch's dynamically quantized Linear (torch.ao.quantization.quantize_dynamic): its
weight stored in int8, one scale per output channel, and each batch's activations quantized to
int8 as they arrive, so the matrix products run in int8 and everything else (embeddings, norms,
attention's softmax, the pooling and the head) in fp32. GPT-2's projections are transformers'
Conv1D, a linear layer with its weight stored (in, out): each becomes the nn.Linear it is first.
A LoRA adapter is merged into its weights first.

Probabilities move by the rounding of int8 (not a tolerance of float rounding): how far labels
and accuracy move on real text is measured, not promised (docs/performance.md); the tests check
the labels of a tiny model agree with fp32's. Quantized kernels run on the CPU only, in fp32
around the int8 products (no bf16 autocast). torch marks its eager quantization API deprecated in
favour of the torchao package, which would be a new dependency; it runs unchanged in the torch
pinned here.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from textclf.core.families import Family
from textclf.modeling.classifier import base_model_of, blocks_of


def conv1d_as_linear(module: nn.Module) -> None:
    """In place: each transformers Conv1D (y = x W + b, W stored (in, out)) under `module`
    becomes an nn.Linear computing the same product (weight W transposed)."""
    from transformers.pytorch_utils import Conv1D

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = nn.Linear(n_in, n_out, device=child.weight.device)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    linear.bias.copy_(child.bias)
                setattr(parent, name, linear)


def quantize_int8(model: nn.Module, family: Family) -> nn.Module:
    """`model` (a modeling.classifier.Classifier or an export's ExportedClassifier, in eval mode
    on the CPU) with the linear layers of its blocks dynamically quantized to int8, in place."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model.float()  # model_dtype bf16: the frozen weights upcast (exactly); int8 takes fp32
    if hasattr(model, "backbone"):  # a Classifier: its base model, LoRA merged
        if hasattr(model.backbone, "merge_and_unload"):
            model.backbone = model.backbone.merge_and_unload()
        blocks = blocks_of(base_model_of(model.backbone), family)
    else:  # an export: its transformers model's base model
        blocks = blocks_of(model.model.base_model, family)
    conv1d_as_linear(blocks)
    with warnings.catch_warnings():  # torch.ao's notices that torchao is its successor
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*are deprecated")
        quantize_dynamic(blocks, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                         inplace=True)
    return model.eval()
