"""The two memory knobs of larger models: `model_dtype` (the frozen weights in bf16, what is
trained in fp32) and `train.gradient_checkpointing` (the trained blocks recompute their
activations in backward). Neither may change what is computed beyond its stated tolerance."""

import pytest
import torch
import torch.nn.functional as F
from support.tensors import PARAMS_YAML, batch_of, logits_of, run_params
from support.tiny_families import by_family

from textclf.core.families import FAMILIES
from textclf.core.params import ParamsError, load_params
from textclf.core.tokenization import classifier_format, load_tokenizer
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import (
    base_model,
    blocks_of,
    build_classifier,
    load_model,
    save_model,
)
from textclf.modeling.last_token import SUPPORTED
from textclf.modeling.model_info import INFO_FILE, TrainedModelInfo
from textclf.train.frozen_cache import (
    FrozenCache,
    cached_forward,
    estimated_cache_bytes,
    frozen_prefix,
)
from textclf.train.loop import make_optimizer
from textclf.train.zero_shot import zero_shot_classifier

TEXTS = ["A wonderful film, I loved every minute of it.", "Terrible and far too long.",
         "Great.", "The acting is superb and the story kept me hooked to the very end."]
LABELS = torch.tensor([1, 0, 1, 1])
CASES = [(family, method) for family in FAMILIES for method in ("finetune", "lora")]
# One of each kind (GPT-2's Conv1D, BERT, a Llama-style decoder, ModernBERT's fused Wqkv) for
# what the family table does not change (reloading, the frozen-block cache's dtype)
FEW_CASES = [(family, method) for family, method in CASES
             if family in ("gpt2", "bert", "llama", "modernbert")]
# bf16 keeps 8 bits of mantissa: each frozen weight and activation is rounded by up to 2^-9
# (0.2%) of itself. Through the tiny models' embeddings and 2 frozen blocks that moves their
# logits (of order 1) by at most ~9e-3 (measured: 1e-3 to 9e-3 over gpt2, bert, gpt_neox);
# 2e-2 leaves room for other seeds, and a wrong cast (a bf16 head, bf16 trained blocks or
# fp16) is far outside it.
BF16_LOGITS_ATOL = 2e-2


def setup(tiny_dirs, data_dir, family, method, seed=0, **overrides):
    """A classifier of the tiny model (head seeded) and a batch of TEXTS."""
    params = run_params(tiny_dirs[family], data_dir, method=method, **overrides)
    torch.manual_seed(seed)
    clf = build_classifier(params, FAMILIES[family], 2)
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    batch = batch_of(Collator(classifier_format(tok), tok.pad_id), tok.encode(TEXTS))
    return clf, tok, batch


def adapters_moved(clf):
    """LoRA starts as a no-op (B = 0): give the adapters something to do."""
    with torch.no_grad():
        for name, p in clf.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def train_step(clf, batch, dropout_seed=1):
    """One AdamW step in train mode (dropout on, seeded); the loss and the gradients."""
    optimizer = make_optimizer(clf, 1e-3, 0.01, fused=False)
    clf.train()
    torch.manual_seed(dropout_seed)
    loss = F.cross_entropy(clf(batch["input_ids"], batch["attention_mask"]).float(), LABELS)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in clf.named_parameters() if p.requires_grad}
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach(), grads


# ---------------------------------------------------------------------------------------------
# train.gradient_checkpointing

@pytest.mark.parametrize("family, method", by_family(CASES))
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_dirs, data_dir, family,
                                                                  method):
    """With dropout on (blocks 0.1, LoRA 0.05, head 0.1): the recomputation replays the RNG, so
    loss and gradients agree to 1e-6 (they are in fact bit-identical on the CPU); and the trained
    blocks really are recomputed: their attention runs twice per step, the frozen ones' once (and
    GPT-2's last-token block's once: it is not checkpointed)."""
    results = []
    for checkpointing in (False, True):
        clf, _, batch = setup(tiny_dirs, data_dir, family, method,
                              train={"gradient_checkpointing": checkpointing})
        if method == "lora":
            adapters_moved(clf)
        calls = []
        blocks = blocks_of(base_model(clf), FAMILIES[family])
        for i, block in enumerate(blocks):
            attention = next(getattr(block, name) for name in ("attn", "attention", "self_attn")
                             if hasattr(block, name))
            if block is clf.last_token_block:  # runs its attention's projection, not the module
                attention = block.get_submodule(SUPPORTED[family].per_token[1])
            attention.register_forward_hook(lambda *a, i=i, calls=calls: calls.append(i))
        results.append(train_step(clf, batch))
        # the last-token block is not checkpointed (textclf.modeling.last_token)
        last = [] if clf.last_token_block is not None else [3]
        assert sorted(calls) == ([0, 1, 2, 2, 3, *last] if checkpointing else [0, 1, 2, 3])
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=1e-6)
    assert grads.keys() == checkpointed_grads.keys() and grads
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name  # every trained parameter is reached
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_gradient_checkpointing_leaves_validation_alone(tiny_dirs, data_dir):
    clf, _, batch = setup(tiny_dirs, data_dir, "gpt2", "finetune",
                          train={"gradient_checkpointing": True})
    plain, _, _ = setup(tiny_dirs, data_dir, "gpt2", "finetune")
    clf.eval(), plain.eval()
    assert torch.equal(logits_of(clf, batch), logits_of(plain, batch))


# ---------------------------------------------------------------------------------------------
# model_dtype

@pytest.mark.parametrize("family, method", by_family(CASES))
def test_bf16_base_keeps_frozen_weights_in_bf16_and_trains_fp32_ones(tiny_dirs, data_dir,
                                                                     family, method):
    fp32, _, batch = setup(tiny_dirs, data_dir, family, method)
    bf16, _, _ = setup(tiny_dirs, data_dir, family, method, model_dtype="bf16")
    frozen = {n: p.dtype for n, p in bf16.named_parameters() if not p.requires_grad}
    trained = {n: p.dtype for n, p in bf16.named_parameters() if p.requires_grad}
    assert frozen and set(frozen.values()) == {torch.bfloat16}
    assert trained and set(trained.values()) == {torch.float32}
    assert any(n.startswith("head.") for n in trained)
    # what is trained starts from the checkpoint's exact fp32 values
    weights = dict(fp32.named_parameters())
    for name, p in bf16.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, weights[name]), name
    # the same model up to bf16 rounding of the frozen part (but rounded: the knob acts)
    fp32.eval(), bf16.eval()
    difference = (logits_of(bf16, batch) - logits_of(fp32, batch)).abs().max().item()
    assert 0 < difference <= BF16_LOGITS_ATOL
    # a training step: fp32 gradients, every trained weight moves, frozen ones do not
    before = {n: p.detach().clone() for n, p in bf16.named_parameters()}
    loss, grads = train_step(bf16, batch)
    assert torch.isfinite(loss)
    assert {g.dtype for g in grads.values()} == {torch.float32}
    for name, p in bf16.named_parameters():
        assert p.dtype == before[name].dtype, name
        assert torch.equal(p, before[name]) != p.requires_grad, name


@pytest.mark.parametrize("method", ["finetune", "zero_shot"])
def test_a_checkpoint_saved_in_fp16_loads_as_model_dtype_says(tiny_dirs, data_dir, tmp_path,
                                                              method):
    """EleutherAI/pythia-70m's config names float16: transformers loads a checkpoint in the
    dtype its config names unless told otherwise. model_dtype fp32 (the default) loads every
    weight in fp32."""
    import shutil

    from transformers import AutoModelForCausalLM

    fp16_dir = tmp_path / "pythia_fp16"
    shutil.copytree(tiny_dirs["gpt_neox"], fp16_dir)
    AutoModelForCausalLM.from_pretrained(fp16_dir, dtype=torch.float16).save_pretrained(fp16_dir)
    assert '"float16"' in (fp16_dir / "config.json").read_text()
    params = run_params(fp16_dir, data_dir, method=method)
    tok = load_tokenizer(str(fp16_dir), FAMILIES["gpt_neox"])
    clf = (zero_shot_classifier(params, FAMILIES["gpt_neox"], tok, 2)[0] if method == "zero_shot"
           else build_classifier(params, FAMILIES["gpt_neox"], 2))
    assert {p.dtype for p in clf.parameters()} == {torch.float32}


def test_bf16_zero_shot_scores_as_the_fp32_model(tiny_dirs, data_dir):
    scores = {}
    for dtype in ("fp32", "bf16"):
        params = run_params(tiny_dirs["gpt2"], data_dir, method="zero_shot", model_dtype=dtype)
        tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
        clf, fmt, _ = zero_shot_classifier(params, FAMILIES["gpt2"], tok, 2)
        assert {p.dtype for p in clf.backbone.parameters()} == {getattr(torch, {
            "fp32": "float32", "bf16": "bfloat16"}[dtype])}
        assert clf.head.weight.dtype == torch.float32
        scores[dtype] = logits_of(clf, batch_of(Collator(fmt, tok.pad_id), tok.encode(TEXTS)))
    difference = (scores["bf16"] - scores["fp32"]).abs().max().item()
    assert 0 < difference <= BF16_LOGITS_ATOL


def model_info(tiny_dirs, family, method, tok, model_dtype):
    fmt = classifier_format(tok)
    return TrainedModelInfo(
        base_model=str(tiny_dirs[family]), base_revision=None, family=family, method=method,
        label_names=["neg", "pos"], tokenizer=tok.name, input_prefix=list(fmt.prefix),
        input_suffix=list(fmt.suffix), pad_id=tok.pad_id, max_tokens=64, truncation="left",
        head_tokens=0, model_dtype=model_dtype)


@pytest.mark.parametrize("family, method", FEW_CASES)
def test_a_bf16_model_reloads_in_its_dtypes_and_scores_as_at_the_end_of_training(
        tiny_dirs, data_dir, tmp_path, family, method):
    """What evaluate and predict load (load_model, default merge_lora) is the trained model:
    the same dtype for every weight and the same logits, to the bit. (A LoRA update merged into
    bf16 weights would be rounded away: bf16 adapters stay unmerged.)"""
    clf, tok, batch = setup(tiny_dirs, data_dir, family, method, model_dtype="bf16")
    if method == "lora":
        adapters_moved(clf)
    train_step(clf, batch)
    clf.eval()
    save_model(clf, tmp_path / "model", model_info(tiny_dirs, family, method, tok, "bf16"))
    loaded, info = load_model(tmp_path / "model")
    assert info.model_dtype == "bf16"
    assert {n: p.dtype for n, p in loaded.named_parameters()} == \
        {n: p.dtype for n, p in clf.named_parameters()}
    assert torch.equal(logits_of(loaded, batch), logits_of(clf, batch))


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_the_export_loads_a_bf16_run_as_a_plain_fp32_model(tiny_dirs, data_dir, tmp_path,
                                                           method):
    """load_model(fp32=True), what the export stage writes: every weight fp32 (the frozen ones
    bf16-rounded as trained, upcast exactly), LoRA merged; it scores as the trained model within
    the bf16 tolerance (its frozen part now computes in fp32)."""
    clf, tok, batch = setup(tiny_dirs, data_dir, "gpt2", method, model_dtype="bf16")
    if method == "lora":
        adapters_moved(clf)
    clf.eval()
    save_model(clf, tmp_path, model_info(tiny_dirs, "gpt2", method, tok, "bf16"))
    loaded, _ = load_model(tmp_path, fp32=True)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert not [n for n, _ in loaded.named_parameters() if "lora_" in n]
    torch.testing.assert_close(logits_of(loaded, batch), logits_of(clf, batch), rtol=0,
                               atol=BF16_LOGITS_ATOL)


def test_a_model_saved_before_the_knob_loads_in_fp32(tiny_dirs, data_dir, tmp_path):
    import json

    clf, tok, batch = setup(tiny_dirs, data_dir, "gpt2", "finetune")
    save_model(clf, tmp_path, model_info(tiny_dirs, "gpt2", "finetune", tok, "fp32"))
    raw = json.loads((tmp_path / INFO_FILE).read_text())
    del raw["model_dtype"]
    (tmp_path / INFO_FILE).write_text(json.dumps(raw))
    loaded, info = load_model(tmp_path)
    assert info.model_dtype == "fp32"
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


@pytest.mark.parametrize("family, method", FEW_CASES)
def test_the_frozen_block_cache_stays_exact_with_a_bf16_base(tiny_dirs, data_dir, family,
                                                              method):
    """The cache holds the bf16 states the frozen blocks hand over (cast to fp32 by the first
    trained block, after the cache feeds it): its size is the estimate's, 2 bytes a value, and a
    training step on it equals one without it, to the bit."""
    results = []
    for use_cache in (False, True):
        clf, _, batch = setup(tiny_dirs, data_dir, family, method, model_dtype="bf16")
        if method == "lora":
            adapters_moved(clf)
        cache = None
        if use_cache:
            clf.eval()
            cache = FrozenCache(list(frozen_prefix(clf, batch["input_ids"],
                                                   batch["attention_mask"])))
            assert cache.states[0].dtype == torch.bfloat16
        optimizer = make_optimizer(clf, 1e-3, 0.01, fused=False)
        clf.train()
        torch.manual_seed(1)  # the same dropout masks in the trainable blocks
        logits = cached_forward(clf, clf, cache)(batch)
        F.cross_entropy(logits, LABELS).backward()
        optimizer.step()
        results.append((logits.detach(), {n: p.detach().clone() for n, p in
                                          clf.named_parameters() if p.requires_grad}))
    (full_logits, full_weights), (cached_logits, cached_weights) = results
    assert torch.equal(full_logits, cached_logits)
    for name in full_weights:
        assert torch.equal(full_weights[name], cached_weights[name]), name


@pytest.mark.parametrize("model_dtype, element", [("fp32", 4), ("bf16", 2)])
def test_the_cache_estimate_is_exact_in_each_dtype(tiny_dirs, data_dir, accelerator,
                                                   model_dtype, element):
    from textclf.core.tokenization import tokenize_split

    clf, tok, _ = setup(tiny_dirs, data_dir, "gpt2", "finetune", model_dtype=model_dtype)
    collator = Collator(classifier_format(tok), tok.pad_id)
    split = tokenize_split(tok, TEXTS, LABELS.numpy(), 64, "left", 0)
    clf.eval()
    cache = FrozenCache.compute(clf, split, collator, 2, accelerator)
    estimate = estimated_cache_bytes(clf, [split], collator.fmt.extra)
    assert cache.nbytes == estimate
    assert estimate == (split.lengths.sum() + collator.fmt.extra * len(TEXTS)) * 32 * element


# ---------------------------------------------------------------------------------------------
# Validation

@pytest.mark.parametrize("overrides, expected", [
    ({"model_dtype": "fp16"}, "model_dtype must be one of 'fp32', 'bf16', got 'fp16'"),
    ({"model_dtype": "auto"}, "model_dtype must be one of 'fp32', 'bf16', got 'auto'"),
    ({"train": {"gradient_checkpointing": "yes"}},
     "train.gradient_checkpointing must be true or false, got 'yes'"),
])
def test_a_bad_value_is_one_error_line(overrides, expected):
    with pytest.raises(ParamsError) as error:
        load_params(PARAMS_YAML, overrides)
    lines = str(error.value).splitlines()
    assert lines[0].startswith("invalid ") and lines[1:] == [f"  - {expected}"]


def test_the_defaults_are_the_measured_setup():
    params = load_params(PARAMS_YAML)
    assert params.model_dtype == "fp32" and params.train.gradient_checkpointing is False
