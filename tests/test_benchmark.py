"""The speed benchmark runs on tiny random models and writes a well-formed bench.json.

Not a timed test: it checks that every (model, method, side) ran and reported sane figures, not
how fast they were.
"""

import gzip
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import tiny

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
    ratio = results[f"{model}.{method}.ratio.samples_per_s"]
    assert ratio == pytest.approx(results[f"{model}.{method}.ours.samples_per_s"] /
                                  results[f"{model}.{method}.plain.samples_per_s"], rel=0.01)


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
        assert results[f"{model}.full.ours.flops_per_token"] == 6 * n_model  # 2N fwd + 4N bwd
        assert results[f"{model}.eval.ours.flops_per_token"] == 2 * n_model
        last2 = {k: results[f"{model}.last2.ours.{k}"] for k in ("n_through", "n_trained")}
        assert 0 < last2["n_through"] == last2["n_trained"] < n_model
        assert 0 < results[f"{model}.lora.ours.n_trained"] < last2["n_trained"]

    table = capsys.readouterr().out
    assert "gpt2   lora      ours" in table and "ratio" in table


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


def test_bad_settings_fail_with_one_message(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        bench_script().main([*TINY, "--methods", "last2,nope", "--out", str(tmp_path / "b.json")])


def test_imports_only_what_a_gpu_box_has():
    """The H100 machines lack the pipeline's data tools: importing the benchmark must not need
    them."""
    code = ("import sys, textclf.benchmark; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'datasets', 'dvc', 'dvclive', 'sklearn', 'pandas', 'scipy', 'pyarrow'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
