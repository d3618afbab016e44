"""The attention head (train.head: attention): one self-attention layer over the last hidden
states before the family's pooling. Padding ignored, trained, counted, saved and reloaded, and
its heads checked against the model's hidden size before any weights load."""

import pytest
import torch
from support.tensors import batch_of, logits_of, run_params

from textclf.core.errors import ParamsError
from textclf.core.families import FAMILIES, checked_config_and_family
from textclf.core.tokenization import classifier_format, load_tokenizer
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import build_classifier, load_model, parameter_counts, save_model
from textclf.modeling.model_info import TrainedModelInfo

TEXTS = ["A wonderful film.", "Terrible, boring and far too long for what it is.", "Great.",
         "The acting is superb and the story kept me hooked until the very last scene."]
FAMILY_NAMES = ["gpt2", "bert", "gpt_neox"]
ATTENTION = {"head": "attention", "attention_heads": 2, "attention_dropout": 0.2}


def build(tiny_dirs, data_dir, family, method="finetune", **train):
    torch.manual_seed(0)
    params = run_params(tiny_dirs[family], data_dir, method=method, train={**ATTENTION, **train})
    return build_classifier(params, FAMILIES[family], 3)


def text_batch(tiny_dirs, family, texts=TEXTS):
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    return batch_of(Collator(classifier_format(tok), tok.pad_id), tok.encode(texts))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_attention_head_ignores_padding(tiny_dirs, data_dir, family):
    clf = build(tiny_dirs, data_dir, family).eval()
    batch = text_batch(tiny_dirs, family)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == len(TEXTS)  # padded differently
    together = logits_of(clf, batch)
    for i, text in enumerate(TEXTS):
        alone = logits_of(clf, text_batch(tiny_dirs, family, [text]))
        torch.testing.assert_close(together[i:i + 1], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_attention_head_is_trained_and_counted(tiny_dirs, data_dir, method):
    clf = build(tiny_dirs, data_dir, "gpt2", method=method)
    linear = build_classifier(run_params(tiny_dirs["gpt2"], data_dir, method=method),
                              FAMILIES["gpt2"], 3)
    assert linear.attention is None
    attention = sum(p.numel() for p in clf.attention.parameters())
    assert attention == 4 * 32 * 32 + 4 * 32  # Q, K, V and output projections with biases
    assert all(p.requires_grad for p in clf.attention.parameters())
    counts, linear_counts = parameter_counts(clf), parameter_counts(linear)
    assert counts["trainable_params"] == linear_counts["trainable_params"] + attention
    assert counts["trainable_backbone_params"] == linear_counts["trainable_backbone_params"]
    assert clf.attention.dropout == 0.2 and clf.attention.num_heads == 2


@pytest.mark.parametrize("family, method", [("gpt2", "finetune"), ("bert", "lora"),
                                            ("gpt_neox", "finetune")])
def test_attention_head_save_load_round_trip(tiny_dirs, data_dir, tmp_path, family, method):
    clf = build(tiny_dirs, data_dir, family, method=method)
    with torch.no_grad():  # as if trained: every trainable weight moves
        for p in clf.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    clf.eval()
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    fmt = classifier_format(tok)
    info = TrainedModelInfo(base_model=str(tiny_dirs[family]), base_revision=None, family=family,
                            method=method, label_names=["a", "b", "c"], tokenizer=tok.name,
                            input_prefix=list(fmt.prefix), input_suffix=list(fmt.suffix),
                            pad_id=tok.pad_id, max_tokens=64, truncation="left", head_tokens=0,
                            attention_heads=2)
    save_model(clf, tmp_path / "model", info)
    loaded, loaded_info = load_model(tmp_path / "model")
    assert loaded_info == info and loaded.attention is not None
    batch = text_batch(tiny_dirs, family)
    torch.testing.assert_close(logits_of(loaded, batch), logits_of(clf, batch), rtol=0,
                               atol=1e-5 if method == "lora" else 0)


def test_attention_heads_must_divide_the_hidden_size(tiny_dirs, data_dir):
    params = run_params(tiny_dirs["gpt2"], data_dir, train={**ATTENTION, "attention_heads": 3})
    with pytest.raises(ParamsError, match=r"train.attention_heads is 3 but must divide the "
                                          r"hidden size of .*, 32"):
        checked_config_and_family(params)
    linear = run_params(tiny_dirs["gpt2"], data_dir, train={"attention_heads": 3})
    checked_config_and_family(linear)  # the linear head has no attention heads to divide
