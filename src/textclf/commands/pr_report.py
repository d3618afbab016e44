"""PR report: what the workspace changes in params and metrics against a base, in Markdown.

    python -m textclf.pr_report                       # against main, from anywhere in the repo
    python -m textclf.pr_report --base origin/main    # what CI posts on each pull request

Runs `dvc params diff BASE --md` and `dvc metrics diff BASE --md` at the repository root. The
metrics files are `cache: false` (they live in git), so no DVC remote is needed. Needs only the
standard library and the `dvc` command: CI installs nothing else (no torch). The document starts
with a hidden marker line by which CI finds its own earlier comment and updates it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

MARKER = "<!-- textclf-pr-report -->"


class ReportError(RuntimeError):
    """A dvc or git command failed: the message holds the command and its error."""


def run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise ReportError(f"`{cmd[0]}` is not installed (pip install dvc)") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise ReportError(f"`{' '.join(cmd)}` failed: {detail}")
    return result.stdout


def repo_root() -> Path:
    """The DVC repository's root (where dvc.yaml lives), from anywhere inside it."""
    return Path(run(["dvc", "root"]).strip()).resolve()


def short_sha(rev: str, cwd: Path) -> str | None:
    try:
        return run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd).strip()
    except ReportError:
        return None


def table_rows(markdown: str) -> int:
    """Data rows of a Markdown table (dvc prints a bare header when nothing differs)."""
    rows = [line for line in markdown.splitlines() if line.lstrip().startswith("|")]
    return max(0, len(rows) - 2)  # header and separator


def section(title: str, table: str, nothing: str) -> str:
    body = table.strip() if table_rows(table) else nothing
    return f"### {title}\n\n{body}"


def report(base: str, root: Path, plots_url: str | None = None) -> str:
    """The whole Markdown document: marker, title, params and metrics sections."""
    params = run(["dvc", "params", "diff", base, "--md"], root)
    metrics = run(["dvc", "metrics", "diff", base, "--md"], root)
    head, base_sha = short_sha("HEAD", root), short_sha(base, root)
    title = (f"## DVC report: workspace{f' ({head})' if head else ''} against `{base}`"
             f"{f' ({base_sha})' if base_sha else ''}")
    parts = [
        MARKER,
        title,
        section("Params", params, f"No params changed against `{base}`."),
        section("Metrics", metrics, f"No metrics changed against `{base}`."),
    ]
    if plots_url:
        parts.append(f"### Plots\n\n`dvc plots diff {base}` as HTML: [download]({plots_url}) "
                     "(a zip with index.html).")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main",
                        help="git revision to compare with (default: %(default)s)")
    parser.add_argument("--plots-url", default=None,
                        help="link to the `dvc plots diff` HTML (CI: the uploaded artifact)")
    args = parser.parse_args(argv)
    try:
        text = report(args.base, repo_root(), args.plots_url)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text, end="")


if __name__ == "__main__":
    main()
