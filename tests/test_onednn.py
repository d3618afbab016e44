"""oneDNN's products in scoring (textclf.modeling.onednn): predict_logits on a CPU gives the stock
products' logits (to float rounding in fp32, within bf16's rounding under bf16 autocast) for
every family fine-tuned, and with LoRA on GPT-2, GPT-NeoX and BERT; the GELU of the MLPs of
GPT-2, GPT-NeoX and the BERT family really runs inside the product; the model is left as it was
found, also after an error and with threads sharing it; and without the operator, or with a
compiled forward, scoring runs the stock products."""

import threading

import numpy as np
import pytest
import torch
from test_models import FAMILY_NAMES, TEXTS, build, tokenizer_of
from torch import nn
from transformers.activations import GELUActivation, GELUTanh
from transformers.pytorch_utils import Conv1D

from textclf.core.tokenization import classifier_format, tokenize_split
from textclf.modeling import onednn
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator
from textclf.modeling.inference import predict_logits

pytestmark = pytest.mark.skipif(not onednn.available(), reason="torch without oneDNN")

# Texts of many lengths: batches of 3 are right-padded
LONGER = TEXTS + ["Fine.", "Not my kind of film, though the music was lovely and the cast tried.",
                  "Dull."]
# The tiny models' MLPs whose GELU is fused: every block of these families
FUSED_FAMILIES = {"gpt2", "gpt_neox", "bert", "roberta", "xlm-roberta"}
TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2}  # logits; bf16: a few units of bf16's rounding


def split_and_collator(tiny_dirs, family):
    tok = tokenizer_of(tiny_dirs, family)
    split = tokenize_split(tok, LONGER, np.zeros(len(LONGER), dtype=np.int64), 64, "left", 0)
    return split, Collator(classifier_format(tok), tok.pad_id)


def scored(clf, tiny_dirs, family, precision, monkeypatch, with_onednn: bool) -> np.ndarray:
    monkeypatch.setattr(onednn, "available", lambda: with_onednn)
    split, collator = split_and_collator(tiny_dirs, family)
    return predict_logits(clf, split, collator, 3, make_accelerator(precision, "cpu"))


def instance_forwards(clf) -> dict[str, object]:
    """The modules' forwards set on the instance (the last-token block's is one of its own)."""
    return {name: m.__dict__["forward"] for name, m in clf.named_modules()
            if "forward" in m.__dict__}


def lora_that_acts(clf):
    with torch.no_grad():  # LoRA's B starts at zero: make the adapters change the products
        for name, p in clf.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return clf


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_scoring_through_onednn_gives_the_stock_logits(tiny_dirs, data_dir, family, precision,
                                                       monkeypatch):
    clf = build(tiny_dirs, data_dir, family)
    stock = scored(clf, tiny_dirs, family, precision, monkeypatch, with_onednn=False)
    ours = scored(clf, tiny_dirs, family, precision, monkeypatch, with_onednn=True)
    np.testing.assert_allclose(ours, stock, atol=TOLERANCE[precision], rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "bert"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lora_scores_through_onednn_as_through_the_stock_products(tiny_dirs, data_dir, family,
                                                                  precision, monkeypatch):
    clf = lora_that_acts(build(tiny_dirs, data_dir, family, method="lora"))
    stock = scored(clf, tiny_dirs, family, precision, monkeypatch, with_onednn=False)
    ours = scored(clf, tiny_dirs, family, precision, monkeypatch, with_onednn=True)
    assert not np.allclose(stock, scored(build(tiny_dirs, data_dir, family, method="lora"),
                                         tiny_dirs, family, precision, monkeypatch, False))
    np.testing.assert_allclose(ours, stock, atol=TOLERANCE[precision], rtol=0)


def test_bf16_weights_score_through_onednn_as_through_the_stock_products(tiny_dirs, data_dir,
                                                                         monkeypatch):
    clf = build(tiny_dirs, data_dir, "gpt2", model_dtype="bf16")
    stock = scored(clf, tiny_dirs, "gpt2", "fp32", monkeypatch, with_onednn=False)
    ours = scored(clf, tiny_dirs, "gpt2", "fp32", monkeypatch, with_onednn=True)
    np.testing.assert_allclose(ours, stock, atol=TOLERANCE["bf16"], rtol=0)


class Calls:
    """What ran while a split was scored: oneDNN's products by their post-op, and the GELU
    modules' own forwards."""

    def __init__(self, clf, monkeypatch):
        self.products: list[str] = []
        self.activations = 0
        real = onednn.linear_pointwise

        def counting(x, weight, bias, attr="none", algorithm=""):
            self.products.append(attr)
            return real(x, weight, bias, attr, algorithm)

        monkeypatch.setattr(onednn, "linear_pointwise", counting)
        for module in clf.modules():
            if onednn.gelu_algorithm(module) is not None:
                module.register_forward_hook(self._activation)

    def _activation(self, *_):
        self.activations += 1


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_linear_layer_runs_through_onednn_and_gelu_inside_it(tiny_dirs, data_dir, family,
                                                                   monkeypatch):
    clf = build(tiny_dirs, data_dir, family)
    before = instance_forwards(clf)
    calls = Calls(clf, monkeypatch)
    scored(clf, tiny_dirs, family, "fp32", monkeypatch, with_onednn=True)
    batches = -(-len(LONGER) // 3)
    linears = sum(type(m) in (nn.Linear, Conv1D) for m in clf.backbone.modules())
    blocks = len(clf.backbone.get_submodule(clf.family.blocks))
    if family in FUSED_FAMILIES:
        assert calls.products.count("gelu") == blocks * batches
        assert calls.activations == 0  # the stock GELU never ran
    else:  # Llama-like MLPs (SiLU, gated) keep their activation
        assert calls.products.count("gelu") == 0
    # every linear layer's product went through oneDNN, once per batch (a fused MLP's first
    # layer inside its MLP's forward)
    assert len(calls.products) == linears * batches
    assert instance_forwards(clf) == before  # all taken back


def test_without_the_operator_scoring_runs_the_stock_products(tiny_dirs, data_dir, monkeypatch):
    clf = build(tiny_dirs, data_dir, "gpt2")
    calls = Calls(clf, monkeypatch)
    scored(clf, tiny_dirs, "gpt2", "fp32", monkeypatch, with_onednn=False)
    assert calls.products == [] and calls.activations > 0


def test_a_compiled_forward_is_left_to_the_compiler(tiny_dirs, data_dir, monkeypatch):
    clf = build(tiny_dirs, data_dir, "gpt2")
    calls = Calls(clf, monkeypatch)

    def forward(batch):  # what compiled_scorer returns, marked as it marks it
        return clf(batch["input_ids"], batch["attention_mask"])

    forward.compiled = True
    split, collator = split_and_collator(tiny_dirs, "gpt2")
    predict_logits(clf, split, collator, 3, make_accelerator("fp32", "cpu"), forward)
    assert calls.products == []


def test_an_error_while_scoring_leaves_the_model_as_it_was(tiny_dirs, data_dir, monkeypatch):
    clf = build(tiny_dirs, data_dir, "gpt2")
    before = {name: p.detach().clone() for name, p in clf.named_parameters()}
    forwards = instance_forwards(clf)

    def failing(batch):
        assert clf.backbone.h[0].mlp.__dict__.get("forward")  # patched while scoring
        raise RuntimeError("out of memory")

    split, collator = split_and_collator(tiny_dirs, "gpt2")
    with pytest.raises(RuntimeError, match="out of memory"):
        predict_logits(clf, split, collator, 3, make_accelerator("bf16", "cpu"), failing)
    assert instance_forwards(clf) == forwards
    for name, p in clf.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), name


def test_an_activation_used_twice_is_not_fused(tiny_dirs, data_dir, monkeypatch):
    clf = build(tiny_dirs, data_dir, "gpt2")
    blocks = clf.backbone.h
    blocks[1].mlp.act = blocks[0].mlp.act  # one GELU module in two MLPs
    calls = Calls(clf, monkeypatch)
    stock = scored(clf, tiny_dirs, "gpt2", "fp32", monkeypatch, with_onednn=False)
    calls.products.clear()
    ours = scored(clf, tiny_dirs, "gpt2", "fp32", monkeypatch, with_onednn=True)
    assert calls.products.count("gelu") == (len(blocks) - 2) * 3
    np.testing.assert_allclose(ours, stock, atol=1e-5, rtol=0)


def test_threads_sharing_the_model_score_as_one(tiny_dirs, data_dir, monkeypatch):
    clf = build(tiny_dirs, data_dir, "gpt2").eval()  # as a predictor holds it
    forwards = instance_forwards(clf)
    alone = scored(clf, tiny_dirs, "gpt2", "bf16", monkeypatch, with_onednn=True)
    split, collator = split_and_collator(tiny_dirs, "gpt2")
    results, errors = {}, []

    def score(i):
        try:
            for _ in range(5):
                results[i] = predict_logits(clf, split, collator, 3,
                                            make_accelerator("bf16", "cpu"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=score, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for logits in results.values():
        np.testing.assert_allclose(logits, alone, atol=TOLERANCE["bf16"], rtol=0)
    assert instance_forwards(clf) == forwards


@pytest.mark.parametrize("act, algorithm", [
    (GELUTanh(), "tanh"), (GELUActivation(), "none"), (nn.GELU(), "none"),
    (nn.GELU(approximate="tanh"), "tanh"), (GELUTanh(use_gelu_tanh_python=True), None),
    (GELUActivation(use_gelu_python=True), None), (nn.SiLU(), None), (nn.ReLU(), None)])
def test_only_torchs_gelu_kernels_are_taken_for_gelu(act, algorithm):
    assert onednn.gelu_algorithm(act) == algorithm


@pytest.mark.parametrize("algorithm", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fused_product_is_the_product_then_gelu(algorithm, dtype):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(5, 8), torch.randn(12, 8), torch.randn(12)
    fused = onednn.linear_pointwise(x.to(dtype), weight.to(dtype), bias.to(dtype), "gelu",
                                    algorithm).float()
    reference = torch.nn.functional.gelu(x @ weight.T + bias, approximate=algorithm)
    torch.testing.assert_close(fused, reference, atol=1e-5 if dtype == torch.float32 else 0.1,
                               rtol=1e-5 if dtype == torch.float32 else 0.02)
