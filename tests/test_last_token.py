"""The last-token block (textclf.modeling.last_token): GPT-2's and GPT-NeoX's last block computed
at the pooled token only gives the whole block's logits and gradients, in every way the
classifier runs it (fine-tuning, LoRA, bf16 weights, bf16 autocast, gradient checkpointing, the
frozen-block cache, zero-shot), and really computes one row per text past its key/value
projection."""

import contextlib
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from support import tiny
from support.tensors import run_params
from test_models import TEXTS, text_batch

from textclf.core.families import FAMILIES
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.classifier import Classifier, base_model, blocks_of, build_classifier
from textclf.train.frozen_cache import FrozenCache, cached_forward
from textclf.train.zero_shot import build_zero_shot

# Texts of different lengths: the batch is right-padded, so every row's last token is elsewhere
LONGER = TEXTS + ["Fine.", "Not my kind of film, though the music was lovely and the cast tried."]


# The models with a last-token block: tiny GPT-2, tiny GPT-NeoX (parallel residual, Pythia's) and
# tiny GPT-NeoX with the sequential residual; each model's family
MODELS = {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "gpt_neox_sequential": "gpt_neox"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """The tiny models without dropout: training-mode passes are then deterministic and
    comparable."""
    root = tmp_path_factory.mktemp("no_dropout")
    dirs = {name: tiny.tiny_model_dir(family, root / name, dropout=0.0)
            for name, family in MODELS.items()}
    config = json.loads((dirs["gpt_neox_sequential"] / "config.json").read_text())
    assert config["use_parallel_residual"]
    config["use_parallel_residual"] = False
    (dirs["gpt_neox_sequential"] / "config.json").write_text(json.dumps(config))
    return dirs


@pytest.fixture(scope="module")
def gpt2_dir(model_dirs):
    return model_dirs["gpt2"]


def build(model_dir, data_dir, family: str = "gpt2", **overrides) -> Classifier:
    torch.manual_seed(0)
    return build_classifier(run_params(model_dir, data_dir, **overrides), FAMILIES[family], 2)


@contextlib.contextmanager
def whole_last_block(clf: Classifier):
    """The classifier running its whole last block, as before the last-token block."""
    block = clf.last_token_block
    object.__setattr__(clf, "last_token_block", None)  # as Classifier holds it: no submodule
    try:
        yield
    finally:
        object.__setattr__(clf, "last_token_block", block)


@contextlib.contextmanager
def rows_into_mlp(clf: Classifier):
    """The shapes of the inputs of the last block's MLP, recorded while the block runs."""
    shapes = []
    block = blocks_of(base_model(clf), clf.family)[-1]
    handle = block.mlp.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape))
    try:
        yield shapes
    finally:
        handle.remove()


def batch(model_dir, family: str = "gpt2"):
    return text_batch({family: model_dir}, family, LONGER)


def logits_both_ways(clf: Classifier, b: dict, autocast: bool = False):
    """(last-token block's logits, whole block's logits, the MLP's input shapes of the first)."""
    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
           else contextlib.nullcontext())
    with torch.no_grad(), amp:
        with rows_into_mlp(clf) as shapes:
            fast = clf(b["input_ids"], b["attention_mask"]).float()
        with whole_last_block(clf):
            whole = clf(b["input_ids"], b["attention_mask"]).float()
    return fast, whole, shapes


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["finetune", "lora"])
@pytest.mark.parametrize("model_dtype", ["fp32", "bf16"])
def test_the_last_token_block_scores_as_the_whole_block(model_dirs, data_dir, model, method,
                                                        model_dtype):
    family = MODELS[model]
    clf = build(model_dirs[model], data_dir, family, method=method,
                model_dtype=model_dtype).eval()
    b = batch(model_dirs[model], family)
    assert (b["attention_mask"] == 0).any()  # padded rows are in the batch
    fast, whole, shapes = logits_both_ways(clf, b)
    assert shapes == [torch.Size([len(LONGER), 32])]  # one row per text, not texts x tokens
    tolerance = 1e-5 if model_dtype == "fp32" else 2e-2
    torch.testing.assert_close(fast, whole, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("model", MODELS)
def test_under_bf16_autocast_the_last_token_block_agrees_within_bf16(model_dirs, data_dir, model):
    clf = build(model_dirs[model], data_dir, MODELS[model]).eval()
    fast, whole, _ = logits_both_ways(clf, batch(model_dirs[model], MODELS[model]), autocast=True)
    torch.testing.assert_close(fast, whole, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("model", MODELS)
def test_left_padding_pools_the_rightmost_real_token(model_dirs, data_dir, model):
    clf = build(model_dirs[model], data_dir, MODELS[model]).eval()
    b = batch(model_dirs[model], MODELS[model])
    # move each row's padding to its left: the same tokens, their last one at the end
    ids, mask = b["input_ids"].clone(), b["attention_mask"].clone()
    for row in range(len(ids)):
        n = int(mask[row].sum())
        ids[row] = torch.cat([ids[row, n:], ids[row, :n]])
        mask[row] = torch.cat([mask[row, n:], mask[row, :n]])
    fast, whole, _ = logits_both_ways(clf, {"input_ids": ids, "attention_mask": mask})
    torch.testing.assert_close(fast, whole, atol=1e-5, rtol=1e-5)


def gradients(clf: Classifier, b: dict, whole: bool) -> dict[str, torch.Tensor]:
    clf.train()
    clf.zero_grad(set_to_none=True)
    with whole_last_block(clf) if whole else contextlib.nullcontext():
        logits = clf(b["input_ids"], b["attention_mask"])
    F.cross_entropy(logits, torch.tensor([0, 1] * (len(LONGER) // 2))).backward()
    return {n: p.grad.clone() for n, p in clf.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("overrides", [
    {"method": "finetune"},
    {"method": "lora", "lora": {"dropout": 0.0}},
    {"method": "finetune", "train": {"gradient_checkpointing": True}},
], ids=["finetune", "lora", "checkpointed"])
def test_the_last_token_block_trains_as_the_whole_block(model_dirs, data_dir, model, overrides):
    overrides = dict(overrides)
    clf = build(model_dirs[model], data_dir, MODELS[model],
                train={"head_dropout": 0.0, **overrides.pop("train", {})}, **overrides)
    b = batch(model_dirs[model], MODELS[model])
    fast, whole = gradients(clf, b, whole=False), gradients(clf, b, whole=True)
    assert fast.keys() == whole.keys() and fast
    for name in fast:
        torch.testing.assert_close(fast[name], whole[name], atol=1e-5, rtol=1e-4, msg=name)


def test_training_on_the_frozen_block_cache_uses_the_last_token_block(gpt2_dir, data_dir):
    from textclf.core.tokenization import TokenizedSplit
    from textclf.modeling.batching import Collator

    clf = build(gpt2_dir, data_dir).eval()
    b = batch(gpt2_dir)
    lengths = b["attention_mask"].sum(1)
    split = TokenizedSplit([row[:n].numpy() for row, n in zip(b["input_ids"], lengths)],
                           torch.zeros(len(lengths), dtype=torch.long).numpy(),
                           lengths.numpy())
    collator = Collator(tiny_format(), pad_id=int(b["input_ids"][0, -1]))
    cache = FrozenCache.compute(clf, split, collator, 4, make_accelerator("fp32", "cpu"))
    forward = cached_forward(clf, clf, cache)
    with torch.no_grad(), rows_into_mlp(clf) as shapes:
        cached = forward(collator([(i, ids, 0) for i, ids in enumerate(split.ids)]))
    assert shapes == [torch.Size([len(LONGER), 32])]
    _, whole, _ = logits_both_ways(clf, b)
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)


def tiny_format():
    from textclf.core.tokenization import InputFormat

    return InputFormat((), ())


def test_zero_shot_scores_through_the_last_token_block(gpt2_dir, data_dir):
    clf = build_zero_shot(str(gpt2_dir), FAMILIES["gpt2"], [5, 7]).eval()
    assert clf.last_token_block is not None
    fast, whole, shapes = logits_both_ways(clf, batch(gpt2_dir))
    assert shapes == [torch.Size([len(LONGER), 32])]
    torch.testing.assert_close(fast, whole, atol=1e-5, rtol=1e-5)


def test_other_models_and_heads_run_the_whole_last_block(tiny_dirs, gpt2_dir, data_dir):
    assert build(gpt2_dir, data_dir, train={"head": "attention"}).last_token_block is None
    for family in ("bert", "llama"):
        torch.manual_seed(0)
        clf = build_classifier(run_params(tiny_dirs[family], data_dir), FAMILIES[family], 2)
        assert clf.last_token_block is None


def test_the_block_is_no_second_submodule_and_a_deep_copy_has_its_own(gpt2_dir, data_dir):
    clf = build(gpt2_dir, data_dir).eval()
    assert not any(key.startswith("last_token_block.") for key in clf.state_dict())
    twin = copy.deepcopy(clf)
    assert twin.last_token_block is blocks_of(base_model(twin), twin.family)[-1]
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.5)
    b = batch(gpt2_dir)
    fast, whole, shapes = logits_both_ways(twin, b)
    assert shapes == [torch.Size([len(LONGER), 32])]
    torch.testing.assert_close(fast, whole, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast, logits_both_ways(clf, b)[0])


def test_a_direct_call_of_the_base_model_runs_the_whole_block(gpt2_dir, data_dir):
    """Outside the classifier's forward the block is GPT-2's: every position computed."""
    clf = build(gpt2_dir, data_dir).eval()
    b = batch(gpt2_dir)
    with torch.no_grad(), rows_into_mlp(clf) as shapes:
        clf.backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    assert shapes == [b["input_ids"].shape + (32,)]


def test_the_model_holds_no_state_while_it_scores(gpt2_dir, data_dir):
    """A call nested inside another (as a second thread's can interleave with it) scores as it
    does alone, and so does the call around it: what the last block computes at travels with
    the call, not on the model."""
    clf = build(gpt2_dir, data_dir).eval()
    b, first_rows = batch(gpt2_dir), slice(0, 2)
    with torch.no_grad():
        alone = clf(b["input_ids"], b["attention_mask"])
        alone_inner = clf(b["input_ids"][first_rows, :6], b["attention_mask"][first_rows, :6])
        inner, calls = [], []

        def nested(module, args, output):
            calls.append(1)
            if len(calls) == 1:  # once, inside the call around it
                inner.append(clf(b["input_ids"][first_rows, :6],
                                 b["attention_mask"][first_rows, :6]))

        handle = blocks_of(base_model(clf), clf.family)[0].register_forward_hook(nested)
        try:
            around = clf(b["input_ids"], b["attention_mask"])
        finally:
            handle.remove()
    torch.testing.assert_close(inner[0], alone_inner, rtol=0, atol=0)
    torch.testing.assert_close(around, alone, rtol=0, atol=0)


def test_threads_sharing_the_model_score_as_one(gpt2_dir, data_dir):
    from concurrent.futures import ThreadPoolExecutor

    clf = build(gpt2_dir, data_dir).eval()
    b = batch(gpt2_dir)
    batches = [(b["input_ids"][:n, :w], b["attention_mask"][:n, :w])
               for n, w in ((6, 30), (2, 8), (4, 20), (3, 12))] * 5
    with torch.no_grad():
        alone = [clf(ids, mask) for ids, mask in batches]
        with ThreadPoolExecutor(max_workers=4) as pool:
            shared = list(pool.map(lambda x: clf(*x), batches))
    for one, other in zip(alone, shared):
        torch.testing.assert_close(other, one, rtol=0, atol=0)
