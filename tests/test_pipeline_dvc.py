"""End to end: the real DVC commands in a temporary git repository, on a tiny GPT-2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tiny
from tiny import ENV, sh

@pytest.fixture()
def project(tmp_path, tiny_dirs, data_dir) -> Path:
    return tiny.dvc_project(tmp_path / "project", tiny.tiny_params(tiny_dirs["gpt2"], data_dir))


def read(root: Path, name: str) -> dict:
    return json.loads((root / "metrics" / name).read_text())


def test_repro_exp_run_and_metrics_diff(project):
    out = sh(project, "dvc", "repro")
    assert "Running stage 'evaluate'" in out
    for name in ("prepare.json", "train.json", "eval.json", "length_bins.json"):
        assert (project / "metrics" / name).is_file()
    for name in ("confusion.csv", "roc.csv", "precision_recall.csv", "length_accuracy.csv"):
        assert (project / "metrics" / "plots" / name).is_file()
    assert (project / "metrics" / "errors.md").is_file()
    assert (project / "models" / "trained.safetensors").is_file()
    assert len((project / "outputs" / "predictions.jsonl").read_text().splitlines()) == 12
    finetune = read(project, "eval.json")
    assert finetune["n"] == 12 and 0 <= finetune["accuracy"] <= 1
    assert read(project, "train.json")["method"] == "finetune"

    # Nothing changed: nothing reruns
    assert "didn't change" in sh(project, "dvc", "repro") or "up to date" in sh(project, "dvc", "status")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "finetune baseline")

    # An experiment with LoRA reruns train and evaluate, not prepare
    out = sh(project, "dvc", "exp", "run", "-S", "method=lora")
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    assert read(project, "train.json")["method"] == "lora"
    assert (project / "models" / "adapter" / "adapter_config.json").is_file()
    diff = sh(project, "dvc", "metrics", "diff", "main", "--md")
    assert "metrics/eval.json" in diff and "accuracy" in diff

    out = sh(project, "dvc", "exp", "run", "-S", "method=zero_shot")
    assert read(project, "train.json")["trainable_params"] == 0
    assert read(project, "eval.json")["n"] == 12

    shown = sh(project, "dvc", "exp", "show", "--csv")
    assert "method" in shown.splitlines()[0]
    assert "lora" in shown and "zero_shot" in shown

    # A second seed of the LoRA configuration: mean and spread over seeds 1 and 42
    sh(project, "dvc", "exp", "run", "-S", "method=lora", "-S", "seed=1")
    summary = json.loads(sh(project, sys.executable, "-m", "textclf.seeds", "--json"))
    (lora,) = [row for row in summary if row["method"] == "lora"]
    assert lora["seeds"] == [1, 42]
    assert lora["accuracy"]["min"] <= lora["accuracy"]["mean"] <= lora["accuracy"]["max"]


def test_bad_params_fail_before_work(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["method"] = "prompting"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True, env=ENV)
    assert result.returncode != 0
    assert "method must be one of 'zero_shot', 'finetune', 'lora'" in result.stdout + result.stderr
    assert not (project / "data" / "prepared").exists()
