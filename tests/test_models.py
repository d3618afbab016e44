"""The classifier of every family and method: what is trainable, what stays frozen (and out of the
autograd graph), pooling that ignores padding, save/load, and zero-shot scoring that equals the
causal LM's next-token logits."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tensors import batch_of, logits_of, run_params
from support.tiny_families import by_family
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from textclf.core.errors import ParamsError
from textclf.core.families import FAMILIES, checked_config_and_family, model_problems, resolve_model
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import (
    Classifier,
    base_model,
    blocks_of,
    build_classifier,
    load_backbone,
    load_model,
    parameter_counts,
    pool,
    save_model,
)
from textclf.modeling.inference import predict_logits, softmax
from textclf.modeling.model_info import TrainedModelInfo
from textclf.train.zero_shot import prompt_format, zero_shot_classifier

TEXTS = ["A wonderful film.", "Terrible, boring and far too long for what it is.", "Great.",
         "The acting is superb and the story kept me hooked until the very last scene."]
N_BLOCKS = 4  # the tiny models (tests/support/tiny.py)
FAMILY_NAMES = list(FAMILIES)  # each has a tiny model in tiny_dirs
CAUSAL = [name for name in FAMILY_NAMES if FAMILIES[name].causal]


def gpt2_block_params(d: int) -> int:
    """Parameters of one GPT-2 block of width d: ln_1, c_attn (QKV), attn c_proj, ln_2, c_fc
    (4d) and mlp c_proj, each with a bias."""
    return 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)


def build(tiny_dirs, data_dir, family: str, seed: int = 0, **overrides) -> Classifier:
    torch.manual_seed(seed)  # the head's initial weights
    return build_classifier(run_params(tiny_dirs[family], data_dir, **overrides),
                            FAMILIES[family], 2)


def tokenizer_of(tiny_dirs, family: str):
    return load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])


def text_batch(tiny_dirs, family: str, texts=TEXTS) -> dict[str, torch.Tensor]:
    tok = tokenizer_of(tiny_dirs, family)
    return batch_of(Collator(classifier_format(tok), tok.pad_id), tok.encode(texts))


def lora_names(clf: torch.nn.Module) -> list[str]:
    return [n for n, _ in clf.named_parameters() if "lora_" in n]


# ---------------------------------------------------------------------------------------------
# Trainable parameters

def test_tiny_gpt2_last_two_blocks_and_final_norm(tiny_dirs, data_dir):
    clf = build(tiny_dirs, data_dir, "gpt2")  # params.yaml: finetune.trainable_blocks 2
    d = 32
    assert gpt2_block_params(d) == 12_704
    counts = parameter_counts(clf)
    assert counts["trainable_backbone_params"] == 2 * 12_704 + 2 * d == 25_472
    assert counts["trainable_params"] == 25_472 + d * 2 + 2  # + the 2-class head
    trainable = {re.match(r"(h\.\d+|ln_f)\.", n).group(1)
                 for n, p in clf.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"h.2", "h.3", "ln_f"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("blocks", [1, 3, "all"])
def test_finetune_trains_the_last_blocks_and_final_norm(tiny_dirs, data_dir, family, blocks):
    clf = build(tiny_dirs, data_dir, family, finetune={"trainable_blocks": blocks})
    fam = FAMILIES[family]
    model = base_model(clf)
    first = 0 if blocks == "all" else N_BLOCKS - blocks
    expected = set()
    if blocks == "all":
        expected = {id(p) for p in model.parameters()}
    else:
        for block in blocks_of(model, fam)[first:]:
            expected |= {id(p) for p in block.parameters()}
        if fam.final_norm:
            expected |= {id(p) for p in model.get_submodule(fam.final_norm).parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == expected
    assert all(p.requires_grad for p in clf.head.parameters())
    assert clf.first_trainable_block == first


@pytest.mark.slow  # seconds: a git + DVC repository, or full-size weights
def test_full_size_gpt2_trainable_figure(tmp_path, data_dir):
    """The figure in docs/design.md: GPT-2 124M with the last 2 blocks and ln_f trainable has
    14,177,280 trainable parameters before the head (a random GPT2Config() model: no download)."""
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config()).save_pretrained(tmp_path / "gpt2-124m")
    params = run_params(tmp_path / "gpt2-124m", data_dir)
    assert params.finetune.trainable_blocks == 2
    clf = build_classifier(params, FAMILIES["gpt2"], 2)
    counts = parameter_counts(clf)
    assert 2 * gpt2_block_params(768) + 2 * 768 == 14_177_280
    assert counts["trainable_backbone_params"] == 14_177_280
    assert counts["trainable_params"] == 14_177_280 + 768 * 2 + 2
    assert counts["total_params"] == 124_439_808 + 768 * 2 + 2


# ---------------------------------------------------------------------------------------------
# LoRA

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_leaves_pretrained_weights_untouched_and_starts_as_a_no_op(tiny_dirs, data_dir,
                                                                        family):
    fam = FAMILIES[family]
    clf = build(tiny_dirs, data_dir, family, method="lora").eval()
    saved = AutoModel.from_pretrained(tiny_dirs[family], **dict(fam.base_kwargs)).state_dict()
    ours = {name.replace(".base_layer.", "."): value
            for name, value in base_model(clf).state_dict().items() if "lora_" not in name}
    assert ours.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(ours[name], value), name

    plain = Classifier(load_backbone(str(tiny_dirs[family]), fam), fam, 2, 0.1, 0).eval()
    plain.head.load_state_dict(clf.head.state_dict())
    batch = text_batch(tiny_dirs, family)
    torch.testing.assert_close(logits_of(clf, batch), logits_of(plain, batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("blocks", [1, 2, "all"])
def test_lora_adapters_only_in_the_last_blocks(tiny_dirs, data_dir, family, blocks):
    fam = FAMILIES[family]
    clf = build(tiny_dirs, data_dir, family, method="lora", lora={"trainable_blocks": blocks})
    names = lora_names(clf)
    block_of = re.compile(re.escape(fam.blocks) + r"\.(\d+)\.")
    found = {int(block_of.search(n).group(1)) for n in names}
    first = 0 if blocks == "all" else N_BLOCKS - blocks
    assert found == set(range(first, N_BLOCKS))
    targets = {n.split(".lora_")[0].rsplit(".", 1)[1] for n in names}
    assert targets == set(fam.lora_targets)
    # Only the adapters (and the head) train: every pretrained weight stays frozen
    trainable = {n for n, p in clf.backbone.named_parameters() if p.requires_grad}
    assert trainable == {n.removeprefix("backbone.") for n in names}


def test_lora_target_modules_param(tiny_dirs, data_dir):
    clf = build(tiny_dirs, data_dir, "bert", method="lora",
                lora={"target_modules": ["query", "key", "value"]})
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora_names(clf)} == \
        {"query", "key", "value"}


# ---------------------------------------------------------------------------------------------
# Frozen blocks: out of the autograd graph, and in eval mode while training

@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_frozen_blocks_are_outside_the_autograd_graph(tiny_dirs, data_dir, family, method):
    clf = build(tiny_dirs, data_dir, family, method=method).train()  # 2 of 4 blocks trained
    blocks = blocks_of(base_model(clf), FAMILIES[family])
    needs_grad = {}

    def hook(index):
        def record(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            needs_grad[index] = out.requires_grad
        return record

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(blocks)]
    batch = text_batch(tiny_dirs, family)
    clf(batch["input_ids"], batch["attention_mask"]).sum().backward()
    for handle in handles:
        handle.remove()
    assert needs_grad == {0: False, 1: False, 2: True, 3: True}


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_frozen_modules_stay_in_eval_mode_while_training(tiny_dirs, data_dir, family, method):
    fam = FAMILIES[family]
    clf = build(tiny_dirs, data_dir, family, method=method)
    model = base_model(clf)
    blocks = blocks_of(model, fam)
    frozen = [model.get_submodule(name) for name in fam.embeddings] + list(blocks[:2])
    for mode in (True, False, True):
        clf.train(mode)
        assert all(not m.training for module in frozen for m in module.modules())
        assert all(m.training == mode for block in blocks[2:] for m in block.modules())
        assert clf.dropout.training == mode and clf.training == mode


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_frozen_prefix_is_deterministic_while_training(tiny_dirs, data_dir, family, method):
    """Whatever the family table lists: in train mode the output of the last frozen block is the
    same on every forward (no dropout anywhere before it), while the trainable part's differs."""
    clf = build(tiny_dirs, data_dir, family, method=method).train()  # dropout 0.1 everywhere
    blocks = blocks_of(base_model(clf), FAMILIES[family])
    outputs = {1: [], 3: []}
    handles = [blocks[i].register_forward_hook(
        lambda module, inputs, output, i=i: outputs[i].append(
            (output[0] if isinstance(output, tuple) else output).detach().clone()))
        for i in outputs]
    batch = text_batch(tiny_dirs, family)
    with torch.no_grad():
        for _ in range(2):
            clf(batch["input_ids"], batch["attention_mask"])
    for handle in handles:
        handle.remove()
    assert torch.equal(*outputs[1])  # blocks 0 and 1 (and the embeddings) are frozen
    assert not torch.equal(*outputs[3])


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("blocks", [N_BLOCKS, "all"])
def test_frozen_embeddings_run_without_dropout_when_every_block_trains(tiny_dirs, data_dir,
                                                                        family, blocks):
    """trainable_blocks equal to the number of blocks trains every block but not the embeddings:
    they are frozen, so in train mode what they feed the first block is the same on every
    forward. 'all' trains the embeddings too, and their dropout (if any) stays on."""
    clf = build(tiny_dirs, data_dir, family, finetune={"trainable_blocks": blocks}).train()
    model = base_model(clf)
    fam = FAMILIES[family]
    embeddings = [model.get_submodule(name) for name in fam.embeddings]
    assert all(m.training == (blocks == "all") for module in embeddings for m in module.modules())
    first_block_inputs = []

    def record(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        first_block_inputs.append(hidden.detach().clone())

    handle = blocks_of(model, fam)[0].register_forward_pre_hook(record, with_kwargs=True)
    batch = text_batch(tiny_dirs, family)
    for _ in range(2):
        logits_of(clf, batch)
    handle.remove()
    # Llama-style decoders have no dropout on their embeddings: nothing to switch off
    dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0
                  for module in embeddings for m in module.modules())
    assert torch.equal(*first_block_inputs) == (blocks != "all" or not dropout)


# ---------------------------------------------------------------------------------------------
# Dropout off at evaluation

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dropout_is_off_at_evaluation(tiny_dirs, data_dir, family, accelerator):
    clf = build(tiny_dirs, data_dir, family, finetune={"trainable_blocks": "all"})
    batch = text_batch(tiny_dirs, family)
    clf.train()
    assert not torch.equal(logits_of(clf, batch), logits_of(clf, batch))  # dropout 0.1 is on
    clf.eval()
    eval_logits = logits_of(clf, batch)
    assert torch.equal(eval_logits, logits_of(clf, batch))

    tok = tokenizer_of(tiny_dirs, family)
    split = tokenize_split(tok, TEXTS, np.zeros(len(TEXTS), dtype=np.int64), 64, "left", 0)
    collator = Collator(classifier_format(tok), tok.pad_id)
    clf.train()
    first = predict_logits(clf, split, collator, 2, accelerator)
    second = predict_logits(clf, split, collator, 2, accelerator)
    assert clf.training  # predict_logits restores the mode it found
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, eval_logits.numpy(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Pooling: padding never changes an example's logits

@pytest.mark.parametrize("family", by_family(FAMILY_NAMES))
@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_padded_batch_equals_each_example_alone(tiny_dirs, data_dir, family, method):
    clf = build(tiny_dirs, data_dir, family, method=method).eval()
    with torch.no_grad():  # make the LoRA adapters do something
        for name, p in clf.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = text_batch(tiny_dirs, family)
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) >= 3  # padded differently (two may be as long)
    together = logits_of(clf, batch)
    for i, text in enumerate(TEXTS):
        alone = logits_of(clf, text_batch(tiny_dirs, family, [text]))
        torch.testing.assert_close(together[i:i + 1], alone, rtol=0, atol=1e-5)


def test_last_token_pooling_takes_the_last_real_token_with_padding_on_either_side():
    """Right padding (textclf's collator) and left padding (what decoders' generation uses)
    pool the same token: the rightmost position the mask keeps."""
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(pool(hidden, right, "last"), hidden[[0, 1], [2, 4]])
    assert torch.equal(pool(hidden, left, "last"), hidden[[0, 1], [4, 4]])


# ---------------------------------------------------------------------------------------------
# Save and reload

@pytest.mark.parametrize("family, method, merge_lora", by_family([
    (family, method, merge)
    for family in FAMILY_NAMES for method in ("finetune", "lora", "zero_shot")
    for merge in ((True, False) if method == "lora" else (True,))  # merging concerns LoRA only
    if FAMILIES[family].causal or method != "zero_shot"]))
def test_save_load_round_trip(tiny_dirs, data_dir, tmp_path, family, method, merge_lora):
    if method == "zero_shot":
        params = run_params(tiny_dirs[family], data_dir, method="zero_shot",
                            zero_shot={"calibrate": True})
        tok = tokenizer_of(tiny_dirs, family)
        clf, fmt, _ = zero_shot_classifier(params, FAMILIES[family], tok, 2)
    else:
        clf = build(tiny_dirs, data_dir, family, method=method,
                    finetune={"trainable_blocks": 3})
        fmt = classifier_format(tokenizer_of(tiny_dirs, family))
        with torch.no_grad():  # as if trained: every trainable weight moves
            for p in clf.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.1)
    clf.eval()
    tok = tokenizer_of(tiny_dirs, family)
    batch = batch_of(Collator(fmt, tok.pad_id), tok.encode(TEXTS))
    info = TrainedModelInfo(base_model=str(tiny_dirs[family]), base_revision=None, family=family,
                      method=method, label_names=["neg", "pos"], tokenizer=tok.name,
                      input_prefix=list(fmt.prefix), input_suffix=list(fmt.suffix),
                      pad_id=tok.pad_id, max_tokens=64, truncation="left", head_tokens=0)
    save_model(clf, tmp_path / "model", info)
    loaded, loaded_info = load_model(tmp_path / "model", merge_lora=merge_lora)
    assert loaded_info == info and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    atol = 1e-5 if method == "lora" and merge_lora else 0  # merging re-rounds the weights
    torch.testing.assert_close(logits_of(loaded, batch), logits_of(clf, batch), rtol=0,
                               atol=atol)


# ---------------------------------------------------------------------------------------------
# Zero-shot scoring

def zero_shot_setup(tiny_dirs, data_dir, family, calibrate):
    params = run_params(tiny_dirs[family], data_dir, method="zero_shot",
                        zero_shot={"calibrate": calibrate})
    tok = tokenizer_of(tiny_dirs, family)
    clf, fmt, content_free = zero_shot_classifier(params, FAMILIES[family], tok, 2)
    return params, tok, clf, fmt, content_free


def lm_answer_logits(family_dir, prompt: str) -> torch.Tensor:
    """The causal LM's next-token logits of ' Negative' and ' Positive' after `prompt`, as the
    model's own tokenizer encodes them (its special tokens, as Llama's <s>, included)."""
    hf = AutoTokenizer.from_pretrained(family_dir)
    lm = AutoModelForCausalLM.from_pretrained(family_dir).eval()
    answers = [hf(word, add_special_tokens=False)["input_ids"] for word in (" Negative",
                                                                             " Positive")]
    assert all(len(ids) == 1 for ids in answers), answers
    answers = [ids[0] for ids in answers]
    ids = torch.tensor([hf(prompt)["input_ids"]])
    with torch.no_grad():
        return lm(input_ids=ids).logits[0, -1, answers]


@pytest.mark.parametrize("family", CAUSAL)
def test_zero_shot_scores_are_the_lm_next_token_logits(tiny_dirs, data_dir, family):
    _, tok, clf, fmt, content_free = zero_shot_setup(tiny_dirs, data_dir, family, False)
    assert content_free is None and not clf.training
    assert parameter_counts(clf)["trainable_params"] == 0
    scores = logits_of(clf, batch_of(Collator(fmt, tok.pad_id), tok.encode(TEXTS)))
    for i, text in enumerate(TEXTS):
        expected = lm_answer_logits(tiny_dirs[family], f"Review: {text} Sentiment:")
        torch.testing.assert_close(scores[i], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", CAUSAL)
def test_calibration_divides_by_the_content_free_probabilities(tiny_dirs, data_dir, family):
    _, tok, plain, fmt, _ = zero_shot_setup(tiny_dirs, data_dir, family, False)
    _, _, calibrated, _, content_free = zero_shot_setup(tiny_dirs, data_dir, family, True)
    # By hand: the answer probabilities after "Review: N/A Sentiment:" (zero_shot.content_free)
    p_cf = torch.softmax(lm_answer_logits(tiny_dirs[family], "Review: N/A Sentiment:"), -1)
    np.testing.assert_allclose(content_free, p_cf.numpy(), rtol=0, atol=1e-6)

    batch = batch_of(Collator(fmt, tok.pad_id), tok.encode(TEXTS))
    p = softmax(logits_of(plain, batch).numpy())
    expected = p / p_cf.numpy()
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax(logits_of(calibrated, batch).numpy()), expected,
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Input length against the model's position limit (the tiny models have 512 positions)

POSITIONS = 512


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_max_tokens_beyond_the_position_limit_fails_before_any_weights(tiny_dirs, data_dir,
                                                                       family):
    fits = run_params(tiny_dirs[family], data_dir, data={"max_tokens": POSITIONS})
    assert checked_config_and_family(fits)[1] is FAMILIES[family]
    too_long = run_params(tiny_dirs[family], data_dir, data={"max_tokens": POSITIONS + 1})
    with pytest.raises(ParamsError) as error:
        checked_config_and_family(too_long)
    key = "n_positions" if family == "gpt2" else "max_position_embeddings"
    assert (f"data.max_tokens is {POSITIONS + 1}, but {str(tiny_dirs[family])!r} takes at most "
            f"{POSITIONS} tokens ({key} in its config): set data.max_tokens to at most "
            f"{POSITIONS}") in str(error.value)


@pytest.mark.parametrize("family", CAUSAL)
def test_zero_shot_counts_the_prompt_against_the_position_limit(tiny_dirs, data_dir, family):
    """The zero-shot input is data.max_tokens plus the prompt's words: with max_tokens at the
    limit it does not fit; the tokens the stage passes are what the scored inputs hold."""
    tok = tokenizer_of(tiny_dirs, family)
    params = run_params(tiny_dirs[family], data_dir, method="zero_shot",
                        data={"max_tokens": POSITIONS})
    fmt = prompt_format(tok, params.zero_shot.template)
    prompt = fmt.extra - tok.n_special  # what a stage passes as extra_tokens
    split = tokenize_split(tok, ["great " * 2 * POSITIONS], np.zeros(1, dtype=np.int64),
                           POSITIONS, "left", 0)
    assert len(fmt.apply(split.ids[0].tolist())) == POSITIONS + prompt
    config, fam = resolve_model(params.model)
    assert model_problems(params, config, fam) == []  # the text alone fits
    problems = model_problems(params, config, fam, extra_tokens=prompt)
    assert problems == [f"data.max_tokens is {POSITIONS} plus {prompt} of the zero-shot prompt, "
                        f"but {params.model!r} takes at most {POSITIONS} tokens "
                        f"({'n_positions' if family == 'gpt2' else 'max_position_embeddings'} "
                        f"in its config): set data.max_tokens to at most {POSITIONS - prompt}"]
    shorter = run_params(tiny_dirs[family], data_dir, method="zero_shot",
                         data={"max_tokens": POSITIONS - prompt})
    checked_config_and_family(shorter, extra_tokens=prompt)  # no error


def test_the_readme_and_params_yaml_list_every_family():
    """README's Models table: one row per family of the table, decoders first, with the
    table's LoRA targets, pooling and zero-shot answer."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Models", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| `")]
    assert sorted(row[0].strip("`") for row in rows) == sorted(FAMILIES)
    for name, _, pooling, targets, zero_shot in rows:
        family = FAMILIES[name.strip("`")]
        assert pooling == {"last": "last real token", "mean": "masked mean"}[family.pooling]
        assert [t.strip("` ") for t in targets.split("(")[0].split(",")] == \
            list(family.lora_targets)
        assert zero_shot == ("yes" if family.causal else "no")
    model_comment = (Path(__file__).parents[1] / "params.yaml").read_text().split("\nmodel:")[1]
    model_comment = model_comment.split("\nmodel_dtype:")[0]  # params.yaml names them too
    assert all(name in model_comment for name in FAMILIES)


@pytest.mark.parametrize("family", by_family(FAMILY_NAMES))
@pytest.mark.parametrize("method, model_dtype", [("finetune", "fp32"), ("lora", "fp32"),
                                                 ("finetune", "bf16")])
def test_scoring_in_bf16_casts_the_weights_once_with_the_same_logits(tiny_dirs, data_dir, family,
                                                                      method, model_dtype,
                                                                      monkeypatch):
    """Under bf16 autocast, predict_logits holds the base model's linear weights in bf16 for
    the split (cast once, not before every product): bit for bit the logits of autocast casting
    them itself (LoRA unmerged, as validation scores it; a bf16 frozen base), and every weight
    is the same tensor, unchanged, afterwards."""
    from textclf.modeling import inference
    from textclf.modeling.accelerator import make_accelerator

    clf = build(tiny_dirs, data_dir, family, method=method, model_dtype=model_dtype).eval()
    with torch.no_grad():  # make the LoRA adapters do something
        for name, p in clf.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    weights = {name: (p, p.data_ptr(), p.detach().clone()) for name, p in clf.named_parameters()}
    tok = tokenizer_of(tiny_dirs, family)
    split = tokenize_split(tok, TEXTS, np.zeros(len(TEXTS), dtype=np.int64), 64, "left", 0)
    collator = Collator(classifier_format(tok), tok.pad_id)
    bf16 = make_accelerator("bf16", "cpu")
    cast = []
    real = inference.products_in_bf16

    def counting(model, enabled):
        cast.append(enabled)
        return real(model, enabled)

    monkeypatch.setattr(inference, "products_in_bf16", counting)
    once = predict_logits(clf, split, collator, 2, bf16)
    monkeypatch.setattr(inference, "products_in_bf16", lambda model, enabled: real(model, False))
    every_product = predict_logits(clf, split, collator, 2, bf16)
    assert cast == [True]
    np.testing.assert_array_equal(once, every_product)
    for name, p in clf.named_parameters():
        param, storage, values = weights[name]
        assert p is param and p.data_ptr() == storage and torch.equal(p, values), name


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_scoring_in_bf16_leaves_the_weights_being_trained_alone(tiny_dirs, data_dir, method):
    """Validation inside training scores a model whose trained weights require gradients: their
    data stays the fp32 tensor DistributedDataParallel's hooks are bound to (swapping it broke
    the next step under two processes); only the frozen base's weights are held in bf16."""
    from textclf.modeling.inference import products_in_bf16

    clf = build(tiny_dirs, data_dir, "gpt2", method=method)
    trained = {n: p.data_ptr() for n, p in clf.backbone.named_parameters() if p.requires_grad}
    frozen = [p for p in clf.backbone.parameters() if not p.requires_grad and p.dim() == 2]
    assert trained and frozen
    with products_in_bf16(clf, True):
        for name, p in clf.backbone.named_parameters():
            if name in trained:
                assert p.data_ptr() == trained[name] and p.dtype == torch.float32, name
        assert any(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in frozen)
