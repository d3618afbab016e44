"""The repository's own promises: one `textclf` command, light imports where no model runs,
declared dependencies, no machine paths in committed files, and a layout of short modules and
functions without import circles."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny import ENV

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


def subcommands() -> list[str]:
    from textclf.cli import COMMANDS

    return list(COMMANDS)


@pytest.mark.parametrize("name", subcommands())
def test_each_subcommand_help_shows_each_default_once_and_only_real_ones(name):
    result = run("textclf", name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: textclf {name}")
    assert "(default: " in result.stdout
    # an argument's entry starts two spaces in; its help goes on, indented further
    for entry in re.split(r"\n  (?=\S)", result.stdout):
        entry = " ".join(entry.split())
        assert entry.count("(default:") <= 1, entry
        assert "(default: None)" not in entry and "(default: False)" not in entry, entry


def test_version_is_the_installed_packages():
    from importlib.metadata import version

    result = run("textclf", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"textclf {version('textclf')}\n"
    assert "--version" in run("textclf", "--help").stdout


def test_unknown_subcommand_is_one_clear_error():
    result = run("textclf", "predcit")
    assert result.returncode == 2
    assert "error: unknown command 'predcit'" in result.stderr


def test_the_compare_stage_and_the_cli_import_no_torch():
    code = ("import sys, textclf.cli, textclf.core.runner, textclf.compare, textclf.core.errors; "
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


def package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (every import statement, function-level too)."""
    def name_of(path: Path) -> str:
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                candidates = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def test_the_package_has_no_import_circle():
    """The layout is the architecture: core imports nothing of the stages' folders, and no two
    modules import each other, even through others (a function-level import counts)."""
    graph = package_imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph[module]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(path + [module, nxt])
            if nxt not in state:
                visit(nxt, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def part_of(module: str) -> str:
    """The part of the package a module is in, as docs/design.md names it: a folder of
    src/textclf ("core/") or a module beside them ("compare.py")."""
    top = module.split(".")[1]
    return f"{top}/" if (PACKAGE / top).is_dir() else f"{top}.py"


def drawn_imports() -> dict[str, set[str]]:
    """docs/design.md's drawing of the package: part -> the other parts it imports."""
    text = (REPO / "docs" / "design.md").read_text()
    block = text.split("### Dependencies", 1)[1].split("```", 2)[1]
    drawn = {}
    for line in block.splitlines():
        part, arrow, imported = (s.strip() for s in line.partition("─►"))
        if arrow:
            drawn[part] = set(re.findall(r"\b\w+/|\b\w+\.py\b", imported)) - {part}
    return drawn


def test_design_md_draws_what_each_part_imports():
    """The layout is the architecture, drawn in docs/design.md: each part of the package
    imports exactly the parts its arrow names, and each stage script its own part, modeling/
    and core/ at most, and what its own line adds."""
    drawn = drawn_imports()
    actual: dict[str, set[str]] = {}
    for module, imported in package_imports().items():
        if module != "textclf":  # the package's __init__.py, which imports nothing
            actual.setdefault(part_of(module), set()).update(
                part_of(other) for other in imported if other != "textclf")
    actual = {part: imported - {part} for part, imported in actual.items()}
    stage_lines = {part: drawn.pop(part) for part in list(drawn) if part.startswith("stages/")}
    assert actual == drawn
    for script in sorted((REPO / "stages").glob("*.py")):
        own = f"{script.stem}/" if (PACKAGE / script.stem).is_dir() else f"{script.stem}.py"
        imported = {part_of(name) for name in re.findall(r"^(?:from|import) (textclf\.\w+)",
                                                            script.read_text(), re.M)}
        allowed = {"modeling/", "core/"} | ({own} & stage_lines["stages/<stage>.py"])
        allowed |= stage_lines.get(f"stages/{script.name}", set())
        assert imported <= allowed, (script.name, imported - allowed)


MAX_MODULE_LINES = 400  # a longer module holds more than one concern


def test_no_module_is_over_400_lines():
    """The layout is the architecture: no module under src/ or benchmarks/ over ~400 lines, so a
    reader finds one concern per file (a longer one wants splitting by concern)."""
    repo = Path(__file__).resolve().parents[1]
    too_long = {}
    for folder in ("src", "benchmarks"):
        for path in sorted((repo / folder).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES:
                too_long[path.relative_to(repo).as_posix()] = lines
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split by concern): {too_long}"


MAX_FUNCTION_LINES = 100  # a screenful or two; a longer function holds more than one step


def test_no_function_is_over_100_lines():
    """No function or method under src/ or stages/ over ~100 lines (decorators and docstring
    included): a reader sees each whole, and its parts have names of their own."""
    too_long = {}
    for folder in ("src", "stages"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    lines = node.end_lineno - first + 1
                    if lines > MAX_FUNCTION_LINES:
                        where = f"{path.relative_to(REPO).as_posix()}:{node.lineno} {node.name}"
                        too_long[where] = lines
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {too_long}"


def readme_tree() -> list[str]:
    """The paths the README's layout drawing names, from its indentation (4 characters a level;
    the first name of a line, and each name of a leading comma list such as `a.py, b.py`)."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    paths, parents = [], []
    for line in block.splitlines()[1:]:
        match = re.match(r"^((?:│   |    )*)(?:├── |└── )(.*)$", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4
        parents = parents[:depth]
        names = re.match(r"^([\w./-]+(?:, [\w./-]+)*)", match.group(2)).group(1).split(", ")
        for name in names:
            paths.append("/".join(parents + [name.rstrip("/")]))
        parents.append(names[0].rstrip("/"))
    return paths


def test_the_readme_layout_matches_the_tree():
    named = readme_tree()
    assert "src/textclf/core/params.py" in named and "stages/this_checkout.py" in named
    missing = [p for p in named if not (REPO / p).exists()]
    assert not missing, f"the README's layout names what is not there: {missing}"
    # and every folder of the package and every stage script is in it
    for path in [*sorted((REPO / "src/textclf").iterdir()), *sorted((REPO / "stages").iterdir()),
                 *sorted((REPO / "benchmarks").iterdir())]:
        if path.name.startswith(("_", ".")) or path.suffix not in ("", ".py"):
            continue
        assert path.relative_to(REPO).as_posix() in named, f"{path} is not in the README's layout"


def test_the_docs_name_the_pipelines_stages_in_order():
    """README's first paragraph, its layout (dvc.yaml's line and stages/) and every chain of
    stage names in README.md, docs/design.md and dvc.yaml name dvc.yaml's stages, in its order."""
    import yaml

    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    chain = " → ".join(stages)
    readme = (REPO / "README.md").read_text()
    first_paragraph = readme.split("\n\n")[1]
    assert f"`{chain}`" in first_paragraph, first_paragraph
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    (dvc_yaml,) = [line for line in layout.splitlines() if "── dvc.yaml " in line]
    assert chain in dvc_yaml, dvc_yaml
    scripts = [p.removeprefix("stages/").removesuffix(".py") for p in readme_tree()
               if p.startswith("stages/")]
    assert [s for s in scripts if s in stages] == stages, scripts
    for doc in ("README.md", "docs/design.md", "dvc.yaml"):
        for found in re.findall(r"prepare(?: (?:→|->) \w+)+", (REPO / doc).read_text()):
            assert found.replace("->", "→") == chain, (doc, found)
