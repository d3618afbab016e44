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
    then the model's accuracy against the baseline's (metrics/baseline.json: TF-IDF + logistic
    regression on the same test texts), in points, or a line saying the baseline is missing;
  - by class: each class's F1 at the base and in the PR, precision, recall and support (the
    weakest classes only beyond a dozen), and the classes most often confused;
  - the inputs each side read (metrics/inputs.json: the model's and the data's commits or
    content hashes), flagged where they differ (pr_inputs.py);
  - folded details: every changed param, every other changed metric, the compare runs' rows,
    cut to fit with a note of how many rows were left out;
  - charts GitHub draws itself (Mermaid): ROC curve, accuracy by review length, training loss.

Exit status 0; 1 with --fail-on-stale when results are stale (after printing the report);
2 on an error, with one `error:` line.
"""

from __future__ import annotations

import argparse
import sys

from textclf.cli import HelpFormatter
from textclf.cli.pr_query import ReportError, gather, project_root
from textclf.cli.pr_render import MAX_CHARS, render


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
