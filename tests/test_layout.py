"""The repository's own promises: one `textclf` command, light imports where no model runs,
declared dependencies, and no machine paths in committed files."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import ENV

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "textclf"
# distribution name -> the module it provides, where they differ
MODULE_OF = {"pyyaml": "yaml", "scikit-learn": "sklearn"}


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=REPO)


def test_textclf_help_lists_every_subcommand():
    from textclf.cli import COMMANDS

    result = run("textclf", "--help")
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("name", ["predict", "compare", "seeds", "pr-report"])
def test_each_subcommand_help_shows_its_defaults(name):
    result = run("textclf", name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: textclf {name}")
    assert "(default: " in result.stdout


def test_unknown_subcommand_is_one_clear_error():
    result = run("textclf", "predcit")
    assert result.returncode == 2
    assert "error: unknown command 'predcit'" in result.stderr


def test_the_compare_stage_and_the_cli_import_no_torch():
    code = ("import sys, textclf.cli, textclf.stage, textclf.comparison, textclf.errors; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def imported_modules(root: Path) -> set[str]:
    """Top-level names of the modules imported anywhere under `root` (absolute imports only)."""
    names = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_pyproject_declares_every_third_party_module_the_package_imports():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!\[ ]", spec)[0].lower() for spec in project["dependencies"]}
    declared = {MODULE_OF.get(name, name) for name in declared}
    third_party = imported_modules(PACKAGE) - set(sys.stdlib_module_names) - {"textclf"}
    assert third_party <= declared, f"imported but not declared: {third_party - declared}"


def test_committed_files_hold_no_machine_paths():
    files = run("git", "ls-files").stdout.split()
    pattern = re.compile(r"(/work/main|/root/|/home/\w+|/Users/\w+)")
    offenders = [name for name in files
                 if name.endswith((".json", ".md", ".yaml", ".yml", ".csv", ".toml"))
                 and pattern.search((REPO / name).read_text(errors="replace"))]
    assert offenders == []
