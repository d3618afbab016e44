"""The accuracy-parity program runs every side on tiny random models and reports consistent
figures; the noise rule is checked on literal correctness vectors."""

import importlib.util
import json

import numpy as np
import pytest
import yaml
from parity import SIDES, paired_difference
from support import tiny
from support.tensors import REPO

from textclf.core.params import deep_merge


def accuracy_script():
    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_difference():
    a = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1], dtype=bool)
    same = paired_difference(a, a)
    assert same == {"difference": 0.0, "standard_error": 0.0, "disagreements": 0,
                    "within_noise": True}
    b = a.copy()
    b[:4] = False  # b is wrong on 4 texts a gets right
    worse = paired_difference(a, b)
    assert worse["difference"] == pytest.approx(0.4) and worse["disagreements"] == 4
    assert worse["standard_error"] == pytest.approx(np.std([1] * 4 + [0] * 6, ddof=1) / 10 ** 0.5,
                                                    abs=1e-6)
    assert not worse["within_noise"]  # 0.4 > 2 * 0.163


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_every_side_runs_on_a_tiny_model(tmp_path, tiny_dirs, family, capsys):
    out = tmp_path / "parity.json"
    results = accuracy_script().main([
        "--model", str(tiny_dirs[family]), "--data", str(tiny.FIXTURES / "reviews.jsonl"),
        "--train", "16", "--val", "8", "--test", "12", "--max-tokens", "32", "--epochs", "1",
        "--batch-size", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == results
    assert (results["train"], results["val"], results["test"]) == (16, 8, 12)
    assert results["data"] == "tests/fixtures/reviews.jsonl"  # relative to the repository
    assert not results["model"].startswith("/")
    for side in SIDES:
        assert 0.0 <= results[f"{side}.test_accuracy"] <= 1.0
        assert results[f"{side}.train_seconds"] >= 0
    assert "cache_frozen true" in results["fast.recipe"]
    assert "cache_frozen false" in results["no_speedups.recipe"]
    for other in ("no_speedups", "trainer"):
        diff = results[f"fast_vs_{other}.difference"]
        assert diff == pytest.approx(results["fast.test_accuracy"] -
                                     results[f"{other}.test_accuracy"], abs=2e-6)
    assert "fast - trainer:" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["--data", "absent.jsonl"], "no such file"),
    (["--data", str(tiny.FIXTURES / "reviews.jsonl"), "--train", "100"], "holds 40 texts, fewer"),
    (["--data", str(tiny.FIXTURES / "reviews.jsonl"), "--sides", "fast,slow"], "unknown ['slow']"),
])
def test_bad_arguments_are_one_clear_error(tmp_path, tiny_dirs, capsys, args, fragment):
    with pytest.raises(SystemExit) as exit_info:
        accuracy_script().main(["--model", str(tiny_dirs["bert"]), *args,
                                "--out", str(tmp_path / "p.json")])
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_fast_side_keeps_the_params_precision_plain_side_is_fp32(tmp_path, tiny_dirs, precision):
    from parity import side_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params_path = tmp_path / "params.yaml"
    precision_set = deep_merge(raw, {"train": {"mixed_precision": precision}})
    params_path.write_text(yaml.safe_dump(precision_set))
    model = str(tiny_dirs["bert"])
    fast = side_params(params_path, model, "fast", {}).train
    plain = side_params(params_path, model, "no_speedups", {}).train
    knobs = ("mixed_precision", "cache_frozen", "group_by_length")
    assert tuple(getattr(fast, k) for k in knobs) == (precision, True, True)
    assert tuple(getattr(plain, k) for k in knobs) == ("fp32", False, False)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_int8_scoring_of_the_fast_sides_model(tmp_path, tiny_dirs, family, capsys):
    """--int8: the fast side's trained model scores the test split in its precision, in fp32
    and with int8 products; the figures are consistent with each other (agreement is a share,
    the speed-up the ratio of the times, accuracy the difference's sides)."""
    results = accuracy_script().main([
        "--model", str(tiny_dirs[family]), "--data", str(tiny.FIXTURES / "reviews.jsonl"),
        "--sides", "fast", "--int8", "--train", "16", "--val", "8", "--test", "12",
        "--max-tokens", "32", "--epochs", "1", "--batch-size", "4",
        "--out", str(tmp_path / "int8.json")])
    assert results["int8.int8.precision"] == results["int8.fp32.precision"] == "fp32"
    for other in ("as_evaluated", "fp32"):
        key = f"int8.vs_{other}"
        assert 0.0 <= results[f"{key}.label_agreement"] <= 1.0
        assert 0.0 <= results[f"{key}.max_prob_diff"] < 0.05  # int8's rounding, no more
        assert results[f"{key}.speedup"] == pytest.approx(
            results[f"int8.{other}.seconds"] / results["int8.int8.seconds"], rel=0.05)
        assert results[f"{key}.difference"] == pytest.approx(
            results["int8.int8.test_accuracy"] - results[f"int8.{other}.test_accuracy"],
            abs=2e-6)
    # as evaluated: the fast side's own scoring, the same numbers
    assert results["int8.as_evaluated.test_accuracy"] == results["fast.test_accuracy"]
    assert "int8 against fp32:" in capsys.readouterr().out
