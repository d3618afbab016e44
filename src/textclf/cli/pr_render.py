"""The PR report's Markdown, from the `Findings` of pr_query.py: the marker and title, the stale
results, the headline table, the inputs each side read (pr_inputs.py), dvc's warnings, the folded
details cut to fit --max-chars, and the charts (pr_charts.py). Pure functions of the findings;
standard library only.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import PurePosixPath

from textclf.cli.pr_inputs import inputs_section, is_inputs_file
from textclf.cli.pr_query import (
    BASELINE,
    HEADLINE,
    PER_CLASS,
    ClassFiles,
    Findings,
    Row,
    Stale,
)

MARKER = "<!-- textclf-pr-report -->"
MAX_CHARS = 60_000  # GitHub rejects a comment over 65,536 characters: kept well under
NOTE_ROOM = 400  # characters kept back per details block for its "rows not shown" note
SUMMARY_NAMES = 3  # changed params named in the folded block's one-line summary
MAX_WARNINGS = 5  # dvc warnings quoted (e.g. a metrics file it could not read)
MAX_STALE_ROWS = 50  # stale stages listed (a compare change can make dozens stale at once)
MAX_CLASSES = 12  # classes shown by class; beyond, the WEAKEST (lowest F1 in the PR) only
WEAKEST = 8
TOP_PAIRS = 5  # pairs of classes most often confused, named under the per-class table


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


def points(model: float, baseline: float) -> str:
    """The model's accuracy against the baseline's, in percentage points: "+2.1 points over"."""
    diff = round(100 * (model - baseline), 1)
    return f"{'+' if diff >= 0 else '-'}{abs(diff):.1f} points {'over' if diff >= 0 else 'under'}"


def baseline_section(rows: list[Row], base: str) -> str | None:
    """The model's accuracy beside the baseline's (the baseline stage's metrics file), in the PR
    and, when both files are there, at the base; None without the model's accuracy."""
    def row(file: PurePosixPath, name: str) -> Row:
        return next((r for r in rows if r.file == str(file) and r.name == name),
                    Row(str(file), name, None, None))

    model, baseline = row(HEADLINE, "accuracy"), row(BASELINE, "accuracy")
    if model.new is None:
        return None
    what = "TF-IDF + logistic regression (the `baseline` stage)"
    if baseline.new is None:
        return (f"No baseline in this PR: `{BASELINE}` is missing; `dvc repro baseline` fits "
                f"{what} on the same split in seconds to a minute on a CPU.")
    n_model, n_baseline = row(HEADLINE, "n").new, row(BASELINE, "n").new
    if n_model != n_baseline:
        return (f"**Not comparable with the baseline:** it scored {n_baseline} test texts, the "
                f"model {n_model}; rerun both on the same data (`dvc repro`).")
    text = (f"**Against the baseline:** the model's accuracy is "
            f"**{points(model.new, baseline.new)}** {what}, "
            f"{with_ci(baseline.new, baseline.ci_new)}, on the same {n_model} test texts.")
    if model.old is not None and baseline.old is not None:
        text += f" At `{base}`: {points(model.old, baseline.old).rsplit(' ', 1)[0]}."
    return text


def csv_rows(text: str | None) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text))) if text else []


def as_number(text: str | None):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def class_section(files: ClassFiles | None, base: str) -> str:
    """Each class's F1 at the base and in the PR, with precision, recall and support (beyond
    MAX_CLASSES, the WEAKEST only), then the classes most often confused; "" without the
    per-class file."""
    now = csv_rows(files.per_class) if files else []
    if not now:
        return ""
    old = {r["class"]: as_number(r["f1"]) for r in csv_rows(files.per_class_base)}
    shown, what = now, f"every class of `{PER_CLASS}`"
    if len(now) > MAX_CLASSES:
        shown = sorted(now, key=lambda r: as_number(r["f1"]) or 0.0)[:WEAKEST]
        what = f"the {WEAKEST} weakest of {len(now)} classes by F1 in the PR; all in `{PER_CLASS}`"
    rows = [(r, Row(str(PER_CLASS), r["class"], old.get(r["class"]), as_number(r["f1"])))
            for r in shown]
    lines = table_lines(["class", f"F1 `{base}`", "F1 PR", "Δ", "precision", "recall",
                         "support"],
                        [[row.name, number(row.old), number(row.new), delta(row),
                          number(as_number(r["precision"])), number(as_number(r["recall"])),
                          r["support"]] for r, row in rows])
    pairs = csv_rows(files.confused_pairs)[:TOP_PAIRS]
    if len(now) > 2 and pairs:
        lines += ["", "Most often confused with each other: " + "; ".join(
            f"{p['class_a']} and {p['class_b']}, {p['count']} times ({p['a_as_b']} "
            f"{p['class_a']} predicted as {p['class_b']}, {p['b_as_a']} {p['class_b']} as "
            f"{p['class_a']})" for p in pairs) + "."]
    return f"### By class ({what})\n\n" + "\n".join(lines)


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


def render(found: Findings, max_chars: int = MAX_CHARS) -> str:
    """The Markdown document, at most `max_chars` long (0: no limit)."""
    base = found.base
    parts = [MARKER, found.title]
    if found.stale:
        parts.append(stale_section(found.stale, found.downstream))
    headline = [r for r in found.metrics if r.file == str(HEADLINE)]
    metrics = [r for r in found.metrics if not is_inputs_file(r.file)]
    parts.append(headline_section(headline, found.headline_order, base,
                                  any(r.changed for r in metrics)))
    against = baseline_section(found.metrics, base)
    if against:
        parts.append(against)
    if classes := class_section(found.classes, base):
        parts.append(classes)
    inputs = inputs_section(found.metrics, base)
    if inputs:
        parts.append(inputs)
    if found.warnings:
        parts.append("\n".join(["> [!NOTE]", "> dvc could not read everything; what it said:",
                                *[f"> `{w[:300]}`" for w in found.warnings[:MAX_WARNINGS]]]))
    if not found.params:
        parts.append(f"No params changed against `{base}`.")
    plots = "### Plots\n\n" + "\n\n".join(found.charts) if found.charts else ""

    # The size limit: the marker, title, stale list and headline always stay; the charts go if
    # they do not fit; the folded details keep as many rows as fit, in order, with a note of
    # how many were left out (NOTE_ROOM kept back for each note).
    others = [r for r in metrics if r.file != str(HEADLINE) and r.changed]
    blocks = details(found.params, others, base)
    hint = f"run `textclf pr-report --base {base} --max-chars 0` locally to see them all"
    limit = max_chars or sys.maxsize

    def room_left(fixed: list[str]) -> int:
        return limit - len("\n\n".join(fixed)) - len(blocks) * (NOTE_ROOM + 2)

    fixed = list(parts)  # no folded block and no code fence in these: cut between lines
    room = room_left(parts + [plots])
    if plots and room < 0:
        plots = "### Plots\n\nLeft out: the report is at its size limit."
        fixed = list(parts)  # no folded block and no code fence in these: cut between lines
    room = room_left(parts + [plots])
    for summary, header, rows in blocks:
        text = details_block(summary, header, table_lines(header, rows)[2:],
                             max(0, room) + NOTE_ROOM, hint)
        room -= len(text) - NOTE_ROOM
        parts.append(text)
    text = "\n\n".join(parts + [plots] if plots else parts) + "\n"
    if len(text) > limit:  # only when the headline or stale list leaves no room for the rest
        text = cut(fixed, limit, f"**Report cut at the size limit**: the folded details and the "
                                 f"plots are left out; {hint}.")
    return text


def cut(parts: list[str], limit: int, notice: str) -> str:
    """`parts` (the marker first, no <details> or code fence in any) cut at a line boundary to
    fit `limit` with `notice` after them; the marker always stays, whatever the limit."""
    body = "\n\n".join(parts)
    room = limit - len(notice) - 3  # "\n\n" before the notice, "\n" after it
    if len(body) > room:
        body = body[:room].rsplit("\n", 1)[0] if room > len(MARKER) else MARKER
    return body.rstrip() + "\n\n" + notice + "\n"
