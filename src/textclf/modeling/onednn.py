"""Scoring on a CPU through oneDNN's linear operator, with GELU fused into the product before it.

While a split is scored on a CPU (textclf.modeling.inference.predict_logits: evaluate, predict,
validation), every linear layer of the base model (nn.Linear, transformers' Conv1D) computes its
product with oneDNN's linear operator (`torch.ops.mkldnn._linear_pointwise`, the operator
torch.compile's freezing emits on a CPU) instead of the BLAS call of its stock forward, and where
GELU follows a linear layer inside an MLP that this module knows (FUSED_GELU: GPT-2, GPT-NeoX,
BERT, RoBERTa), the GELU is applied inside the product, on its float32 accumulator, rather than
as a pass of its own over the MLP's widest tensor. Measured on an AMD EPYC at GPT-2's shapes
(benchmarks/kernels.py) the first product and its GELU take 216 ms instead of 282 in fp32 and
117 ms instead of 146 in bf16, and a whole evaluation of 1,000 texts with GPT-2 124M ran 1.19x
faster in bf16 (docs/performance.md, "AMD EPYC: oneDNN's products in scoring").

The same function: the products take the same operands (bf16 under bf16 autocast, as autocast
hands them to the BLAS; the weights' own dtype otherwise) and accumulate in float32. In fp32 the
logits agree to float rounding; under bf16 autocast the fused GELU acts on the float32 sum
before it is rounded to bf16 (the stock path rounds first), so they agree within bf16's rounding
(tests/test_onednn.py).

Nothing of the model changes: each module's forward is replaced by an instance attribute for the
length of the `with`, which removes only what it installed. The weights are read as they are on
entry (a trained weight under bf16 autocast is copied to bf16 once, as autocast would before each
product). A LoRA-wrapped layer keeps peft's forward: the layer inside it and its adapters are
linear layers, each patched. Left alone: GPUs, torch builds without the operator (`available`),
quantized layers (they are no nn.Linear), and compiled scoring (eval.compile: the compiler fuses
on its own).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class GeluMlp(NamedTuple):
    """Where GELU follows a linear layer, inside a module whose forward is exactly
    `then(act(first(x)))`."""
    first: str  # the linear layer
    act: str  # the GELU module applied to its output
    then: tuple[str, ...]  # the modules applied after the GELU, in order


# transformers' modules (by class name) whose forward is first, act, then: replaced whole, so
# that the fused product and the skipped activation come and go together
FUSED_GELU = {
    "GPT2MLP": GeluMlp("c_fc", "act", ("c_proj", "dropout")),
    "GPTNeoXMLP": GeluMlp("dense_h_to_4h", "act", ("dense_4h_to_h",)),
    "BertIntermediate": GeluMlp("dense", "intermediate_act_fn", ()),
    "RobertaIntermediate": GeluMlp("dense", "intermediate_act_fn", ()),
    "XLMRobertaIntermediate": GeluMlp("dense", "intermediate_act_fn", ()),
}


def available() -> bool:
    """Whether this torch has oneDNN's linear operator (x86 and aarch64 CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                            "_linear_pointwise")


def linear_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     attr: str = "none", algorithm: str = "") -> torch.Tensor:
    """x @ weight.T + bias through oneDNN, then `attr` ("none" | "gelu", GELU's `algorithm`
    "none" | "tanh") on the float32 sum. `weight` is (out, in), as nn.Linear holds it."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)


def gelu_algorithm(act: nn.Module) -> str | None:
    """The GELU variant `act` computes ("none": exact, "tanh"), or None if it is not GELU."""
    from transformers.activations import GELUActivation, GELUTanh

    if type(act) is nn.GELU:
        return act.approximate
    fn = getattr(act, "act", None)
    if type(act) is GELUActivation and fn is F.gelu:
        return "none"
    if (type(act) is GELUTanh and isinstance(fn, functools.partial) and fn.func is F.gelu
            and fn.keywords == {"approximate": "tanh"}):
        return "tanh"
    return None


class _Product(NamedTuple):
    """A linear layer's operands as oneDNN takes them."""
    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor | None

    @classmethod
    def of(cls, layer: nn.Module, bf16: bool) -> _Product:
        from transformers.pytorch_utils import Conv1D

        weight = layer.weight.detach()
        weight = weight.t() if isinstance(layer, Conv1D) else weight  # Conv1D holds (in, out)
        bias = layer.bias.detach() if layer.bias is not None else None
        if bf16:  # autocast's operands
            weight = weight.to(torch.bfloat16)
            bias = bias.to(torch.bfloat16) if bias is not None else None
        return cls(weight, bias)

    def __call__(self, x: torch.Tensor, attr: str = "none", algorithm: str = "") -> torch.Tensor:
        return linear_pointwise(x.to(self.weight.dtype), self.weight, self.bias, attr, algorithm)


def _gelu_mlp_forward(module: nn.Module, mlp: GeluMlp, product: _Product,
                      algorithm: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = product(x, "gelu", algorithm)
        for name in mlp.then:
            out = getattr(module, name)(out)
        return out

    return forward


def _fusable(module: nn.Module, counts: Counter) -> tuple[GeluMlp, str] | None:
    """The module's GeluMlp and GELU variant, if its first layer is a plain linear layer and its
    activation a GELU used nowhere else."""
    from transformers.pytorch_utils import Conv1D

    mlp = FUSED_GELU.get(type(module).__name__)
    if mlp is None or not type(module).__module__.startswith("transformers."):
        return None
    first, act = getattr(module, mlp.first, None), getattr(module, mlp.act, None)
    if type(first) not in (nn.Linear, Conv1D) or act is None or counts.get(id(act)) != 1:
        return None
    algorithm = gelu_algorithm(act)
    return (mlp, algorithm) if algorithm is not None else None


@contextlib.contextmanager
def onednn_products(model: nn.Module, bf16: bool, enabled: bool = True) -> Iterator[None]:
    """While a split is scored: the linear layers of `model`'s base model (its `backbone`)
    through oneDNN, GELU fused where FUSED_GELU knows the MLP. `bf16`: the split is scored under
    bf16 autocast (the products take bf16 operands). Does nothing unless `enabled` (the caller:
    a CPU, and no compiled forward) and `available()`."""
    from transformers.pytorch_utils import Conv1D

    base = getattr(model, "backbone", None)
    if not enabled or base is None or not available():
        yield
        return
    counts = Counter(id(m) for _, m in base.named_modules(remove_duplicate=False))
    installed: list[tuple[nn.Module, Callable]] = []
    fused_first = set()  # the fused MLPs' first layers: their product runs in the MLP's forward
    for module in base.modules():
        fusable = _fusable(module, counts)
        if fusable is not None:
            mlp, algorithm = fusable
            first = getattr(module, mlp.first)
            fused_first.add(id(first))
            product = _Product.of(first, bf16)
            installed.append((module, _gelu_mlp_forward(module, mlp, product, algorithm)))
    installed += [(m, _Product.of(m, bf16)) for m in base.modules()
                  if type(m) in (nn.Linear, Conv1D) and id(m) not in fused_first]
    try:
        for module, forward in installed:
            module.forward = forward
        yield
    finally:
        for module, forward in installed:
            if module.__dict__.get("forward") is forward:  # another scorer's may replace it
                del module.forward
