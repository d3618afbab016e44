"""End to end: the real DVC commands in a temporary git repository, on a tiny GPT-2; and the
rules dvc.yaml keeps so that DVC can run-cache every stage and never miss a code change."""

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support import tiny
from support.tiny import ENV, sh

from textclf.core.params import flat_params

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = REPO / "params.yaml"


@pytest.fixture()
def project(tmp_path, tiny_dirs, data_dir) -> Path:
    return tiny.dvc_project(tmp_path / "project", tiny.tiny_params(tiny_dirs["gpt2"], data_dir))


def read(root: Path, name: str) -> dict:
    return json.loads((root / "metrics" / name).read_text())


def dvc(root: Path, *args: str) -> str:
    """A dvc command's stdout and stderr together (warnings go to either)."""
    result = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stages_of(path: Path) -> dict:
    stages = yaml.safe_load(path.read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def test_checkpoints_are_not_a_dvc_output_and_are_ignored_by_git():
    declared = json.dumps(stages_of(REPO / "dvc.yaml"))
    assert "checkpoints" not in declared
    assert "/checkpoints/" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.slow
def test_repro_exp_run_switch_back_and_metrics_diff(project, tmp_path):
    out = dvc(project, "repro")  # the README's first command in a repository that never ran
    assert "Running stage 'evaluate'" in out and "Running stage 'baseline'" in out
    assert "WARNING" not in out, out
    for name in ("train.json", "eval.json"):
        assert (project / "metrics" / name).is_file()
    for name in ("confusion.csv", "roc.csv", "precision_recall.csv", "length_accuracy.csv"):
        assert (project / "metrics" / "plots" / name).is_file()
    for name in ("errors.md", "length_bins.json", "run.json"):
        assert (project / "outputs" / "evaluate" / name).is_file()
    assert (project / "models" / "trained.safetensors").is_file()
    predictions = project / "outputs" / "evaluate" / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == 12
    finetune = read(project, "eval.json")
    assert finetune["n"] == 12 and 0 <= finetune["accuracy"] <= 1
    # the baseline's metrics beside the model's: the same keys, on the same test texts
    baseline = read(project, "baseline.json")
    assert set(baseline) == set(finetune) and baseline["n"] == 12
    assert (project / "outputs" / "baseline" / "run.json").is_file()
    # metrics: headline quality only (no timings, devices, per-bin or per-epoch rows)
    assert set(finetune) <= {"accuracy", "precision", "recall", "f1", "roc_auc", "loss", "n",
                             "accuracy_ci_low", "accuracy_ci_high", "f1_ci_low", "f1_ci_high"}
    assert set(read(project, "train.json")) == {"trainable_params", "total_params",
                                                 "best_epoch", "best_val_accuracy"}
    loss_log = project / "metrics/train_log/plots/metrics/train/loss.tsv"
    assert len(loss_log.read_text().splitlines()) > 1
    # every file the stages leave under metrics/ is declared (so DVC restores it from the
    # run-cache), apart from dvclive's summary, which git ignores
    declared = {next(iter(out)) if isinstance(out, dict) else out
                for stage in stages_of(project / "dvc.yaml").values()
                for kind in ("metrics", "plots") for out in stage.get(kind, [])}
    written = {p.relative_to(project).as_posix() for p in (project / "metrics").rglob("*")
               if p.is_file()} - {"metrics/train_log/metrics.json"}
    assert written <= declared, written - declared

    # Nothing changed: nothing reruns, and every stage says so
    assert "up to date" in sh(project, "dvc", "status")
    again = sh(project, "dvc", "repro")
    assert "Running stage" not in again, again
    for stage in ("prepare", "baseline", "train", "evaluate", "export"):
        assert f"Stage '{stage}' didn't change, skipping" in again, again
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "finetune baseline")

    # Any knob is set with a plain -S (params.yaml holds them all); an experiment with LoRA
    # reruns train and what follows it, not prepare
    out = sh(project, "dvc", "exp", "run", "-S", "lora.r=4", "-S", "method=lora")
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    assert "Running stage 'baseline'" not in out
    assert json.loads((project / "models/adapter/adapter_config.json").read_text())["r"] == 4
    assert "lora.r" in sh(project, "dvc", "params", "diff", "main")
    diff = json.loads(sh(project, "dvc", "metrics", "diff", "main", "--json"))
    rows = [(path, metric) for path, metrics in diff.items() for metric in metrics]
    assert ("metrics/eval.json", "accuracy") in rows or ("metrics/train.json",
                                                          "trainable_params") in rows
    assert len(rows) <= 15, rows  # a method change reads as a short table
    # the PR report puts the model beside the baseline, here and at main
    report = sh(project, "textclf", "pr-report", "--base", "main")
    assert "**Against the baseline:** the model's accuracy is" in report
    assert "TF-IDF + logistic regression" in report and "At `main`:" in report

    # Switching back to the baseline's params (the workspace has the last experiment's) restores
    # it from the run-cache, without running
    out = sh(project, "dvc", "exp", "run", "-S", "method=finetune", "-S", "lora.r=8")
    assert "Stage 'train' is cached - skipping run" in out, out
    assert "Stage 'evaluate' is cached - skipping run" in out, out
    assert read(project, "eval.json") == finetune
    assert (project / "models" / "trained.safetensors").is_file()

    # Zero-shot trains nothing: its training log is empty, not the previous run's curve
    sh(project, "dvc", "exp", "run", "-S", "method=zero_shot")
    assert read(project, "train.json")["trainable_params"] == 0
    assert read(project, "eval.json")["n"] == 12
    assert loss_log.read_text().splitlines() == ["step\tloss"]

    shown = sh(project, "dvc", "exp", "show", "--csv")
    assert "method" in shown.splitlines()[0]
    assert "lora" in shown and "zero_shot" in shown

    # A second seed of the LoRA configuration: mean and spread over seeds 1 and 42
    sh(project, "dvc", "exp", "run", "-S", "method=lora", "-S", "lora.r=4", "-S", "seed=1")
    summary = json.loads(sh(project, "textclf", "seeds", "--json"))
    (lora,) = [row for row in summary if row["method"] == "lora"]
    assert lora["seeds"] == [1, 42]
    assert lora["accuracy"]["min"] <= lora["accuracy"]["mean"] <= lora["accuracy"]["max"]

    # The everyday view: only the params the experiments changed
    changed = sh(project, "dvc", "exp", "show", "--only-changed", "--csv").splitlines()[0]
    assert {"method", "lora.r", "seed"} <= set(changed.split(","))
    assert "train.weight_decay" not in changed.split(",")

    # A fresh clone of the committed run: the read-only commands warn about nothing
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    for args in (["exp", "show", "--no-pager"], ["metrics", "show"], ["plots", "show"],
                 ["status"]):
        output = dvc(clone, *args)
        assert "WARNING" not in output and "ERROR" not in output, (args, output)
    assert sh(clone, "git", "status", "--porcelain") == ""  # dvc_plots/ (plots show) is ignored

    # `dvc exp show` there: a column per key of params.yaml, per headline metric and per
    # dependency; `--only-changed`, the everyday view, keeps the params the experiments changed
    header = dvc(clone, "exp", "show", "--csv").splitlines()[0].split(",")
    # metrics/inputs.json's columns (those not null: inputs.model.source, ...)
    for key, value in flat_params(read(clone, "inputs.json")).items():
        if value is not None:
            header.remove(key)
    meta = ["Experiment", "rev", "typ", "Created", "parent"]
    # a metric name two files share is shown with its file: metrics/eval.json:accuracy
    files = {f"metrics/{name}": read(clone, name)
             for name in ("train.json", "eval.json", "baseline.json")}
    shared = Counter(key for values in files.values() for key in values)
    metrics = {key if shared[key] == 1 else f"{file}:{key}"
               for file, values in files.items() for key in values}
    deps = {d for stage in stages_of(clone / "dvc.yaml").values() for d in stage["deps"]}
    shown_params = [c for c in header if c not in meta and c not in metrics and c not in deps]
    assert header[:5] == meta and len(header) == 5 + len(metrics) + len(deps) + len(shown_params)
    assert shown_params == list(flat_params(yaml.safe_load((clone / "params.yaml").read_text())))
    assert shown_params == list(flat_params(yaml.safe_load(REPO_PARAMS.read_text())))

    # The baseline reads prepare's texts, not its token ids: cutting texts at another length
    # reruns prepare, and leaves the baseline up to date
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["max_tokens"] = 32
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro", "baseline")
    assert "Running stage 'prepare'" in out and "Stage 'baseline' didn't change" in out, out
