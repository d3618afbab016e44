"""The training loop: clipping after backward, weight decay on matrices only, the best epoch's
weights kept, and a tiny model that learns an easy task."""

import random

import numpy as np
import pytest
import torch
from support.tensors import run_params, trainable_state

from textclf.core.data import load_corpus
from textclf.core.errors import DataError
from textclf.core.families import FAMILIES
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.batching import Collator, LengthGroupedBatches
from textclf.modeling.classifier import build_classifier
from textclf.modeling.inference import predict_logits
from textclf.train import loop
from textclf.train.loop import Recipe, make_optimizer, make_scheduler, train_classifier


@pytest.fixture(scope="module")
def gpt2(tiny_dirs):
    tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
    return tok, Collator(classifier_format(tok), tok.pad_id)


@pytest.fixture(scope="module")
def fixture_splits(tiny_dirs, data_dir, gpt2):
    """The fixture reviews as the prepare stage would tokenize them for the tiny GPT-2."""
    tok, _ = gpt2
    params = run_params(tiny_dirs["gpt2"], data_dir)
    corpus = load_corpus(params.data, params.seed)
    return [tokenize_split(tok, split.texts, split.labels, params.data.max_tokens,
                           params.data.truncation, params.data.head_tokens)
            for split in (corpus.train, corpus.val)]


def classifier(tiny_dirs, data_dir, seed: int = 0, **overrides):
    params = run_params(tiny_dirs["gpt2"], data_dir, **overrides)
    torch.manual_seed(seed)
    return params, build_classifier(params, FAMILIES["gpt2"], 2)


def recipe(params, eval_batch_size: int) -> Recipe:
    return Recipe(params.train, params.learning_rate, eval_batch_size, params.seed)


def grad_norm(parameters) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item()


# ---------------------------------------------------------------------------------------------
# Optimizer and schedule

@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_weight_decay_only_on_matrices(tiny_dirs, data_dir, method):
    _, clf = classifier(tiny_dirs, data_dir, method=method)
    optimizer = make_optimizer(clf, 1e-3, 0.01, fused=False)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"])
    assert all(p.ndim == 1 for p in plain["params"])
    names = {id(p): n for n, p in clf.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert decayed_names | plain_names == trainable and not decayed_names & plain_names
    assert "head.weight" in decayed_names and "head.bias" in plain_names
    if method == "finetune":
        assert "backbone.h.3.attn.c_attn.weight" in decayed_names
        assert {"backbone.ln_f.weight", "backbone.ln_f.bias", "backbone.h.3.ln_1.weight",
                "backbone.h.3.attn.c_attn.bias"} <= plain_names
    else:
        assert all("lora_" in n for n in decayed_names - {"head.weight"})


def test_schedule_warms_up_from_zero_then_decays_to_zero():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=1.0)
    scheduler = make_scheduler(optimizer, "linear", 0.1, 100)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[10] == pytest.approx(1.0) and lrs[5] == pytest.approx(0.5)
    assert lrs[55] == pytest.approx(0.5) and scheduler.get_last_lr()[0] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# Batches: reshuffled every epoch, shared among processes, resumable mid-epoch

def epoch_shares(lengths, processes: int, epoch: int, **kwargs) -> list[list[list[int]]]:
    """Each process's batches of `epoch`, as the sampler of that process yields them."""
    shares = []
    for rank in range(processes):
        sampler = LengthGroupedBatches(lengths, 4, seed=0, processes=processes, rank=rank,
                                       **kwargs)
        sampler.set_epoch(epoch)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    return shares


@pytest.mark.parametrize("texts, processes", [(21, 1), (21, 2), (24, 2), (26, 3), (9, 4)])
@pytest.mark.parametrize("group_by_length", [True, False])
def test_processes_share_each_epochs_texts_once(texts, processes, group_by_length):
    lengths = np.random.default_rng(0).integers(1, 300, texts)
    epochs = [epoch_shares(lengths, processes, epoch, group_by_length=group_by_length,
                           window=2) for epoch in range(3)]
    for shares in epochs:
        assert len({len(share) for share in shares}) == 1  # the same number of steps
        assert sorted(i for share in shares for batch in share for i in batch) == \
            list(range(texts))
        assert all(0 < len(batch) <= 4 for share in shares for batch in share)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_too_few_texts_for_the_processes_is_an_error():
    with pytest.raises(DataError, match="3 training texts cannot make one batch per process"):
        LengthGroupedBatches(np.ones(3), 4, seed=0, group_by_length=True, processes=4, rank=0)


def test_a_resumed_epoch_yields_its_remaining_batches():
    lengths = np.random.default_rng(1).integers(1, 300, 50)
    sampler = LengthGroupedBatches(lengths, 4, seed=0, group_by_length=True, processes=2,
                                   rank=1)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start=3)
    assert list(sampler) == whole[3:] and len(sampler) == len(whole)


# ---------------------------------------------------------------------------------------------
# Gradient clipping

def test_gradients_are_clipped_after_backward(tiny_dirs, data_dir, fixture_splits, gpt2,
                                              accelerator, monkeypatch):
    params, clf = classifier(tiny_dirs, data_dir, train={"epochs": 1, "grad_clip": 1e-3})
    trainable = {id(p) for p in clf.parameters() if p.requires_grad}
    calls = []
    clip = accelerator.clip_grad_norm_

    def checked_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        assert {id(p) for p in parameters} == trainable
        # grads are set to None after every step: they exist only if backward already ran
        assert all(p.grad is not None for p in parameters)
        before = grad_norm(parameters)
        out = clip(parameters, max_norm, *args, **kwargs)
        calls.append((before, grad_norm(parameters), max_norm))
        return out

    monkeypatch.setattr(accelerator, "clip_grad_norm_", checked_clip)
    train, val = fixture_splits
    result = train_classifier(clf, train, val, gpt2[1], recipe(params, 8), accelerator,
                              log=lambda *a: None)
    assert len(calls) == result.steps > 0
    for before, after, max_norm in calls:
        assert max_norm == 1e-3 and before > max_norm
        assert after == pytest.approx(max_norm, rel=1e-3)


def test_zero_grad_clip_disables_clipping(tiny_dirs, data_dir, fixture_splits, gpt2,
                                          accelerator, monkeypatch):
    params, clf = classifier(tiny_dirs, data_dir, train={"epochs": 1, "grad_clip": 0.0})
    calls = []
    monkeypatch.setattr(accelerator, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    train, val = fixture_splits
    train_classifier(clf, train, val, gpt2[1], recipe(params, 8), accelerator,
                     log=lambda *a: None)
    assert calls == []


# ---------------------------------------------------------------------------------------------
# The best epoch is kept

def test_returns_the_best_epochs_weights(tiny_dirs, data_dir, fixture_splits, gpt2,
                                         accelerator, monkeypatch):
    """Validation is scripted so that epoch 2 of 3 is the best: the weights on return must be
    epoch 2's, not the last epoch's."""
    params, clf = classifier(tiny_dirs, data_dir, train={"epochs": 3, "lr": 1e-3})
    train, val = fixture_splits
    right = iter([len(val) // 2, len(val), 0])  # correct validation predictions per epoch
    weights_at_validation = []

    def scripted(model, split, *args, **kwargs):
        predict_logits(model, split, *args, **kwargs)  # the real pass still runs
        weights_at_validation.append(trainable_state(clf))
        preds = split.labels.copy()
        k = next(right)
        preds[k:] = 1 - preds[k:]
        return np.eye(2, dtype=np.float32)[preds] * 4.0

    monkeypatch.setattr(loop, "predict_logits", scripted)
    before = trainable_state(clf)
    result = train_classifier(clf, train, val, gpt2[1], recipe(params, 8), accelerator,
                              log=lambda *a: None)
    assert [row["val_accuracy"] for row in result.history] == pytest.approx(
        [(len(val) // 2) / len(val), 1.0, 0.0])
    assert result.best_epoch == 2 and result.best_val_accuracy == 1.0
    assert result.steps == 3 * -(-len(train) // params.train.batch_size)
    _, epoch2, epoch3 = weights_at_validation
    final = trainable_state(clf)
    assert final.keys() == epoch2.keys() == before.keys()
    for name in final:
        assert torch.equal(final[name], epoch2[name]), name
    assert any(not torch.equal(final[n], epoch3[n]) for n in final)
    assert any(not torch.equal(final[n], before[n]) for n in final)


# ---------------------------------------------------------------------------------------------
# It learns

POSITIVE = "good great wonderful superb brilliant loved best beautiful".split()
NEGATIVE = "bad terrible awful boring worst hated dull painful".split()


def easy_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Texts of 3 to 8 clearly positive (label 1) or clearly negative (label 0) words."""
    rng = random.Random(seed)
    labels = np.array([i % 2 for i in range(n)], dtype=np.int64)
    texts = [" ".join(rng.choice(POSITIVE if y else NEGATIVE) for _ in range(rng.randint(3, 8)))
             for y in labels]
    return texts, labels


def test_learns_an_easy_task(tiny_dirs, data_dir, gpt2, accelerator):
    tok, collator = gpt2
    params, clf = classifier(tiny_dirs, data_dir, train={
        "epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.0})
    assert params.finetune.trainable_blocks == 2  # the project's default method
    train, val = (tokenize_split(tok, *easy_texts(n, seed), 64, "left", 0)
                  for n, seed in ((240, 0), (80, 1)))
    untrained = (predict_logits(clf, val, collator, 64, accelerator).argmax(1) == val.labels).mean()
    result = train_classifier(clf, train, val, collator, recipe(params, 64), accelerator,
                              log=lambda *a: None)
    trained = (predict_logits(clf, val, collator, 64, accelerator).argmax(1) == val.labels).mean()
    assert untrained < 0.75
    assert result.best_val_accuracy >= 0.9 and trained == pytest.approx(result.best_val_accuracy)
