"""What the PR report reads: dvc and git, run at the DVC project's root and in each DVC project
nested in it (compare/), gathered into `Findings` for pr_render.py to write as Markdown.

`dvc metrics diff BASE --json --all`, `dvc params diff BASE --json`, `dvc status --json` and
`dvc dag --dot`; the plot files at BASE with `git show`. Standard library and the `dvc` command
only (CI installs no torch).
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from textclf.cli.pr_charts import CHARTS, mermaid
from textclf.core import paths

HEADLINE = PurePosixPath(paths.METRICS, "eval.json")  # the metrics of the headline table
BASELINE = PurePosixPath(paths.METRICS, "baseline.json")  # TF-IDF + logistic regression's
# The evaluate stage's per-class results: each class's precision, recall, F1 and support, and
# the pairs of classes most often confused with each other
PER_CLASS = PurePosixPath(paths.PLOTS, "per_class.csv")
CONFUSED_PAIRS = PurePosixPath(paths.PLOTS, "confused_pairs.csv")
MAX_ERROR = 400  # characters of a failed command's message quoted in the `error:` line


class ReportError(RuntimeError):
    """A dvc or git command failed: the message holds the command and its error."""


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise ReportError(f"`{cmd[0]}` is not installed (pip install dvc)") from None
    if result.returncode != 0:
        # one line however many dvc printed (an invalid dvc.yaml takes several), warnings out
        lines = [" ".join(line.split()) for line in (result.stderr or result.stdout).splitlines()
                 if line.strip() and not line.startswith("WARNING:")]
        detail = " ".join(lines)[:MAX_ERROR] or f"exit status {result.returncode}"
        where = f" in {cwd}" if cwd else ""
        raise ReportError(f"`{' '.join(cmd)}` failed{where}: {detail}")
    return result


def dvc_json(calls: list[tuple[list[str], Path]], warnings: list[str]) -> list:
    """The --json outputs of dvc commands (arguments, directory), run side by side: each spends
    most of its half second starting up. dvc reports a file it cannot read as a warning and
    leaves it out (exit status 0): those warnings are kept for the report."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda call: run(["dvc", *call[0], "--json"], call[1]), calls))
    for result in results:
        warnings += [line for line in result.stderr.splitlines() if line.startswith("WARNING:")]
    return [json.loads(result.stdout or "{}") for result in results]


# ---------------------------------------------------------------- where: projects and revisions

@dataclass(frozen=True)
class Project:
    """A DVC project to report on: the root one, or one nested in it with its own .dvc."""
    path: Path
    prefix: str  # "" for the root project, "compare/" for a nested one

    def name(self, path: str) -> str:
        """A file or stage as seen from the root project ("../metrics/x" -> "metrics/x"; dvc
        names a dependency outside a nested project by its absolute path)."""
        if posixpath.isabs(path):
            root = self.path.joinpath(*[".."] * len(PurePosixPath(self.prefix).parts)).resolve()
            return Path(path).resolve().relative_to(root).as_posix() \
                if Path(path).resolve().is_relative_to(root) else path
        return posixpath.normpath(self.prefix + path) if self.prefix else path

    def stages_run(self) -> set[str]:
        """Stages with results: the entries of the project's dvc.lock ("train",
        "train@gpt2_lora"). A stage that never ran has no results to be stale."""
        lock = self.path / "dvc.lock"
        if not lock.is_file():
            return set()
        # dvc.lock as DVC writes it: "stages:", then one two-space-indented key per stage
        return set(re.findall(r"^  ([^\s:#][^:]*):\s*$", lock.read_text(), re.MULTILINE))


def project_root() -> Path:
    """The outermost DVC project around the current directory: from inside compare/ (a nested
    project) the report still covers the whole repository."""
    root = Path(run(["dvc", "root"]).stdout.strip()).resolve()
    top = Path(run(["git", "rev-parse", "--show-toplevel"], root).stdout.strip()).resolve()
    outer = [p for p in (root, *root.parents) if (p / ".dvc").is_dir() and p.is_relative_to(top)]
    return outer[-1]


def projects(root: Path) -> list[Project]:
    """The root project and the DVC projects nested in it (each holds a .dvc/config in git)."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--",
                  "*/.dvc/config"], root).stdout
    nested = sorted({path[:-len(".dvc/config")] for path in listed.split("\0") if path})
    return [Project(root, "")] + [Project(root / prefix, prefix) for prefix in nested]


def short_sha(rev: str, cwd: Path) -> str | None:
    try:
        return run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd).stdout.strip()
    except ReportError:
        return None


def file_at(base: str, path: PurePosixPath, root: Path) -> str | None:
    """A file's text at a git revision (None when it has no such file)."""
    try:
        return run(["git", "show", f"{base}:./{path}"], root).stdout
    except ReportError:
        return None


def file_now(path: PurePosixPath, root: Path) -> str | None:
    file = root / path
    return file.read_text() if file.is_file() else None


# ---------------------------------------------------------------- what changed: params, metrics

@dataclass(frozen=True)
class Row:
    """One param or metric: its value at the base and in the workspace (None: absent)."""
    file: str
    name: str
    old: object
    new: object
    ci_old: tuple | None = None  # (low, high) of the 95% CI, when the file holds one
    ci_new: tuple | None = None
    group: str = ""  # "" for the main pipeline, "compare/" for the compare runs' rows

    @property
    def changed(self) -> bool:
        return self.old != self.new or self.ci_old != self.ci_new


def group_of(path: str, project: Project) -> str:
    """Rows of a nested project belong to it; in the root project, rows under a directory with
    its own dvc.yaml (compare/ before it became a project of its own) belong to that directory."""
    if project.prefix:
        return project.prefix
    top = path.split("/", 1)[0]
    return f"{top}/" if "/" in path and (project.path / top / "dvc.yaml").is_file() else ""


def metric_rows(diff: dict, project: Project) -> list[Row]:
    """Rows of `dvc metrics diff --json`; `<name>_ci_low`/`_ci_high` fold into <name>'s row."""
    rows = []
    for file, metrics in diff.items():
        path = project.name(file)
        for name, value in metrics.items():
            stem, _, bound = name.rpartition("_ci_")
            if stem in metrics and bound in ("low", "high"):
                continue
            low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
            rows.append(Row(path, name, value.get("old"), value.get("new"),
                            _interval(low, high, "old"), _interval(low, high, "new"),
                            group_of(path, project)))
    return rows


def _interval(low: dict | None, high: dict | None, side: str) -> tuple | None:
    """The (low, high) bounds of one side ("old" or "new") of a metric's diff, if both exist."""
    if low and high and low.get(side) is not None and high.get(side) is not None:
        return low[side], high[side]
    return None


def param_rows(diff: dict, project: Project) -> list[Row]:
    return [Row(project.name(file), name, value.get("old"), value.get("new"))
            for file, params in diff.items() for name, value in params.items()]


# ---------------------------------------------------------------- stale results: dvc status

@dataclass(frozen=True)
class Stale:
    stage: str  # as the root project names it: "train", "compare/dvc.yaml:train@gpt2_lora"
    changes: list[str]  # what changed since the stage last ran, one phrase each
    rerun: str  # the command that reruns it: "dvc repro", "cd compare && dvc repro"


def what_changed(entries: list, project: Project, stage: str) -> list[str]:
    """The phrases for one stage of `dvc status --json`. A dependency or output that is merely
    absent ("deleted", "not in cache": an upstream stage's DVC-cached output, which a CI
    checkout without a DVC remote never has) is not a change of inputs and is left out. A stage
    that reads a whole params group (`train`) is told only the group changed: the params under
    it that differ from what the stage last ran with (its dvc.lock) name it better."""
    params, files, outs, command = [], [], [], False
    for entry in entries:
        if entry == "changed command":
            command = True
        if not isinstance(entry, dict):
            continue  # "always changed": a stage without dependencies, not stale
        for path, state in entry.get("changed deps", {}).items():
            name = project.name(path)
            if isinstance(state, dict):  # a params file: {key: "modified" | "new" | "deleted"}
                prefix = "" if name == "params.yaml" else f"{name}:"
                ran_with = locked_params(stage, project).get((project.path / path).resolve(), {})
                now = read_params(project.path / path)
                for key, how in state.items():
                    leaves = changed_leaves(ran_with.get(key, lookup(ran_with, key)),
                                            lookup(now, key), key) if how == "modified" else []
                    params += [f"{prefix}{leaf}" for leaf in leaves or [key]]
            elif state in ("modified", "new"):
                files.append(name)
        outs += [project.name(path) for path, state in entry.get("changed outs", {}).items()
                 if state == "modified"]
    changes = []
    if params:
        changes.append("params " + ", ".join(f"`{p}`" for p in params))
    if files:
        changes.append("files " + ", ".join(f"`{f}`" for f in files))
    if command:
        changes.append("command")
    if outs:
        changes.append("outputs differ from dvc.lock (edited by hand, or dvc.lock not committed): "
                       + ", ".join(f"`{o}`" for o in outs))
    return changes


ABSENT = object()  # a param missing on one side


def load_yaml(file: Path):
    """A YAML (or JSON) file's data; None when it cannot be read. PyYAML is imported here, not
    at the top: it comes with dvc (through omegaconf), the one package CI installs."""
    try:
        import yaml
    except ImportError:
        return None
    try:
        return yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def locked_params(stage: str, project: Project) -> dict[Path, dict]:
    """The params `stage` last ran with, from its dvc.lock: {params file, resolved: values}."""
    dvcfile, _, name = stage.rpartition(":")
    lock = project.path / PurePosixPath(dvcfile).parent / "dvc.lock"
    data = load_yaml(lock)
    try:
        return {(lock.parent / file).resolve(): values or {}
                for file, values in data["stages"][name]["params"].items()}
    except (KeyError, TypeError, AttributeError):
        return {}


def read_params(file: Path) -> dict:
    data = load_yaml(file)
    return data if isinstance(data, dict) else {}


def lookup(tree, key: str):
    """The value of a dotted params key ("train.lr") in nested dicts."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return ABSENT
        tree = tree[part]
    return tree


def changed_leaves(old, new, key: str) -> list[str]:
    """The dotted names of the values that differ between two params trees under `key`."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [leaf for k in dict.fromkeys([*new, *old])
                for leaf in changed_leaves(old.get(k, ABSENT), new.get(k, ABSENT), f"{key}.{k}")]
    return [] if old == new else [key]


def stale_stages(status: dict, project: Project) -> list[Stale]:
    ran = project.stages_run()
    stale = [Stale(stage_name(stage, project), what_changed(entries, project, stage),
                   rerun_command(stage, project))
             for stage, entries in status.items() if stage.rpartition(":")[2] in ran]
    return [s for s in stale if s.changes]


def rerun_command(stage: str, project: Project) -> str:
    """`dvc repro` runs the dvc.yaml of the directory it is started in: a stage of another
    dvc.yaml ("compare/dvc.yaml:train") needs that file named, a nested project its directory."""
    command = "dvc repro" + (f" {stage.split(':')[0]}" if ":" in stage else "")
    return f"cd {project.prefix.rstrip('/')} && {command}" if project.prefix else command


def stage_name(stage: str, project: Project) -> str:
    """A nested project's stage in DVC's address form, as the root project would name it."""
    return f"{project.prefix}dvc.yaml:{stage}" if project.prefix else stage


def downstream(stale: list[str], project: Project) -> list[str]:
    """Stages that depend on the stale ones, from `dvc dag --dot`: their results are stale too,
    though `dvc status` in a checkout without the DVC cache cannot tell."""
    dot = run(["dvc", "dag", "--dot"], project.path).stdout
    edges: dict[str, list[str]] = {}
    for src, dst in re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot):
        edges.setdefault(stage_name(src, project), []).append(stage_name(dst, project))
    seen, todo = set(stale), list(stale)
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return sorted(seen - set(stale))


# ---------------------------------------------------------------- everything together

@dataclass(frozen=True)
class ClassFiles:
    """The per-class CSV files' text (None: no such file)."""
    per_class_base: str | None
    per_class: str | None
    confused_pairs: str | None


@dataclass(frozen=True)
class Findings:
    """Everything the report says, read from dvc and git; `render` turns it into Markdown."""
    base: str
    title: str
    params: list[Row]  # changed params
    metrics: list[Row]  # every metric row, changed or not
    headline_order: list[str]  # the headline file's keys in its own order
    stale: list[Stale]
    downstream: list[str]  # stages downstream of the stale ones, not stale themselves
    warnings: list[str]  # what dvc said it could not read
    charts: list[str]  # Mermaid blocks
    classes: ClassFiles | None = None  # the per-class results at the base and in the PR


def gather(base: str, root: Path) -> Findings:
    """Run dvc and git for the workspace at `root` against the git revision `base`."""
    base_sha = short_sha(base, root)
    if base_sha is None:
        raise ReportError(f"`{base}` is not a git revision here (fetch it first: "
                          f"git fetch origin {base.removeprefix('origin/')})")
    warnings: list[str] = []
    params, metrics, stale, also = [], [], [], []
    found_projects = projects(root)
    outputs = iter(dvc_json([(args, project.path) for project in found_projects for args in
                             (["params", "diff", base], ["metrics", "diff", base, "--all"],
                              ["status"])], warnings))
    for project in found_projects:
        params_diff, metrics_diff, status = next(outputs), next(outputs), next(outputs)
        params += param_rows(params_diff, project)
        metrics += metric_rows(metrics_diff, project)
        found = stale_stages(status, project)
        stale += found
        if found:
            also += downstream([s.stage for s in found], project)
    try:  # the headline rows in the file's own order (dvc's JSON has its own)
        order = list(json.loads(file_now(HEADLINE, root) or file_at(base, HEADLINE, root) or "{}"))
    except (json.JSONDecodeError, TypeError):
        order = []
    head = short_sha("HEAD", root)
    charts = [mermaid(chart, file_at(base, chart.path, root), file_now(chart.path, root), base)
              for chart in CHARTS]
    return Findings(
        base=base,
        title=f"## DVC report: workspace{f' ({head})' if head else ''} against `{base}` "
              f"({base_sha})",
        # one row per file and name: a nested project that reads ../params.yaml reports it too
        params=sorted({(r.file, r.name): r for r in params}.values(),
                      key=lambda r: (r.file, r.name)),
        metrics=sorted({(r.file, r.name): r for r in metrics}.values(),
                       key=lambda r: (r.file, r.name)),
        headline_order=order, stale=stale,
        downstream=sorted(set(also) - {s.stage for s in stale}),
        warnings=warnings, charts=[c for c in charts if c],
        classes=ClassFiles(file_at(base, PER_CLASS, root), file_now(PER_CLASS, root),
                           file_now(CONFUSED_PAIRS, root)))
