"""PR report: what the workspace changes in params, metrics and plots against a base, in Markdown.

    textclf pr-report --base main                    # from anywhere in the repo
    textclf pr-report --base main --max-chars 0      # every row, however long
    PYTHONPATH=src python -m textclf.cli.pr_report --base origin/main --fail-on-stale
                                                     # what CI posts on each pull request

It runs, at the DVC project's root and in each DVC project nested in it (compare/):
`dvc metrics diff BASE --json --all`, `dvc params diff BASE --json` and `dvc status --json`, and
reads the plot files at BASE with `git show`. Metrics and plot data are `cache: false` files kept
in git, so no DVC remote is needed; standard library and the `dvc` command only (CI installs no
torch). The document, at most --max-chars long (GitHub rejects a comment over 65,536):

  - a hidden marker line, by which CI finds and updates its earlier comment, and a title;
  - Stale results, when `dvc status` finds stages whose params, code or data changed since they
    last ran: the numbers that follow are then not this PR's;
  - the headline table: each metric of metrics/eval.json, base and PR with the 95% CI, delta;
  - folded details: every changed param, every other changed metric, the compare runs' rows,
    cut to fit with a note of how many rows were left out;
  - charts GitHub draws itself (Mermaid): ROC curve, accuracy by review length, training loss.

Exit status 0; 1 with --fail-on-stale when results are stale (after printing the report);
2 on an error, with one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from textclf.cli import HelpFormatter
from textclf.cli.pr_charts import CHARTS, mermaid
from textclf.core import paths

MARKER = "<!-- textclf-pr-report -->"
MAX_CHARS = 60_000  # GitHub rejects a comment over 65,536 characters: kept well under
HEADLINE = PurePosixPath(paths.METRICS, "eval.json")
NOTE_ROOM = 400  # characters kept back per details block for its "rows not shown" note
SUMMARY_NAMES = 3  # changed params named in the folded block's one-line summary
MAX_WARNINGS = 5  # dvc warnings quoted (e.g. a metrics file it could not read)
MAX_ERROR = 400  # characters of a failed command's message quoted in the `error:` line
MAX_STALE_ROWS = 50  # stale stages listed (a compare change can make dozens stale at once)


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

            def ci(side: str) -> tuple | None:
                if low and high and low.get(side) is not None and high.get(side) is not None:
                    return low[side], high[side]
                return None

            rows.append(Row(path, name, value.get("old"), value.get("new"), ci("old"), ci("new"),
                            group_of(path, project)))
    return rows


def param_rows(diff: dict, project: Project) -> list[Row]:
    return [Row(project.name(file), name, value.get("old"), value.get("new"))
            for file, params in diff.items() for name, value in params.items()]


# ---------------------------------------------------------------- stale results: dvc status

@dataclass(frozen=True)
class Stale:
    stage: str  # as the root project names it: "train", "compare/dvc.yaml:train@gpt2_lora"
    changes: list[str]  # what changed since the stage last ran, one phrase each
    rerun: str  # the command that reruns it: "dvc repro", "cd compare && dvc repro"


def what_changed(entries: list, project: Project, changed_params: list[str]) -> list[str]:
    """The phrases for one stage of `dvc status --json`. A dependency or output that is merely
    absent ("deleted", "not in cache": an upstream stage's DVC-cached output, which a CI
    checkout without a DVC remote never has) is not a change of inputs and is left out. A stage
    that reads a whole params group (`train`) is told only the group changed: the params that
    changed against the base under it (`train.lr`) name it better."""
    params, files, outs, command = [], [], [], False
    for entry in entries:
        if entry == "changed command":
            command = True
        if not isinstance(entry, dict):
            continue  # "always changed": a stage without dependencies, not stale
        for path, state in entry.get("changed deps", {}).items():
            path = project.name(path)
            if isinstance(state, dict):  # a params file: {key: "modified" | "new" | "deleted"}
                prefix = "" if path == "params.yaml" else f"{path}:"
                for key in state:
                    leaves = [p for p in changed_params if p.startswith(f"{prefix}{key}.")]
                    params += leaves or [f"{prefix}{key}"]
            elif state in ("modified", "new"):
                files.append(path)
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


def stale_stages(status: dict, project: Project, params: list[Row]) -> list[Stale]:
    changed = [r.name if r.file == "params.yaml" else f"{r.file}:{r.name}" for r in params]
    ran = project.stages_run()
    stale = [Stale(stage_name(stage, project), what_changed(entries, project, changed),
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


# ---------------------------------------------------------------- Markdown

def number(value) -> str:
    """A metric value: at most 4 decimals (the pipeline writes 6), integers as integers."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    if abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def with_ci(value, ci: tuple | None) -> str:
    return f"{number(value)} ({number(ci[0])}-{number(ci[1])})" if ci else number(value)


def delta(row: Row) -> str:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (row.old, row.new)):
        return "new" if row.old is None else "removed" if row.new is None else ""
    diff = row.new - row.old
    return "0" if diff == 0 else ("+" if diff > 0 else "-") + number(abs(diff))


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table_lines(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def param_value(value) -> str:
    """A param as written (0.0005 stays 0.0005): params are settings, not measurements."""
    return "—" if value is None else str(value)


def headline_section(rows: list[Row], order: list[str], base: str, anything_changed: bool) -> str:
    title = f"### Headline: `{HEADLINE}`"
    if not rows:
        return f"{title}\n\nNo `{HEADLINE}` at `{base}` or in the workspace."
    rank = {name: i for i, name in enumerate(order)}
    rows = sorted(rows, key=lambda r: (rank.get(r.name, len(rank)), r.name))
    lines = table_lines(["metric", f"`{base}` (95% CI)", "PR (95% CI)", "Δ"],
                        [[r.name, with_ci(r.old, r.ci_old), with_ci(r.new, r.ci_new), delta(r)]
                         for r in rows])
    text = f"{title}\n\n" + "\n".join(lines)
    if not anything_changed:
        text += f"\n\nNo metrics changed against `{base}`."
    return text


def stale_section(stale: list[Stale], also: list[str]) -> str:
    n = len(stale)
    reruns = " and ".join(f"`{c}`" for c in dict.fromkeys(s.rerun for s in stale))
    lines = [
        "### ⚠️ Stale results",
        "",
        "> [!WARNING]",
        f"> **The results in this PR are not from its code and params.** `dvc status` finds "
        f"{plural(n, 'stage')} whose params, code or data changed after "
        f"{'it' if n == 1 else 'they'} last ran, so the metrics and plots below come from the "
        "earlier run. Rerun "
        f"({reruns}) and commit `dvc.lock` with the results. A change that cannot move any result"
        " (a refactor, a comment) is recorded without rerunning by `dvc commit <stage>`.",
        "",
        *table_lines(["stage", "changed since it last ran"],
                     [[f"`{s.stage}`", "; ".join(s.changes)] for s in stale[:MAX_STALE_ROWS]]),
    ]
    if n > MAX_STALE_ROWS:
        lines += ["", f"... and {n - MAX_STALE_ROWS} more stages (`dvc status` lists them all)."]
    if also:
        lines += ["", "Downstream of these, stale too: " + ", ".join(f"`{s}`" for s in also) + "."]
    return "\n".join(lines)


def details_block(summary: str, header: list[str], lines: list[str], room: int,
                  hint: str) -> str:
    """A folded table of `lines` (rendered rows) in at most `room` characters: as many rows as
    fit, then a note of how many were left out."""
    def block(kept: int) -> str:
        body = table_lines(header, []) + lines[:kept]
        note = [] if kept == len(lines) else [
            "", f"**{len(lines) - kept} more rows not shown** (the report is cut to fit a PR "
            f"comment); {hint}."]
        return "\n".join([f"<details><summary>{summary}</summary>", "", *body, *note,
                          "", "</details>"])

    kept, size = len(lines), len(block(len(lines)))
    if size > room:
        kept, size = 0, len(block(0))
        while kept < len(lines) and size + len(lines[kept]) + 1 <= room:
            size += len(lines[kept]) + 1
            kept += 1
    return block(kept)


def metric_line(r: Row) -> list:
    return [r.file, r.name, with_ci(r.old, r.ci_old), with_ci(r.new, r.ci_new), delta(r)]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def details(params: list[Row], metrics: list[Row], base: str) -> list[tuple[str, list[str], list]]:
    """The folded blocks, most wanted first (the cut takes rows from the last ones):
    (summary, header, rows)."""
    blocks = []
    names = ", ".join(f"`{r.name}`" for r in params[:SUMMARY_NAMES])
    more = ", ..." if len(params) > SUMMARY_NAMES else ""
    blocks.append((f"Params: {plural(len(params), 'change')} ({names}{more})",
                   ["file", "param", f"`{base}`", "PR"],
                   [[r.file, r.name, param_value(r.old), param_value(r.new)] for r in params]))
    groups = sorted({r.group for r in metrics}, key=lambda g: (g != "", g))
    for group in groups:
        rows = [r for r in metrics if r.group == group]
        what = "Other metrics" if not group else f"`{group}` metrics"
        files = len({r.file for r in rows})
        blocks.append((f"{what}: {plural(len(rows), 'change')} in {plural(files, 'file')}",
                       ["file", "metric", f"`{base}`", "PR", "Δ"],
                       [metric_line(r) for r in rows]))
    return [b for b in blocks if b[2]]


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
        found = stale_stages(status, project, params)
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
        warnings=warnings, charts=[c for c in charts if c])


def render(found: Findings, max_chars: int = MAX_CHARS) -> str:
    """The Markdown document, at most `max_chars` long (0: no limit)."""
    base = found.base
    parts = [MARKER, found.title]
    if found.stale:
        parts.append(stale_section(found.stale, found.downstream))
    headline = [r for r in found.metrics if r.file == str(HEADLINE)]
    changed = any(r.changed for r in found.metrics)
    parts.append(headline_section(headline, found.headline_order, base, changed))
    if found.warnings:
        parts.append("\n".join(["> [!NOTE]", "> dvc could not read everything; what it said:",
                                *[f"> `{w[:300]}`" for w in found.warnings[:MAX_WARNINGS]]]))
    if not found.params:
        parts.append(f"No params changed against `{base}`.")
    plots = "### Plots\n\n" + "\n\n".join(found.charts) if found.charts else ""

    # The size limit: the marker, title, stale list and headline always stay; the charts go if
    # they do not fit; the folded details keep as many rows as fit, in order, with a note of
    # how many were left out (NOTE_ROOM kept back for each note).
    others = [r for r in found.metrics if r.file != str(HEADLINE) and r.changed]
    blocks = details(found.params, others, base)
    hint = f"run `textclf pr-report --base {base} --max-chars 0` locally to see them all"
    limit = max_chars or sys.maxsize

    def room_left(fixed: list[str]) -> int:
        return limit - len("\n\n".join(fixed)) - len(blocks) * (NOTE_ROOM + 2)

    room = room_left(parts + [plots])
    if plots and room < 0:
        plots = "### Plots\n\nLeft out: the report is at its size limit."
        room = room_left(parts + [plots])
    for summary, header, rows in blocks:
        text = details_block(summary, header, table_lines(header, rows)[2:],
                             max(0, room) + NOTE_ROOM, hint)
        room -= len(text) - NOTE_ROOM
        parts.append(text)
    text = "\n\n".join(parts + [plots] if plots else parts) + "\n"
    if len(text) > limit:  # only when the headline or stale list alone is over the limit
        text = text[:limit - 200].rsplit("\n", 1)[0] + "\n\n**Report cut at the size limit.**\n"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf pr-report", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--fail-on-stale", action="store_true",
                        help="exit with status 1, after printing the report, when `dvc status` "
                             "finds results not rerun after their params, code or data changed")
    parser.add_argument("--max-chars", type=int, default=MAX_CHARS,
                        help="cut the folded details to keep the report this short; 0: no limit")
    args = parser.parse_args(argv)
    try:
        found = gather(args.base, project_root())
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(render(found, args.max_chars), end="")
    if args.fail_on_stale and found.stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
