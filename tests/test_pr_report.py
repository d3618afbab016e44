"""The pull request report: `python -m textclf.pr_report` in a temporary git + DVC repository
whose two commits differ in params and metrics, and the workflow that posts it."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tiny
from textclf import pr_report

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "pr-report.yml"
ENV = {**tiny.ENV, "DVC_NO_ANALYTICS": "1"}

# A pipeline declaration is all `dvc params/metrics diff` need: nothing is ever run.
DVC_YAML = """\
stages:
  evaluate:
    cmd: python evaluate.py
    params:
      - method
      - train.lr
    metrics:
      - metrics/eval.json:
          cache: false
"""


def git(root: Path, *args: str) -> str:
    return tiny.sh(root, "git", *args)


def commit(root: Path, params: dict, metrics: dict, message: str) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """main: lora at lr 5e-4, accuracy 0.81; branch `feature` (checked out): lr 1e-3,
    accuracy 0.875; f1 and method unchanged."""
    root = tmp_path_factory.mktemp("pr_repo")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    tiny.sh(root, "dvc", "init", "-q")
    (root / "dvc.yaml").write_text(DVC_YAML)
    commit(root, {"method": "lora", "train": {"lr": 0.0005, "epochs": 3}},
           {"accuracy": 0.81, "f1": 0.8}, "baseline")
    git(root, "checkout", "-q", "-b", "feature")
    commit(root, {"method": "lora", "train": {"lr": 0.001, "epochs": 3}},
           {"accuracy": 0.875, "f1": 0.8}, "higher lr")
    (root / "sub").mkdir()
    return root


def run_report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textclf.pr_report", *args], cwd=cwd,
                          capture_output=True, text=True, env=ENV)


def table_row(markdown: str, *cells: str) -> bool:
    """Whether a row of a Markdown table holds `cells`, in this order (e.g. old, then new)."""
    for line in markdown.splitlines():
        if not line.startswith("|"):
            continue
        row = [c.strip() for c in line.strip("|").split("|")]
        if all(c in row for c in cells):
            positions = [row.index(c) for c in cells]
            if positions == sorted(positions):
                return True
    return False


@pytest.mark.parametrize("base", ["main", "first_commit"])
def test_report_shows_changed_params_and_metrics(repo, base):
    if base == "first_commit":
        base = git(repo, "rev-parse", "HEAD~1").strip()
    result = run_report(repo / "sub", "--base", base)  # from a subdirectory: runs at the root
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert md.splitlines()[0] == pr_report.MARKER == "<!-- textclf-pr-report -->"
    assert md.splitlines()[2].startswith("## ") and f"`{base}`" in md.splitlines()[2]
    params, metrics = md.split("### Params")[1].split("### Metrics")
    assert table_row(params, "params.yaml", "train.lr", "0.0005", "0.001")
    assert table_row(metrics, "metrics/eval.json", "accuracy", "0.81", "0.875")
    # only what changed
    assert not table_row(params, "method") and not table_row(metrics, "f1")
    assert "No params changed" not in md and "No metrics changed" not in md


def test_report_says_plainly_when_nothing_changed(repo):
    result = run_report(repo, "--base", "feature", "--plots-url", "https://example.com/plots")
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert "No params changed against `feature`." in md
    assert "No metrics changed against `feature`." in md
    assert "|" not in md  # no empty tables
    assert "[download](https://example.com/plots)" in md


def test_unknown_base_is_one_error_line(repo):
    result = run_report(repo, "--base", "no-such-branch")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: `dvc params diff no-such-branch --md` failed")
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_imports_only_the_standard_library():
    """CI installs dvc alone: no torch, transformers or numpy may be imported."""
    tree = ast.parse(Path(pr_report.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


def test_workflow():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "pull_request" in workflow[True]  # PyYAML reads the key `on` as True
    (job,) = workflow["jobs"].values()
    assert workflow["permissions"]["pull-requests"] == "write"
    assert "gpu" not in json.dumps(job["runs-on"]).lower()
    steps = job["steps"]
    runs = "\n".join(step.get("run", "") for step in steps)
    uses = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}

    # Full history and the base branch fetched; Python and dvc installed, nothing else
    assert uses["actions/checkout"]["with"]["fetch-depth"] == 0
    assert "git fetch" in runs and "${BASE_REF}" in runs
    assert job["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert "actions/setup-python" in uses
    installs = [step["run"] for step in steps if "pip install" in step.get("run", "")]
    assert len(installs) == 1 and "dvc" in installs[0]
    assert not any(name in installs[0] for name in ("torch", "transformers", " -e", "textclf"))
    assert "dvc pull" not in runs and "dvc remote" not in runs  # metrics live in git

    # The report against the base branch, posted as one comment found by its marker
    assert 'python -m textclf.pr_report --base "origin/${BASE_REF}"' in runs
    script = uses["actions/github-script"]["with"]["script"]
    assert pr_report.MARKER in script
    assert "updateComment" in script and "createComment" in script

    # dvc plots diff against the base, uploaded as an artifact
    (plots,) = [step for step in steps if "dvc plots diff" in step.get("run", "")]
    out_dir = plots["run"].split("--out")[1].split()[0]
    upload = uses["actions/upload-artifact"]["with"]
    assert upload["path"].rstrip("/") == out_dir and upload["name"]
    assert "origin/${BASE_REF}" in plots["run"]


def test_workflow_report_step_runs_here(repo, tmp_path):
    """The workflow's own report command, with the base branch as CI names it (a remote ref)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "feature", str(repo), str(clone)], check=True,
                   capture_output=True)
    (step,) = [s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["report"]["steps"]
               if "textclf.pr_report" in s.get("run", "")]
    env = {**ENV, "BASE_REF": "main", "PLOTS_URL": "", "GITHUB_STEP_SUMMARY": str(tmp_path / "s"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), ENV.get("PYTHONPATH", "")])}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=clone, env=env, check=True)
    md = (clone / "pr-report.md").read_text()
    assert md == (tmp_path / "s").read_text()
    assert table_row(md, "train.lr", "0.0005", "0.001")
    assert table_row(md, "accuracy", "0.81", "0.875")
    assert "### Plots" not in md  # no artifact URL, no link
