"""The frozen-prefix cache (train.cache_frozen): training on the cached output of the frozen
blocks is the same computation as training the full model."""

import contextlib

import pytest
import torch
from support import tiny
from support.tiny_families import by_family

from textclf.core.families import FAMILIES, checked_config_and_family
from textclf.core.params import parse_params
from textclf.core.prepared_data import load_prepared
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator, sorted_batches
from textclf.modeling.classifier import build_classifier
from textclf.train import frozen_cache, loop
from textclf.train.frozen_cache import (
    CACHE_MEMORY_SHARE,
    CachePlacement,
    FrozenCache,
    cached_forward,
    choose_placement,
    estimated_cache_bytes,
    frozen_prefix,
    host_available_bytes,
    placement_for,
    skipping_frozen_blocks,
)
from textclf.train.loop import Recipe, make_optimizer, train_classifier

GB = 10**9
FIRST_FAMILIES = ("gpt2", "bert", "gpt_neox")  # the families every combination is tried on


def classifier(tiny_dirs, data_dir, family, method, head="linear"):
    params = parse_params(tiny.tiny_params(tiny_dirs[family], data_dir, method=method,
                                           train={"head": head}))
    _, fam = checked_config_and_family(params)
    torch.manual_seed(0)
    return params, build_classifier(params, fam, 2)


@pytest.mark.parametrize("method", ["finetune", "lora"])
@pytest.mark.parametrize("family, head", by_family([  # the attention head (after the cache) is
    (family, head) for family in FAMILIES for head in ("linear", "attention")  # one module for
    if head == "linear" or family in FIRST_FAMILIES]))  # every family: tried on three
def test_a_training_step_on_the_cache_equals_one_on_the_full_model(tiny_dirs, data_dir, family,
                                                                    method, head):
    ids = torch.tensor([[5, 17, 33, 41, 9, 12, 60, 7], [8, 21, 14, 3, 0, 0, 0, 0]])
    mask = (torch.arange(8) < torch.tensor([[8], [4]])).long()
    labels = torch.tensor([1, 0])
    results = []
    for use_cache in (False, True):
        _, clf = classifier(tiny_dirs, data_dir, family, method, head)
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
    for i, block in enumerate(clf.backbone.h):  # the blocks' first layer: computed or not
        block.ln_1.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    prefix = frozen_prefix(clf, ids, mask)
    assert calls == [0, 1]  # stops before the first trainable block (of 4, last 2 trainable)
    calls.clear()
    with skipping_frozen_blocks(clf, prefix):
        clf(ids, mask)
    assert calls == [2, 3]


@pytest.fixture(scope="module")
def prepared_gpt2(tiny_dirs, data_dir, tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("prepared")
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny.tiny_params(tiny_dirs["gpt2"], data_dir)))
    tiny.run_stages(root, params_file, stages=("prepare",))
    return load_prepared(root / "data" / "prepared")


def forced(where: str):
    """choose_placement as if memory had decided `where` for auto and true (a CPU-only machine
    never picks host: its device is the host)."""
    def choose(cache_frozen, *args, **kwargs):
        if cache_frozen is False:
            return CachePlacement("off", "train.cache_frozen is false")
        return CachePlacement(where, f"forced {where} by the test")

    return choose


@pytest.mark.parametrize("setting, where", [
    (True, "device"),   # true = on the device
    ("auto", "device"),  # the tiny cache fits
    ("auto", "host"),   # states in host memory, gathered per batch
    ("auto", "off"),    # nothing fits: the same model, every step through the frozen blocks
])
def test_training_with_the_cache_gives_the_same_model(tiny_dirs, data_dir, prepared_gpt2,
                                                      monkeypatch, setting, where):
    prepared = prepared_gpt2
    if (setting, where) != ("auto", "device"):
        monkeypatch.setattr(loop, "choose_placement", forced(where))
    weights = []
    for cache in (False, setting):
        raw = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, train={"cache_frozen": cache})
        params = parse_params(raw)
        _, fam = checked_config_and_family(params)
        torch.manual_seed(0)
        clf = build_classifier(params, fam, 2)
        tokenizer = load_tokenizer(params.model, fam)
        collator = Collator(classifier_format(tokenizer), tokenizer.pad_id)
        result = train_classifier(clf, prepared.train, prepared.val, collator,
                                  Recipe(params.train, params.learning_rate, 8, params.seed),
                                  make_accelerator("fp32"), log=lambda *a: None)
        weights.append(({n: p.detach().clone() for n, p in clf.named_parameters()},
                        result.history))
        assert result.frozen_cache == (where if cache == setting else "off")
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


class CpuFp32(CpuBf16):
    mixed_precision = "no"

    @staticmethod
    def autocast():
        return contextlib.nullcontext()


@pytest.mark.parametrize("method", ["finetune", "lora"])
@pytest.mark.parametrize("family, accelerator, where", [
    pytest.param(family, accelerator, where, id=f"{family}-{precision}-{where}")
    for family in FAMILIES for accelerator, precision in ((CpuFp32, "fp32"), (CpuBf16, "bf16"))
    for where in ("device", "host")
    # the placements and precisions are the same code for every family (each family's cache
    # is exact: test_a_training_step_on_the_cache_equals_one_on_the_full_model); Llama-style
    # decoders and ModernBERT (rotary tables computed beside the embeddings) in bf16 too
    if family in FIRST_FAMILIES or (family in ("llama", "modernbert") and where == "host")])
def test_the_cache_is_exact_in_each_precision_and_placement(tiny_dirs, data_dir, family, method,
                                                             accelerator, where):
    """The cache holds what the uncached forward feeds the first trainable block (under bf16
    autocast: the fp32 residual stream), wherever it is kept, so logits, loss and the updated
    weights agree as in fp32 (a bf16 copy of the states would not: it rounds them)."""
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
        cache = (FrozenCache.compute(clf, split, collator, len(texts), accelerator(),
                                     where=where) if use_cache else None)
        assert cache is None or cache.states[0].dtype == torch.float32
        with torch.no_grad(), accelerator.autocast():
            eval_logits = cached_forward(clf, clf, cache)(batch).float()
        clf.train()
        torch.manual_seed(1)  # the same dropout masks in the trainable blocks
        with accelerator.autocast():
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


@pytest.mark.gpu
def test_host_placement_on_a_gpu_keeps_states_on_the_host_and_batches_on_the_gpu(tiny_dirs,
                                                                                  data_dir):
    class Cuda(CpuFp32):
        device = torch.device("cuda")

    tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
    collator = Collator(classifier_format(tok), tok.pad_id)
    split = tokenize_split(tok, ["Great.", "Terrible and far too long."], [1, 0], 64, "left", 0)
    _, clf = classifier(tiny_dirs, data_dir, "gpt2", "finetune")
    clf = clf.cuda().eval()
    on_device, on_host = (FrozenCache.compute(clf, split, collator, 2, Cuda(), where=where)
                          for where in ("device", "host"))
    assert on_device.states[0].is_cuda and not on_host.states[0].is_cuda
    index = torch.tensor([1, 0])
    assert on_host.batch(index, 16).is_cuda
    assert torch.equal(on_host.batch(index, 16), on_device.batch(index, 16))


# ---------------------------------------------------------------------------------------------
# Where train.cache_frozen puts the cache

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("setting, estimated, device, device_free, host_free, expected", [
    (False, 1 * GB, CPU, 100 * GB, 100 * GB, "off"),
    (True, 90 * GB, CPU, 10 * GB, 10 * GB, "device"),  # true: on the device, fits or not
    ("auto", 5 * GB, CPU, 10 * GB, 10 * GB, "device"),  # exactly the share: fits
    ("auto", 6 * GB, CPU, 10 * GB, 10 * GB, "off"),  # a CPU's device is the host: no host step
    ("auto", 1 * GB, CUDA, 40 * GB, 100 * GB, "device"),
    ("auto", 30 * GB, CUDA, 40 * GB, 100 * GB, "host"),
    ("auto", 30 * GB, CUDA, 40 * GB, 50 * GB, "off"),
    ("auto", 1 * GB, CPU, None, None, "off"),  # free memory unknown: not cached
])
def test_placement_rule(setting, estimated, device, device_free, host_free, expected):
    assert CACHE_MEMORY_SHARE == 0.5  # the figures above assume it
    placement = placement_for(setting, estimated, device, device_free, host_free)
    assert placement.where == expected
    assert placement.reason  # the log line and run.json say why


def test_the_reason_names_the_sizes():
    placement = placement_for("auto", 30 * GB, CUDA, 40 * GB, 100 * GB)
    assert placement.reason == ("auto: estimated 30.00 GB is over 50% of the 40.00 GB free on "
                                "cuda, fits in 50% of the host's 100.00 GB")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_estimate_is_the_size_the_cache_has(tiny_dirs, data_dir, family):
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    fmt = classifier_format(tok)
    texts = ["A wonderful film.", "Terrible and far too long, I left early.", "Great."]
    split = tokenize_split(tok, texts, torch.tensor([1, 0, 1]).numpy(), 64, "left", 0)
    _, clf = classifier(tiny_dirs, data_dir, family, "finetune")
    cache = FrozenCache.compute(clf.eval(), split, Collator(fmt, tok.pad_id), 2, CpuFp32())
    assert estimated_cache_bytes(clf, [split, split], fmt.extra) == 2 * cache.nbytes


def test_auto_decides_before_computing_and_nothing_frozen_means_off(tiny_dirs, data_dir,
                                                                    monkeypatch):
    tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
    split = tokenize_split(tok, ["Great.", "Bad."], torch.tensor([1, 0]).numpy(), 64, "left", 0)
    _, clf = classifier(tiny_dirs, data_dir, "gpt2", "finetune")
    estimated = estimated_cache_bytes(clf, [split], 0)
    monkeypatch.setattr(frozen_cache, "host_available_bytes", lambda: 2 * estimated)
    assert choose_placement("auto", clf, [split], 0, CPU).where == "device"
    monkeypatch.setattr(frozen_cache, "host_available_bytes", lambda: 2 * estimated - 1)
    assert choose_placement("auto", clf, [split], 0, CPU).where == "off"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes on this host: half each
    monkeypatch.setattr(frozen_cache, "host_available_bytes", lambda: 2 * 2 * estimated - 1)
    assert choose_placement("auto", clf, [split], 0, CPU).where == "off"
    clf.first_trainable_block = 0
    assert choose_placement(True, clf, [split], 0, CPU) == CachePlacement(
        "off", "no frozen blocks to cache")


@pytest.mark.parametrize("gpu_free, host_free, expected", [
    (40 * GB, 100 * GB, "device"), (1, 100 * GB, "host"), (1, 1, "off")])
def test_auto_on_a_gpu_measures_the_gpu_and_the_host(tiny_dirs, data_dir, monkeypatch, gpu_free,
                                                     host_free, expected):
    """The placement a machine with a GPU takes, decided here with its memory probes' answers
    simulated (no GPU needed: nothing is computed)."""
    tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
    split = tokenize_split(tok, ["Great.", "Bad."], torch.tensor([1, 0]).numpy(), 64, "left", 0)
    _, clf = classifier(tiny_dirs, data_dir, "gpt2", "finetune")
    asked = []
    monkeypatch.setattr(frozen_cache, "gpu_free_bytes", lambda d: asked.append(d) or gpu_free)
    monkeypatch.setattr(frozen_cache, "host_available_bytes", lambda: host_free)
    placement = choose_placement("auto", clf, [split], 0, CUDA)
    assert placement.where == expected and asked == [CUDA]
    assert "free on cuda" in placement.reason


def test_host_memory_is_memavailable_under_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   20000000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    assert host_available_bytes(meminfo, cgroup) == 20000000 * 1024  # no cgroup files
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("1000\n")
    assert host_available_bytes(meminfo, cgroup) == 20000000 * 1024
    (cgroup / "memory.max").write_text(f"{8 * GB}\n")
    (cgroup / "memory.current").write_text(f"{3 * GB}\n")
    assert host_available_bytes(meminfo, cgroup) == 5 * GB
