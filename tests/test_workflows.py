"""The GitHub Actions workflows: CI runs .ci/run on every push and pull request, with the CPU
build of torch; the PR report installs the dvc that constraints.txt pins. .ci/run changes nothing
of the machine it runs on: the tests bring their own git identity."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from support.tiny import GIT_IDENTITY

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
CONSTRAINTS = REPO / "constraints.txt"


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> set[str]:
    """The events of `on:` (PyYAML reads the key `on` as True), written as a string, a list or
    a mapping."""
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on}
    return set(on)


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def pin(package: str) -> str:
    """`package==version` as constraints.txt pins it."""
    (line,) = [line.strip() for line in CONSTRAINTS.read_text().splitlines()
               if line.lower().startswith(f"{package}==")]
    return line


def test_ci_runs_ci_run_on_push_and_pull_request():
    workflow = load("ci.yml")
    assert {"push", "pull_request"} <= triggers(workflow)
    runs = [step.get("run", "") for step in steps(workflow)]
    assert any(re.search(r"(^|\s)\.ci/run(\s|$)", run, re.M) for run in runs), runs
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] > 0
    assert workflow["concurrency"]["cancel-in-progress"] is True


def test_ci_installs_the_cpu_build_of_the_pinned_torch_before_ci_run():
    """On GitHub's runners a plain `pip install torch` pulls the CUDA build from PyPI: the
    workflow puts the CPU build, at constraints.txt's version, into .ci/run's .venv first."""
    runs = [step.get("run", "") for step in steps(load("ci.yml"))]
    ci_run = next(i for i, run in enumerate(runs) if ".ci/run" in run)
    torch = [run for run in runs[:ci_run] if "download.pytorch.org/whl/cpu" in run]
    assert torch, "no step installs torch from the CPU index before .ci/run"
    assert ".venv" in torch[0], torch[0]
    assert "constraints.txt" in torch[0] or pin("torch") in torch[0], torch[0]
    # .ci/run's own `pip install torch==...` then finds it installed (any other version would
    # replace it with PyPI's CUDA build)
    assert f'"{pin("torch")}"' in (REPO / ".ci" / "run").read_text()


def test_pr_report_installs_the_pinned_dvc():
    installs = [step["run"] for step in steps(load("pr-report.yml"))
                if "pip install" in step.get("run", "") and re.search(r"\bdvc\b", step["run"])]
    assert installs, "no step of pr-report.yml installs dvc"
    for run in installs:
        assert "constraints.txt" in run or pin("dvc") in run, run


def test_ci_run_leaves_the_machines_git_config_alone():
    assert not re.search(r"git\s+config\s+--global", (REPO / ".ci" / "run").read_text())


def test_the_tests_commit_on_a_machine_without_a_git_identity(tmp_path):
    """The helpers' repositories (tiny.dvc_project, a clone of it) take commits with HOME an
    empty directory and no system git config: the identity is the helpers' own."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "EMAIL"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1")
    code = f"""
from pathlib import Path
from support import tiny
root = tiny.dvc_project(Path({str(tmp_path / "project")!r}), {{"seed": 1}})
tiny.sh(root.parent, "git", "clone", "-q", str(root), "clone")
tiny.sh(root.parent / "clone", "git", "commit", "-q", "--allow-empty", "-m", "in the clone")
print(tiny.sh(root.parent / "clone", "git", "log", "--format=%an <%ae>, %cn <%ce>"))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    name, email = GIT_IDENTITY["GIT_AUTHOR_NAME"], GIT_IDENTITY["GIT_AUTHOR_EMAIL"]
    assert result.stdout.split("\n")[:2] == [f"{name} <{email}>, {name} <{email}>"] * 2


def test_the_readme_and_ci_yml_say_which_tests_ci_runs():
    """The pytest commands of .ci/run, verbatim in README's set-up and ci.yml's comments, and
    their --native-bf16 answers in the README's layout entry of .ci/run."""
    commands = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.startswith("python -m pytest")]
    assert len(commands) >= 1
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set-up and tests", 1)[1].split("\n## ", 1)[0]
    comments = [line.lstrip("# ").strip()
                for line in (WORKFLOWS / "ci.yml").read_text().splitlines() if line.startswith("#")]
    layout = readme.split("## Layout", 1)[1]
    ci_run = layout.split("── .ci/run", 1)[1].split("├──", 1)[0]
    for command in commands:
        assert command in setup.splitlines(), command
        assert command in comments, command
        for answer in re.findall(r"--native-bf16=\w+", command):
            assert answer in ci_run, (answer, ci_run)
