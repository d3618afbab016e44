"""End to end: the real DVC commands in a temporary git repository, on a tiny GPT-2; and the
rules dvc.yaml keeps so that DVC can run-cache every stage and never miss a code change."""

import ast
import json
import subprocess
from pathlib import Path

import pytest
import yaml

import tiny
from textclf.params import deep_merge, flat_params
from tiny import ENV, sh

REPO = Path(__file__).resolve().parents[1]
PIPELINES = (REPO / "dvc.yaml", REPO / "compare" / "dvc.yaml")
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


@pytest.mark.parametrize("path", PIPELINES, ids=["dvc.yaml", "compare/dvc.yaml"])
def test_every_stage_can_be_run_cached_and_depends_on_the_package(path):
    """DVC never run-caches a stage with a `persist` output or a plain output that is not
    cached (metrics and plots may be `cache: false`); and a stage that lists hand-picked modules
    misses changes to the others it imports."""
    package = "src/textclf" if path.parent == REPO else "../src/textclf"
    for name, stage in stages_of(path).items():
        assert package in stage["deps"], f"{path.name}:{name} does not depend on {package}"
        script = next(d for d in stage["deps"] if d.endswith(".py"))
        assert script in stage["cmd"], f"{name}: its script {script} is not what it runs"
        for out in stage.get("outs", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            assert not options.get("persist"), f"{name}: persist disables the run-cache"
            assert options.get("cache", True), f"{name}: a plain cache: false output " \
                                               "disables the run-cache"
        for kind in ("metrics", "plots"):
            for out in stage.get(kind, []):
                options = next(iter(out.values())) if isinstance(out, dict) else {}
                assert not options.get("persist"), f"{name}: persist disables the run-cache"


def package_modules_imported_by(script: Path) -> set[Path]:
    """Files of src/textclf that `script` imports, directly or through other package modules
    (every import statement counts, including those inside functions)."""
    package = REPO / "src"
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the importing module's package
                    base = path.parent
                    for _ in range(node.level - 1):
                        base = base.parent
                    dotted = ".".join(base.relative_to(package).parts)
                    module = f"{dotted}.{node.module}" if node.module else dotted
                else:
                    module = node.module or ""
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for name in names:
                if not name.startswith("textclf"):
                    continue
                parts = name.split(".")
                for candidate in (package.joinpath(*parts).with_suffix(".py"),
                                  package.joinpath(*parts) / "__init__.py"):
                    if candidate.is_file() and candidate not in seen:
                        seen.add(candidate)
                        todo.append(candidate)
    return seen


def test_no_stage_imports_a_file_dvc_ignores():
    """Stages depend on src/textclf minus what .dvcignore leaves out (the `textclf` command's
    tools): a stage that imported one of those would miss its changes."""
    ignored = [line.strip().lstrip("/").rstrip("/") for line in
               (REPO / ".dvcignore").read_text().splitlines()
               if line.strip().startswith("/src/")]
    assert ignored, "expected the command's tools to be left out of the package dependency"
    for script in (REPO / "stages").glob("*.py"):
        for module in package_modules_imported_by(script):
            relative = module.relative_to(REPO).as_posix()
            assert not any(relative == i or relative.startswith(i + "/") for i in ignored), \
                f"{script.name} imports {relative}, which .dvcignore hides from its dependencies"
    # the walk does follow the package: the train stage reaches the zero-shot and cache code
    reached = {m.name for m in package_modules_imported_by(REPO / "stages" / "train.py")}
    assert {"zero_shot.py", "models.py", "tokenization.py", "training.py"} <= reached


def test_checkpoints_are_not_a_dvc_output_and_are_ignored_by_git():
    declared = json.dumps(stages_of(REPO / "dvc.yaml"))
    assert "checkpoints" not in declared
    assert "/checkpoints/" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.slow
def test_repro_exp_run_switch_back_and_metrics_diff(project, tmp_path):
    out = dvc(project, "repro")  # the README's first command in a repository that never ran
    assert "Running stage 'evaluate'" in out
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

    # Nothing changed: nothing reruns
    assert "didn't change" in sh(project, "dvc", "repro") or "up to date" in sh(project, "dvc", "status")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-q", "-m", "finetune baseline")

    # A knob params.yaml leaves to its default, added to it later (`-S +key=value`), makes the
    # stages that read its section stale, and only those
    params = yaml.safe_load((project / "params.yaml").read_text())
    for added, stale in (({"train": {"weight_decay": 0.0}}, {"train", "evaluate", "export"}),
                         ({"lora": {"r": 4}}, {"train", "export"}),
                         ({"data": {"truncation": "head_tail"}}, {"prepare", "train", "export"})):
        (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, added)))
        assert set(json.loads(dvc(project, "status", "--json"))) == stale, added
    sh(project, "git", "checkout", "params.yaml")

    # An experiment with LoRA reruns train and evaluate, not prepare
    out = sh(project, "dvc", "exp", "run", "-S", "method=lora")
    assert "Running stage 'train'" in out and "Running stage 'prepare'" not in out
    assert (project / "models" / "adapter" / "adapter_config.json").is_file()
    diff = json.loads(sh(project, "dvc", "metrics", "diff", "main", "--json"))
    rows = [(path, metric) for path, metrics in diff.items() for metric in metrics]
    assert ("metrics/eval.json", "accuracy") in rows or ("metrics/train.json",
                                                          "trainable_params") in rows
    assert len(rows) <= 15, rows  # a method change reads as a short table

    # Switching back to the baseline's params restores it from the run-cache, without running
    out = sh(project, "dvc", "exp", "run", "-S", "method=finetune")
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
    sh(project, "dvc", "exp", "run", "-S", "method=lora", "-S", "seed=1")
    summary = json.loads(sh(project, "textclf", "seeds", "--json"))
    (lora,) = [row for row in summary if row["method"] == "lora"]
    assert lora["seeds"] == [1, 42]
    assert lora["accuracy"]["min"] <= lora["accuracy"]["mean"] <= lora["accuracy"]["max"]

    # A fresh clone of the committed run: the read-only commands warn about nothing
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    for args in (["exp", "show", "--no-pager"], ["metrics", "show"], ["plots", "show"],
                 ["status"]):
        output = dvc(clone, *args)
        assert "WARNING" not in output and "ERROR" not in output, (args, output)
    assert sh(clone, "git", "status", "--porcelain") == ""  # dvc_plots/ (plots show) is ignored

    # `dvc exp show` there: a column per key of params.yaml (the defaults are not listed), per
    # headline metric and per dependency; with the repository's params.yaml, at most 40 in the
    # terminal (which shows Experiment and Created; --csv adds rev, typ and parent)
    header = dvc(clone, "exp", "show", "--csv").splitlines()[0].split(",")
    meta = ["Experiment", "rev", "typ", "Created", "parent"]
    metrics = set(read(clone, "train.json")) | set(read(clone, "eval.json"))
    deps = {d for stage in stages_of(clone / "dvc.yaml").values() for d in stage["deps"]}
    shown_params = [c for c in header if c not in meta and c not in metrics and c not in deps]
    assert header[:5] == meta and len(header) == 5 + len(metrics) + len(deps) + len(shown_params)
    assert shown_params == list(flat_params(yaml.safe_load((clone / "params.yaml").read_text())))
    repo_keys = list(flat_params(yaml.safe_load(REPO_PARAMS.read_text())))
    width = 2 + len(metrics) + len(deps) + len(repo_keys)
    assert width <= 40, width


@pytest.mark.slow
def test_editing_a_module_a_stage_imports_reruns_it(project):
    sh(project, "dvc", "repro")
    # The `textclf` command's tools are no stage's dependency: editing one changes no result
    tool = project / "src" / "textclf" / "commands" / "seeds.py"
    tool.write_text(tool.read_text() + "\n# an edit\n")
    assert "up to date" in sh(project, "dvc", "status")
    # zero_shot.py is imported by the train stage only indirectly (stages/train.py imports it,
    # and it imports models and tokenization): a change to any module of the package counts.
    module = project / "src" / "textclf" / "zero_shot.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    status = sh(project, "dvc", "status")
    for stage in ("prepare", "train", "evaluate"):
        assert f"{stage}:" in status, status
    assert "src/textclf" in status
    out = sh(project, "dvc", "repro")
    assert "Running stage 'train'" in out


@pytest.mark.slow
def test_after_a_failed_run_the_run_cache_brings_the_last_good_outputs_back(project):
    sh(project, "dvc", "repro")
    good = {p.name: p.read_bytes() for p in (project / "models").iterdir() if p.is_file()}
    metrics = read(project, "train.json"), read(project, "eval.json")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"]["trainable_blocks"] = 9  # the tiny model has 4: train fails at its start
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True, env=ENV)
    assert result.returncode != 0 and "trainable_blocks is 9" in result.stdout + result.stderr
    # DVC removed the failed stage's outputs before running it; the good run is in the cache
    sh(project, "git", "checkout", "params.yaml")
    out = sh(project, "dvc", "repro")
    assert "Stage 'train' is cached - skipping run" in out, out
    assert {p.name: p.read_bytes() for p in (project / "models").iterdir() if p.is_file()} == good
    assert (read(project, "train.json"), read(project, "eval.json")) == metrics
    assert "up to date" in sh(project, "dvc", "status")


@pytest.mark.slow
def test_bad_params_fail_before_work(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["method"] = "prompting"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run(["dvc", "repro"], cwd=project, capture_output=True, text=True, env=ENV)
    assert result.returncode != 0
    assert "method must be one of 'zero_shot', 'finetune', 'lora'" in result.stdout + result.stderr
    assert not (project / "data" / "prepared").exists()
