"""Shared storage, offline (docs/sharing.md): a DVC remote in a local directory and a bare git
repository as origin. What one machine runs and pushes, a fresh clone pulls byte for byte, an
experiment travels with `dvc exp push`/`dvc exp pull`, and `dvc artifacts get` fetches the
export by name and by GTO version tag from the git URL alone."""

import json
import subprocess
from pathlib import Path

import pytest
from support import tiny
from support.tiny import ENV, sh


def files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, by relative path, with its bytes."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def fails(cwd: Path, *cmd: str) -> str:
    """Run a command that must fail; its stdout and stderr."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert result.returncode != 0, f"{' '.join(cmd)} succeeded:\n{result.stdout}"
    return result.stdout + result.stderr


def register(repo: Path, version: str) -> None:
    """Register HEAD as a version of the artifact: GTO reads annotated tags only."""
    sh(repo, "git", "tag", "-a", f"text-classifier@{version}",
       "-m", f"Registering artifact text-classifier version {version}")


@pytest.mark.slow
def test_push_clone_pull_exp_push_pull_and_artifacts_get(tmp_path, tiny_dirs, data_dir):
    project = tiny.dvc_project(tmp_path / "project",
                               tiny.tiny_params(tiny_dirs["gpt2"], data_dir))
    storage, origin = tmp_path / "storage", tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", "-b", "main", str(origin))

    # Machine 1: the remote goes into .dvc/config (committed); run, commit, push both
    sh(project, "dvc", "remote", "add", "-d", "storage", str(storage))
    sh(project, "git", "remote", "add", "origin", str(origin))
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "finetune run")
    assert "pushed" in sh(project, "dvc", "push")
    sh(project, "git", "push", "-q", "-u", "origin", "main")
    finetune = {out: files(project / out) for out in ("models", "export")}
    assert "models/trained.safetensors" in {f"models/{f}" for f in finetune["models"]}
    assert "model.safetensors" in finetune["export"] and "README.md" in finetune["export"]

    # Without a registered version `dvc artifacts get` finds nothing: it needs a GTO tag
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "Unable to find artifact" in fails(
        elsewhere, "dvc", "artifacts", "get", str(origin), "text-classifier")
    register(project, "v1.0.0")
    sh(project, "git", "push", "-q", "origin", "--tags")

    # Machine 2: a fresh clone has no outputs until `dvc pull` brings them, byte for byte
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "models").exists() and not (clone / "export").exists()
    sh(clone, "dvc", "pull")
    for out, expected in finetune.items():
        assert files(clone / out) == expected, out
    assert "up to date" in sh(clone, "dvc", "status")

    # An experiment run on machine 1 travels to machine 2 with its outputs
    sh(project, "dvc", "exp", "run", "-n", "lora-try", "-S", "method=lora")
    lora = {out: files(project / out) for out in ("models", "export")}
    lora_metrics = (project / "metrics" / "eval.json").read_text()
    assert "adapter/adapter_config.json" in lora["models"] and lora["export"] != finetune["export"]
    sh(project, "dvc", "exp", "push", "origin", "lora-try")
    sh(clone, "dvc", "exp", "pull", "origin", "lora-try")
    assert "lora-try" in sh(clone, "dvc", "exp", "list", "--name-only")
    sh(clone, "dvc", "exp", "apply", "lora-try")
    assert (clone / "metrics" / "eval.json").read_text() == lora_metrics
    for out, expected in lora.items():
        assert files(clone / out) == expected, out

    # Machine 2 commits the experiment and registers it as the next version
    sh(clone, "git", "add", "-A")
    sh(clone, "git", "commit", "-q", "-m", "LoRA")
    register(clone, "v1.1.0")
    sh(clone, "dvc", "push")
    sh(clone, "git", "push", "-q", "origin", "main", "--tags")

    # Anywhere: the latest version by default, an older one with --rev <version>
    sh(elsewhere, "dvc", "artifacts", "get", str(origin), "text-classifier", "-o", "latest")
    sh(elsewhere, "dvc", "artifacts", "get", str(origin), "text-classifier",
       "--rev", "v1.0.0", "-o", "v1.0.0")
    assert files(elsewhere / "latest") == lora["export"]
    assert files(elsewhere / "v1.0.0") == finetune["export"]
    card = json.loads((elsewhere / "v1.0.0" / "config.json").read_text())
    assert card["id2label"]  # a Hugging Face model directory, with the class names
