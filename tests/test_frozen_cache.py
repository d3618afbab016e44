"""The frozen-prefix cache (train.cache_frozen): training on the cached output of the frozen
blocks is the same computation as training the full model."""

import pytest
import torch
from support import tiny

from textclf.core.families import FAMILIES, checked_config_and_family
from textclf.core.params import parse_params
from textclf.core.prepared_data import load_prepared
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.batching import Collator, sorted_batches
from textclf.modeling.classifier import build_classifier
from textclf.modeling.device import make_accelerator
from textclf.train.frozen_cache import (
    FrozenCache,
    cached_forward,
    frozen_prefix,
    skipping_frozen_blocks,
)
from textclf.train.loop import make_optimizer, train_classifier


def classifier(tiny_dirs, data_dir, family, method):
    params = parse_params(tiny.tiny_params(tiny_dirs[family], data_dir, method=method))
    _, fam = checked_config_and_family(params)
    torch.manual_seed(0)
    return params, build_classifier(params, fam, 2)


@pytest.mark.parametrize("method", ["finetune", "lora"])
@pytest.mark.parametrize("family", ["gpt2", "bert", "gpt_neox"])
def test_a_training_step_on_the_cache_equals_one_on_the_full_model(tiny_dirs, data_dir, family,
                                                                    method):
    ids = torch.tensor([[5, 17, 33, 41, 9, 12, 60, 7], [8, 21, 14, 3, 0, 0, 0, 0]])
    mask = (torch.arange(8) < torch.tensor([[8], [4]])).long()
    labels = torch.tensor([1, 0])
    results = []
    for use_cache in (False, True):
        _, clf = classifier(tiny_dirs, data_dir, family, method)
        optimizer = make_optimizer(clf, 1e-3, 0.01, fused=False)
        clf.train()
        batch = {"input_ids": ids, "attention_mask": mask, "index": torch.arange(2)}
        cache = FrozenCache(list(frozen_prefix(clf, ids, mask))) if use_cache else None
        torch.manual_seed(1)  # the same dropout masks in the trainable blocks
        logits = cached_forward(clf, clf, cache)(batch)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
        results.append((logits.detach(), {n: p.detach().clone() for n, p in
                                          clf.named_parameters() if p.requires_grad}))
    (full_logits, full_weights), (cached_logits, cached_weights) = results
    assert torch.equal(full_logits, cached_logits)
    assert full_weights.keys() == cached_weights.keys()
    for name in full_weights:
        assert torch.equal(full_weights[name], cached_weights[name]), name


def test_the_prefix_skips_the_frozen_blocks(tiny_dirs, data_dir):
    _, clf = classifier(tiny_dirs, data_dir, "gpt2", "finetune")
    calls = []
    for i, block in enumerate(clf.backbone.h):  # the blocks' attention: computed or not
        block.attn.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    prefix = frozen_prefix(clf, ids, mask)
    assert calls == [0, 1]  # stops before the first trainable block (of 4, last 2 trainable)
    calls.clear()
    with skipping_frozen_blocks(clf, prefix):
        clf(ids, mask)
    assert calls == [2, 3]


def test_training_with_the_cache_gives_the_same_model(tiny_dirs, data_dir, tmp_path):
    import yaml

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny.tiny_params(tiny_dirs["gpt2"], data_dir)))
    tiny.run_stages(tmp_path, params_file, stages=("prepare",))
    prepared = load_prepared(tmp_path / "data" / "prepared")
    weights = []
    for cache in (False, True):
        raw = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, train={"cache_frozen": cache})
        params = parse_params(raw)
        _, fam = checked_config_and_family(params)
        torch.manual_seed(0)
        clf = build_classifier(params, fam, 2)
        tokenizer = load_tokenizer(params.model, fam)
        collator = Collator(classifier_format(tokenizer), tokenizer.pad_id)
        result = train_classifier(clf, prepared.train, prepared.val, collator, params.train,
                                  params.learning_rate, 8, params.seed, make_accelerator("fp32"),
                                  log=lambda *a: None)
        weights.append(({n: p.detach().clone() for n, p in clf.named_parameters()},
                        result.history))
    # The cache is built in other batches (other padding widths) than training uses, so float
    # sums may differ in the last bits; the single-step test above shows exact equality.
    for full, cached in zip(weights[0][1], weights[1][1]):
        assert full == pytest.approx(cached, abs=1e-6)
    for name, value in weights[0][0].items():
        assert torch.allclose(value, weights[1][0][name], atol=1e-6), name


def test_cache_pads_each_batch_to_its_width():
    cache = FrozenCache([torch.ones(3, 2), 2 * torch.ones(1, 2)])
    out = cache.batch(torch.tensor([1, 0]), width=4)
    assert out.shape == (2, 4, 2)
    assert out[0, 0].tolist() == [2, 2] and out[0, 1:].abs().sum() == 0
    assert out[1, :3].eq(1).all() and out[1, 3].abs().sum() == 0


class CpuBf16:
    """What FrozenCache.compute needs of an Accelerator with mixed_precision="bf16", on the CPU
    (a real one would fix the precision of every Accelerator later in this process)."""
    device = torch.device("cpu")
    mixed_precision = "bf16"
    is_main_process = True

    @staticmethod
    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("method", ["finetune", "lora"])
@pytest.mark.parametrize("family", ["gpt2", "bert", "gpt_neox"])
def test_the_cache_is_exact_under_bf16_autocast(tiny_dirs, data_dir, family, method):
    """The cache holds what the uncached forward feeds the first trainable block under bf16
    autocast (the fp32 residual stream), so logits, loss and the updated weights agree as in
    fp32. A bf16 copy of the states was off by up to ~4e-3 in the logits of the tiny GPT-2."""
    texts = ["A wonderful film, I loved every minute of it.", "Terrible and far too long.",
             "Great.", "The acting is superb and the story kept me hooked to the very end."]
    labels = torch.tensor([1, 0, 1, 1])
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    collator = Collator(classifier_format(tok), tok.pad_id)
    split = tokenize_split(tok, texts, labels.numpy(), 64, "left", 0)
    # The batch the cache is built from (longest first), so both paths see the same shapes
    batch = collator([(i, split.ids[i], int(split.labels[i]))
                      for i in sorted_batches(split.lengths, len(texts))[0]])
    results = []
    for use_cache in (False, True):
        _, clf = classifier(tiny_dirs, data_dir, family, method)
        with torch.no_grad():  # make the LoRA adapters do something
            for name, p in clf.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        optimizer = make_optimizer(clf, 1e-3, 0.01, fused=False)
        clf.eval()
        cache = (FrozenCache.compute(clf, split, collator, len(texts), CpuBf16())
                 if use_cache else None)
        assert cache is None or cache.states[0].dtype == torch.float32
        with torch.no_grad(), CpuBf16.autocast():
            eval_logits = cached_forward(clf, clf, cache)(batch).float()
        clf.train()
        torch.manual_seed(1)  # the same dropout masks in the trainable blocks
        with CpuBf16.autocast():
            logits = cached_forward(clf, clf, cache)(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        results.append((eval_logits, loss.detach(), {n: p.detach().clone() for n, p in
                                                     clf.named_parameters() if p.requires_grad}))
    (full_logits, full_loss, full_weights), (cached_logits, cached_loss, cached_weights) = results
    torch.testing.assert_close(cached_logits, full_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached_loss, full_loss, rtol=0, atol=1e-6)
    for name in full_weights:
        torch.testing.assert_close(cached_weights[name], full_weights[name], rtol=0, atol=1e-6,
                                   msg=name)
