"""The speed benchmark runs on tiny random models and writes a well-formed bench.json.

Not a timed test: it checks that every (model, method, side) ran and reported sane figures, not
how fast they were.
"""

import gzip
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from peak import precision_of
from support import tiny

REPO = Path(__file__).resolve().parents[1]
TINY = ["--size", "tiny", "--steps", "2", "--warmup", "1", "--batch-size", "4",
        "--eval-batch-size", "4", "--max-tokens", "32"]
SIDE_KEYS = ("seconds", "samples", "tokens", "samples_per_s", "tokens_per_s", "tflops",
             "flops_per_token", "padding_fraction", "peak_memory_mib", "memory", "recipe",
             "dtype", "padding", "trainable_params")


def bench_script():
    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reviews_gz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reviews") / "train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in tiny.fixture_reviews():
            f.write(json.dumps(row) + "\n")
    return path


def check_sides(results: dict, model: str, method: str) -> None:
    for side in ("ours", "plain"):
        prefix = f"{model}.{method}.{side}."
        missing = [k for k in SIDE_KEYS if prefix + k not in results]
        assert not missing, f"{prefix}: missing {missing}"
        assert results[prefix + "samples"] > 0 and results[prefix + "tokens"] > 0
        for key in ("samples_per_s", "tokens_per_s", "tflops", "peak_memory_mib"):
            assert math.isfinite(results[prefix + key]) and results[prefix + key] > 0, prefix + key
        assert 0.0 <= results[prefix + "padding_fraction"] < 1.0
    ours = results[f"{model}.{method}.ours.samples_per_s"]
    ratio = results[f"{model}.{method}.ratio.samples_per_s"]
    assert ratio == pytest.approx(ours / results[f"{model}.{method}.plain.samples_per_s"],
                                  rel=0.01)
    # the tuned peer: the faster of the plain sides that ran, and the ratio the targets judge
    peers = {side: results[f"{model}.{method}.{side}.samples_per_s"]
             for side in ("plain", "plain_bf16") if f"{model}.{method}.{side}.samples" in results}
    tuned = results[f"{model}.{method}.tuned.side"]
    assert peers[tuned] == max(peers.values())
    assert results[f"{model}.{method}.ratio_tuned.samples_per_s"] == pytest.approx(
        ours / peers[tuned], rel=0.01)


@pytest.mark.slow
def test_bench_writes_well_formed_json(tmp_path, tiny_dirs, reviews_gz, capsys):
    out = tmp_path / "metrics" / "bench.json"
    returned = bench_script().main([*TINY, "--data", str(reviews_gz), "--tokenizer",
                                    str(tiny_dirs["bert"]), "--out", str(out)])
    results = json.loads(out.read_text())
    assert results == returned
    assert results["device"].startswith(("cpu: ", "cuda: "))
    assert {"torch", "transformers", "peft", "date", "settings.size"} <= results.keys()
    assert "reviews" in results["settings.lengths"]  # real lengths, not the synthetic fallback
    assert results["tokenize.hf.ours.reviews_per_s"] > 0

    for method in ("zero_shot", "last2", "lora", "full", "eval"):
        check_sides(results, "gpt2", method)
    for method in ("last2", "lora", "full", "eval"):
        check_sides(results, "bert", method)
    assert "bert.zero_shot.ours.samples" not in results  # encoders cannot score prompts

    # Identical work on both sides: same texts, same trained parameters up to the head layout
    for model in ("gpt2", "bert"):
        for method in ("last2", "full", "eval"):
            samples = [results[f"{model}.{method}.{side}.samples"] for side in ("ours", "plain")]
            assert samples[0] == samples[1]
        n_model = results[f"{model}.full.ours.n_model"]
        # GPT-2's last-token block runs N_once once per text (flops.py); BERT has none
        once = results[f"{model}.full.ours.n_once"]
        assert (once > 0) == (model == "gpt2")
        assert results[f"{model}.full.ours.flops_per_token"] == 6 * (n_model - once)  # 2N + 4N
        assert results[f"{model}.eval.ours.flops_per_token"] == 2 * (n_model - once)
        last2 = {k: results[f"{model}.last2.ours.{k}"] for k in ("n_through", "n_trained")}
        assert 0 < last2["n_through"] == last2["n_trained"] < n_model
        assert 0 < results[f"{model}.lora.ours.n_trained"] < last2["n_trained"]

    table = capsys.readouterr().out
    assert "gpt2   lora      ours" in table and "ratio" in table


@pytest.mark.slow  # a fresh process or a data pass: seconds
def test_synthetic_lengths_without_data(tmp_path):
    out = tmp_path / "bench.json"
    results = bench_script().main([*TINY, "--model", "bert", "--methods", "eval", "--plain-bf16",
                                   "--data", str(tmp_path / "absent.jsonl.gz"),
                                   "--out", str(out)])
    assert results["settings.lengths"].startswith("synthetic")
    assert not any(k.startswith("tokenize.") for k in results)
    check_sides(results, "bert", "eval")
    assert results["bert.eval.plain_bf16.dtype"].startswith("bf16")
    assert results["bert.eval.ratio_bf16.samples_per_s"] > 0


@pytest.mark.slow  # three sides of three methods: ~20 s
def test_the_tuned_peer_freezes_what_plain_and_ours_freeze(tmp_path, capsys):
    """The plain recipe given bf16=True trains the same parameters as plain fp32 (and ours, up
    to the head's bias), and its evaluation gives our probabilities within bf16's tolerance."""
    results = bench_script().main([*TINY, "--model", "gpt2", "--methods", "last2,lora,eval",
                                   "--plain-bf16", "--data", str(tmp_path / "absent.jsonl.gz"),
                                   "--out", str(tmp_path / "bench.json")])
    for method in ("last2", "lora"):
        check_sides(results, "gpt2", method)
        trained = {side: results[f"gpt2.{method}.{side}.trainable_params"]
                   for side in ("ours", "plain", "plain_bf16")}
        assert trained["plain"] == trained["plain_bf16"], trained
        assert abs(trained["ours"] - trained["plain"]) <= 2, trained
        assert results[f"gpt2.{method}.plain_bf16.dtype"].startswith("bf16")
    check_sides(results, "gpt2", "eval")
    for side in ("plain", "plain_bf16"):
        assert 0 <= results[f"gpt2.eval.agreement.{side}.max_diff"] <= \
            results[f"gpt2.eval.agreement.{side}.tolerance"]
    assert results["gpt2.eval.target.equal_numbers"]
    table = capsys.readouterr().out
    assert re.search(r"ratio_tuned .* vs plain(_bf16)?; >= 1.6x (met|NOT met).*equal numbers "
                     r"\(plain max \|p diff\| ", table)


def test_bad_settings_fail_with_one_message(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        bench_script().main([*TINY, "--methods", "last2,nope", "--out", str(tmp_path / "b.json")])


def test_imports_only_what_a_gpu_box_has():
    """A GPU machine may lack the pipeline's data tools: importing the benchmark must not need
    them."""
    code = ("import sys, speed; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'datasets', 'dvc', 'dvclive', 'sklearn', 'pandas', 'scipy', 'pyarrow'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO / "benchmarks")
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("method, precision", [("finetune", "fp32"), ("lora", "bf16")])
def test_profile_step_prints_the_step_and_its_operators(method, precision):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--size", "tiny",
         "--method", method, "--batch-size", "2", "--max-tokens", "16", "--steps", "1",
         "--rows", "100", "--precision", precision], capture_output=True, text=True, check=True)
    line = re.search(r"(\S+) s per step, (\S+) samples/s; matrix products (\S+)% of the "
                     r"profiled step, dropout \(its random numbers and masks\) (\S+)%",
                     result.stdout)
    assert line and float(line[1]) > 0 and 0 < float(line[3]) < 100, result.stdout
    assert 0 < float(line[4]) < 100  # the tiny model's dropout is on while training
    assert f"tiny) {method}, batch 2 x 16 tokens" in result.stdout
    assert f"; {precision}\n" in result.stdout
    assert "aten::addmm" in result.stdout or "aten::mm" in result.stdout


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_kernels_prints_each_kernel(precision):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "kernels.py"), "--precision", precision,
         "--texts", "2", "--tokens", "16", "--width", "32", "--heads", "2", "--repeats", "1"],
        capture_output=True, text=True, check=True)
    out = result.stdout
    assert f"; {precision}\n" in out
    assert re.search(r"the mask, bernoulli_: \S+ ms with 1 thread", out), out
    # what docs/performance.md says of dropout's masks: one float64 uniform draw per element
    assert "the same mask as float64 uniform_() < 0.9 from the same seed: yes" in out
    assert re.search(r"attention, 2x2x16x16: is_causal \S+ ms, a boolean causal mask \S+ ms, "
                     r"no mask \S+ ms", out)
    fused = re.search(r"fused by oneDNN: \S+ ms, largest difference (\S+)", out)
    assert fused and float(fused[1]) < (0.05 if precision == "bf16" else 1e-5), out


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_flops_with_the_cache_leave_out_the_frozen_blocks_forward(tiny_dirs, data_dir, method):
    """The tiny GPT-2 has 4 blocks, the last 2 trained: with the frozen-block cache the forward
    pass skips blocks 0 and 1, so the FLOPs per token drop by 2 x their parameters."""
    from flops import flops_per_token

    from textclf.core.families import FAMILIES
    from textclf.core.params import parse_params
    from textclf.modeling.classifier import build_classifier

    params = parse_params(tiny.tiny_params(tiny_dirs["gpt2"], data_dir, method=method))
    clf = build_classifier(params, FAMILIES["gpt2"], 2)
    uncached = flops_per_token(clf, FAMILIES["gpt2"], training=True)
    cached = flops_per_token(clf, FAMILIES["gpt2"], training=True, cached=True)
    base = clf.backbone.get_base_model() if method == "lora" else clf.backbone
    frozen = sum(p.numel() for block in base.h[:2] for p in block.parameters())
    assert frozen > 0 and uncached["flops_per_token"] - cached["flops_per_token"] == 2 * frozen
    assert uncached["n_forward"] == uncached["n_model"]
    assert cached["n_forward"] == cached["n_through"] == uncached["n_model"] - frozen
    scoring = flops_per_token(clf, FAMILIES["gpt2"], training=False, cached=True)
    # scoring never uses the cache (and runs the last-token block's N_once once per text)
    assert scoring["flops_per_token"] == 2 * (scoring["n_model"] - scoring["n_once"])


@pytest.mark.slow
@pytest.mark.parametrize("setting", [True, "auto"])
def test_the_frozen_block_cache_is_not_credited_with_the_frozen_blocks(tmp_path, setting):
    """With train.cache_frozen our training forward runs through the trainable blocks only: the
    FLOPs counted per token drop by the frozen blocks' forward share (2 x their parameters), the
    plain side (no cache) keeps them, and the one-time cache build is reported apart. auto (the
    default) is decided by the training loop, as in the train stage: the tiny cache fits."""
    import yaml

    from textclf.core.params import deep_merge, load_params
    from textclf.modeling.device import resolved_precision

    default = load_params(REPO / "params.yaml").train
    assert default.cache_frozen == "auto"  # the benchmark measures what users get by default
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(deep_merge(
        yaml.safe_load((REPO / "params.yaml").read_text()), {"train": {"cache_frozen": setting}})))
    results = bench_script().main([*TINY, "--model", "gpt2", "--methods", "last2", "--data",
                                   str(tmp_path / "absent.jsonl.gz"), "--params", str(params),
                                   "--out", str(tmp_path / "bench.json")])
    check_sides(results, "gpt2", "last2")
    ours = {k.removeprefix("gpt2.last2.ours."): v for k, v in results.items()
            if k.startswith("gpt2.last2.ours.")}
    plain = {k.removeprefix("gpt2.last2.plain."): v for k, v in results.items()
             if k.startswith("gpt2.last2.plain.")}
    assert f"cache_frozen {str(setting).lower()} (on the device)" in ours["recipe"]
    import torch

    expected = resolved_precision(default.mixed_precision, torch.cuda.is_available())
    assert ours["dtype"] == ("bf16 autocast, fp32 weights" if expected == "bf16" else "fp32")
    # the tiny benchmark GPT-2 has 3 blocks, the last 2 trained: block 0 is frozen and cached
    frozen = ours["n_model"] - ours["n_through"]
    assert 0 < frozen < ours["n_model"] and ours["n_forward"] == ours["n_through"]
    # and the last-token block's N_once runs once per text, not per token (flops.py)
    once = ours["n_once"]
    assert 0 < once == ours["n_once_trained"]
    assert plain["flops_per_token"] - ours["flops_per_token"] == 2 * frozen + 6 * once
    assert ours["flops_per_token"] == 2 * (ours["n_through"] - once) + \
        2 * (ours["n_through"] - once) + 2 * (ours["n_trained"] - once)
    assert ours["tflops"] == pytest.approx(
        ours["flops_per_token"] * ours["tokens"] / ours["seconds"] / 1e12, rel=1e-2)
    assert ours["cache_build_flops"] > 0 and ours["cache_build_flops"] % (2 * frozen) == 0


def test_describe_path():
    """Results name an input as a path relative to the repository or as the package that
    installed it: the same on every machine."""
    import yaml
    from inputs import describe_path

    assert describe_path(REPO / "params.yaml") == "params.yaml"
    assert describe_path(REPO / "tests" / "fixtures") == "tests/fixtures"
    assert describe_path(REPO.parent) == ".."
    assert describe_path(Path(yaml.__file__).parent) == "PyYAML (PyPI package)"
    assert describe_path("bert-base-uncased") == "bert-base-uncased"  # a hub id, not a path


def test_bench_records_no_absolute_paths(tmp_path, tiny_dirs, reviews_gz, capsys):
    results = bench_script().main([*TINY, "--model", "bert", "--methods", "eval", "--data",
                                   str(reviews_gz), "--tokenizer", str(tiny_dirs["bert"]),
                                   "--out", str(tmp_path / "bench.json")])
    assert results["settings.params"] == "params.yaml"
    from textclf.modeling.device import native_bf16_cpu

    # the Trainer in bf16 is measured (a candidate tuned peer) where the CPU computes bf16
    assert results["settings.plain_bf16"] == native_bf16_cpu()
    assert results["bert.eval.tuned.side"] == ("plain_bf16" if native_bf16_cpu() and
        results["bert.eval.plain_bf16.samples_per_s"] > results["bert.eval.plain.samples_per_s"]
        else "plain")
    assert "bert.eval.agreement.equal" not in results  # BERT's Trainer model pools [CLS]
    assert results["bert.eval.target.equal_numbers"] is False
    absolute = {k: v for k, v in results.items()
                if isinstance(v, str) and re.search(r"(^|\s)/", v)}
    assert not absolute


# ---------------------------------------------------------------------------------------------
# Whole runs (train_run, eval_run), the matmul peak and the targets

@pytest.mark.slow  # two Trainer runs and two evaluations: ~15 s
def test_whole_runs_write_their_figures(tmp_path, capsys):
    """train_run times every epoch (validation and our cache build included) on --run-texts
    texts, eval_run a whole test split of them; both sides count the same texts, the FLOPs of
    what ran (plain: every block, every time) and their share of the matmul peak."""
    out = tmp_path / "whole.json"
    results = bench_script().main([*TINY, "--model", "gpt2", "--methods", "train_run,eval_run",
                                   "--run-texts", "10", "--epochs", "2", "--data",
                                   str(tmp_path / "absent.jsonl.gz"), "--out", str(out)])
    assert json.loads(out.read_text()) == results
    check_sides(results, "gpt2", "train_run")
    check_sides(results, "gpt2", "eval_run")
    for side in ("ours", "plain"):
        assert results[f"gpt2.train_run.{side}.samples"] == 2 * 10  # every epoch's texts
        assert results[f"gpt2.eval_run.{side}.samples"] == 10
        assert "num_train_epochs 2" in results["gpt2.train_run.plain.recipe"]
    # both sides train the same part (the last 2 blocks, the final norm and a head; ours' head
    # has a bias, plain's GPT-2 `score` none): plain training the whole model would be slower
    trained = [results[f"gpt2.train_run.{side}.trainable_params"] for side in ("ours", "plain")]
    assert abs(trained[0] - trained[1]) <= 2, trained
    ours = {k.removeprefix("gpt2.train_run.ours."): v for k, v in results.items()
            if k.startswith("gpt2.train_run.ours.")}
    plain_flops = results["gpt2.train_run.plain.flops"]
    assert "2 epochs, validation each epoch (1 texts" in ours["recipe"]
    assert "(on the device)" in ours["recipe"]  # the cache, built inside the clock
    # the cache saves the frozen block's forward on every epoch but the build
    assert 0 < ours["flops"] < plain_flops
    for method in ("train_run", "eval_run"):
        for side in ("ours", "plain"):
            key = f"gpt2.{method}.{side}."
            # of the peak in the precision the side computed in (ours: bf16 where auto says so)
            peak = results[f"peak.{precision_of(results[key + 'dtype'])}.tflops"]
            assert results[key + "peak_share"] == pytest.approx(
                results[key + "tflops"] / peak, abs=1e-4)
    assert results["gpt2.train_run.target.ratio"] == 4.0
    assert results["gpt2.eval_run.target.ratio"] == 1.6
    assert results["gpt2.train_run.target.ratio_met"] == (
        results["gpt2.train_run.ratio_tuned.samples_per_s"] >= 4.0)
    assert results["gpt2.eval_run.agreement.equal"]  # the same function, the same head
    table = capsys.readouterr().out
    assert "gpt2   train_run ours" in table
    assert re.search(r"matmul peak: (bf16 .*, )?fp32", table)  # bf16's too where ours ran in it
    assert re.search(r"ratio_tuned .*vs plain(_bf16)?; >= 4x (met|NOT met)", table)


def test_matmul_peak_is_positive():
    import torch
    from peak import matmul_peak

    peak = matmul_peak(torch.device("cpu"), "fp32", size=128, seconds=0.01)
    assert peak["tflops"] > 0 and peak["size"] == 128 and peak["repeats"] >= 3


def test_matmul_peak_counts_2_n_cubed_flops_per_fastest_product(monkeypatch):
    """On a clock that ticks 0.5 s per reading, each product takes 0.5 s: 2 x 256^3 FLOPs in
    0.5 s."""
    import itertools

    import peak
    import torch

    ticks = itertools.count()
    monkeypatch.setattr(peak.time, "perf_counter", lambda: 0.5 * next(ticks))
    measured = peak.matmul_peak(torch.device("cpu"), "fp32", size=256, seconds=2.0)
    assert measured["tflops"] == pytest.approx(2 * 256**3 / 0.5 / 1e12, rel=1e-3)


def test_peak_share_is_achieved_over_peak():
    from peak import peak_share, precision_of

    assert peak_share(0.06, 0.12) == 0.5
    assert peak_share(0.0123, 0.2) == pytest.approx(0.0615)
    assert precision_of("bf16 autocast, fp32 weights") == "bf16"
    assert precision_of("fp32 (TF32 matmuls)") == precision_of("fp32") == "fp32"


@pytest.mark.parametrize("ratio, share, expected", [
    (5.1, 0.65, {"ratio": 5.0, "ratio_met": True, "peak_share": 0.6, "peak_share_met": True}),
    (4.9, 0.55, {"ratio": 5.0, "ratio_met": False, "peak_share": 0.6, "peak_share_met": False}),
])
def test_targets_judge_last2_against_the_tuned_peer(ratio, share, expected):
    from targets import judge, verdict

    ours = {"dtype": "bf16 autocast, fp32 weights", "peak_share": share}
    assert judge("last2", ours, {"samples_per_s": ratio}) == expected
    assert judge("zero_shot", ours, {"samples_per_s": ratio}) == {}
    assert judge("full", ours, {"samples_per_s": ratio}) == {}  # no target for full fine-tuning
    assert verdict(4.0, 5.0, "x") == ">= 4x met"
    assert verdict(0.5, 0.1, "%") == ">= 50% NOT met (20% of it)"


@pytest.mark.parametrize("equal, met", [(True, True), (False, False), (None, False)])
def test_evaluation_counts_only_at_equal_numbers(equal, met):
    """1.6x the tuned Trainer.predict is met only where the probabilities are the same within
    the precision's tolerance; unequal or incomparable (BERT's pooler) numbers meet nothing."""
    from targets import judge

    agreement = None if equal is None else {"equal": equal}
    judged = judge("eval", {"dtype": "fp32"}, {"samples_per_s": 2.0}, agreement)
    assert judged == {"ratio": 1.6, "ratio_met": met, "equal_numbers": bool(equal)}


def test_agreement_is_within_the_lower_precisions_tolerance():
    import numpy as np
    from speed import agreement
    from targets import PROBABILITY_TOLERANCE

    ours = np.array([[0.2, 0.8], [0.6, 0.4]])
    sides = {"ours": {"dtype": "fp32"}, "plain": {"dtype": "fp32"},
             "plain_bf16": {"dtype": "bf16 autocast, fp32 weights"}}
    close = {"ours": ours, "plain": ours + 5e-5, "plain_bf16": ours - 1e-2}
    assert agreement(close, sides) == {
        "plain.max_diff": 5e-5, "plain.tolerance": PROBABILITY_TOLERANCE["fp32"],
        "plain_bf16.max_diff": 1e-2, "plain_bf16.tolerance": PROBABILITY_TOLERANCE["bf16"],
        "equal": True}
    assert not agreement({**close, "plain": ours + 1e-3}, sides)["equal"]  # fp32: 1e-4


def test_tokenization_target():
    from targets import judge_tokenization

    assert judge_tokenization({"tokenize.hf.ratio.reviews_per_s": 0.93}) == {
        "tokenize.hf.target.ratio": 1.0, "tokenize.hf.target.ratio_met": False}
    assert judge_tokenization({"tokenize.hf.ratio.reviews_per_s": 1.2})[
        "tokenize.hf.target.ratio_met"]
    assert judge_tokenization({}) == {}


def test_whole_run_flops_count_every_epoch_and_the_cache_build():
    """10 non-embedding parameters, the last 4 trained (through = trained = 4); 100 training and
    10 validation tokens a epoch, 3 epochs."""
    from flops import whole_run_flops

    n = {"n_model": 10, "n_through": 4, "n_trained": 4}
    # plain: (2*10 forward + 2*4 + 2*4 backward) * 100 + 2*10 * 10 validation, per epoch
    assert whole_run_flops(n, 100, 10, 3, cached=False, ours=False) == 3 * (36 * 100 + 20 * 10)
    # cached: the trained blocks only, every epoch; the 6 frozen ones once over 110 tokens
    assert whole_run_flops(n, 100, 10, 3, cached=True, ours=False) == \
        3 * (24 * 100 + 8 * 10) + 12 * 110
    # ours with a last-token block: 3 of its trained parameters run once per text, not per token
    once = {**n, "n_once": 3, "n_once_trained": 3}
    assert whole_run_flops(once, 100, 10, 3, cached=True, ours=True) == \
        3 * (6 * 100 + 2 * 10) + 12 * 110
    assert whole_run_flops(once, 100, 10, 3, cached=True, ours=False) == \
        whole_run_flops(n, 100, 10, 3, cached=True, ours=False)


def test_the_last_token_block_counts_its_projection_per_token(tiny_dirs, data_dir):
    """Ours on GPT-2: the last block's parameters but ln_1 and c_attn leave the per-token count."""
    from flops import flops_per_token
    from support.tensors import run_params

    from textclf.core.families import FAMILIES
    from textclf.modeling.classifier import build_classifier

    clf = build_classifier(run_params(tiny_dirs["gpt2"], data_dir), FAMILIES["gpt2"], 2)
    last = clf.backbone.h[-1]
    once = sum(p.numel() for m in (last.attn.c_proj, last.ln_2, last.mlp) for p in m.parameters())
    flops = flops_per_token(clf, FAMILIES["gpt2"], training=True, cached=True)
    assert flops["n_once"] == flops["n_once_trained"] == once
    assert flops["flops_per_token"] == 2 * (flops["n_forward"] - once) + \
        2 * (flops["n_through"] - once) + 2 * (flops["n_trained"] - once)


def test_whole_run_splits():
    from cases import Settings, split_sizes

    settings = Settings(models=("gpt2",), methods=("train_run",), size="tiny", steps=2,
                        warmup=1, batch_size=4, eval_batch_size=4, max_tokens=32, seed=0,
                        run_texts=50, epochs=3, val_fraction=0.1)
    assert split_sizes("train_run", settings)[:2] == (50, 5)
    assert split_sizes("eval_run", settings)[2] == 50
    assert split_sizes("last2", settings) == (12, 4, 8)
    assert Settings(**{**vars(settings), "run_texts": 0}).problems() == [
        "run_texts must be a positive integer, got 0"]


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_batch_tokens_prints_the_time_per_token_of_each_batch(family):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "batch_tokens.py"), "--family", family,
         "--layers", "2", "--width", "32", "--heads", "2", "--tokens", "16", "--texts", "1,3",
         "--repeats", "1", "--precision", "fp32", "--threads", "1"],
        capture_output=True, text=True, check=True)
    out = result.stdout
    assert f"; {family}, 2 layers of width 32; fp32; texts of 16 tokens\n" in out, out
    assert re.search(r"^cpu: .*\b1 thread;", out, re.M), out
    assert "the defaults' token bound on this machine: 2048 tokens" in out, out
    rows = re.findall(r"^ +(\d+) texts = +(\d+) tokens: +\S+ ms, +\S+ us per token$", out, re.M)
    assert rows == [("1", "16"), ("3", "48")], out
