"""The frozen-prefix cache (train.cache_frozen): training on the cached output of the frozen
blocks is the same computation as training the full model."""

import pytest
import torch

import tiny
from textclf.batching import Collator
from textclf.inference import PrefixCache
from textclf.models import build_classifier, checked_model
from textclf.params import parse_params
from textclf.prepared import load_prepared
from textclf.tokenization import classifier_format, load_tokenizer
from textclf.training import make_accelerator, make_optimizer, train_classifier


def classifier(tiny_dirs, data_dir, family, method):
    params = parse_params(tiny.tiny_params(tiny_dirs[family], data_dir, method=method))
    _, fam = checked_model(params)
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
        prefix = clf.frozen_prefix(ids, mask) if use_cache else None
        torch.manual_seed(1)  # the same dropout masks in the trainable blocks
        logits = clf(ids, mask, prefix_hidden=prefix)
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
    prefix = clf.frozen_prefix(ids, mask)
    assert calls == [0, 1]  # stops before the first trainable block (of 4, last 2 trainable)
    calls.clear()
    clf(ids, mask, prefix_hidden=prefix)
    assert calls == [2, 3]


def test_training_with_the_cache_gives_the_same_model(tiny_dirs, data_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny.tiny_params(tiny_dirs["gpt2"], data_dir)))
    subprocess.run([sys.executable, str(repo / "stages/prepare.py"), "--params", str(params_file),
                    "--out", str(tmp_path / "prepared"), "--report", str(tmp_path / "p.json")],
                   check=True, capture_output=True)
    prepared = load_prepared(tmp_path / "prepared")
    weights = []
    for cache in (False, True):
        raw = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, train={"cache_frozen": cache})
        params = parse_params(raw)
        _, fam = checked_model(params)
        torch.manual_seed(0)
        clf = build_classifier(params, fam, 2)
        tokenizer = load_tokenizer(params.model, fam)
        collator = Collator(classifier_format(tokenizer), tokenizer.pad_id)
        result = train_classifier(clf, prepared.train, prepared.val, collator, params.train,
                                  params.learning_rate, 8, params.seed, make_accelerator("no"),
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
    cache = PrefixCache([torch.ones(3, 2), 2 * torch.ones(1, 2)])
    out = cache.batch(torch.tensor([1, 0]), width=4)
    assert out.shape == (2, 4, 2)
    assert out[0, 0].tolist() == [2, 2] and out[0, 1:].abs().sum() == 0
    assert out[1, :3].eq(1).all() and out[1, 3].abs().sum() == 0
