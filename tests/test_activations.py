"""GPT-2's activation ("gelu_new", the tanh approximation of GELU) runs as torch's one-kernel
gelu(approximate="tanh") in every model textclf loads (training, evaluation, zero-shot scoring,
an export read by `textclf predict`), and computes what transformers' Python formula computes."""

from __future__ import annotations

import pytest
import torch
from test_export import trained_model_dir
from transformers import AutoModel
from transformers.activations import GELUTanh, NewGELUActivation

from textclf.core.families import FAMILIES
from textclf.export.hf_export import export_model
from textclf.export.hf_loading import load_export
from textclf.modeling.classifier import load_backbone, load_model
from textclf.train.zero_shot import build_zero_shot


def activations(model: torch.nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (NewGELUActivation, GELUTanh))}


def test_the_one_kernel_gelu_is_the_python_formula():
    x = torch.linspace(-12, 12, 200_001, dtype=torch.float64).float()
    fused, python = GELUTanh()(x), NewGELUActivation()(x)
    assert torch.allclose(fused, python, rtol=0, atol=1e-6)
    x.requires_grad_(True)
    (grad_fused,) = torch.autograd.grad(GELUTanh()(x).sum(), x)
    (grad_python,) = torch.autograd.grad(NewGELUActivation()(x).sum(), x)
    assert torch.allclose(grad_fused, grad_python, rtol=0, atol=1e-5)


def test_a_loaded_gpt2_computes_its_activation_in_one_kernel_with_the_same_output(tiny_dirs):
    stock = AutoModel.from_pretrained(tiny_dirs["gpt2"]).eval()
    ours = load_backbone(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"]).eval()
    assert activations(stock) == {NewGELUActivation}  # what transformers builds from the config
    assert activations(ours) == {GELUTanh}
    torch.manual_seed(0)
    ids = torch.randint(0, stock.config.vocab_size, (3, 17))
    with torch.no_grad():
        want = stock(input_ids=ids).last_hidden_state
        got = ours(input_ids=ids).last_hidden_state
    assert torch.allclose(got, want, rtol=0, atol=1e-5)


def test_zero_shot_and_exported_models_use_the_one_kernel_too(tiny_dirs, data_dir, tmp_path):
    lm = build_zero_shot(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"], [0, 1])
    assert activations(lm) == {GELUTanh}
    models = trained_model_dir(tiny_dirs["gpt2"], data_dir, tmp_path / "models", "gpt2",
                               "finetune", "left")
    model, info = load_model(models)
    assert activations(model) == {GELUTanh}
    export_model(model, info, tmp_path / "export")
    exported, _, _ = load_export(tmp_path / "export")
    assert activations(exported) == {GELUTanh}


@pytest.mark.parametrize("family", ["bert", "gpt_neox"])
def test_other_activations_are_left_alone(tiny_dirs, family):
    stock = AutoModel.from_pretrained(tiny_dirs[family], **dict(FAMILIES[family].base_kwargs))
    ours = load_backbone(str(tiny_dirs[family]), FAMILIES[family])
    assert [type(m) for m in ours.modules()] == [type(m) for m in stock.modules()]
