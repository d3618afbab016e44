"""Compare: one table of every run of the compare pipeline, beside the published references.

    cd compare && dvc repro                 # runs everything, ends with this stage
    textclf compare --readme README.md      # then: the README's results table from its output

Reads compare/params.yaml (runs, datasets, references), compare/results/<run>/*.json, the
baselines' compare/results/baseline/<dataset>.json and compare/runs/<run>/evaluate/run.json.
Writes table/compare.json (one flat row per run) and table/compare.csv (the chart data: accuracy
and F1 per run).
"""

import argparse
from pathlib import Path

import this_checkout  # noqa: F401  (first: this checkout's src/ on the import path)
import yaml

from textclf.compare import chart_csv, collect, markdown_table
from textclf.core.outputs import write_json, write_text
from textclf.core.runner import log, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("compare/params.yaml"))
    parser.add_argument("--base-params", type=Path, default=None,
                        help="the params the overlays apply to (default: params.yaml beside "
                             "the config's folder)")
    parser.add_argument("--results", type=Path, default=Path("compare/results"))
    parser.add_argument("--runs", type=Path, default=Path("compare/runs"))
    parser.add_argument("--out", type=Path, default=Path("compare/table"))
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    base = args.base_params or args.config.resolve().parent.parent / "params.yaml"

    rows = collect(config, args.results, args.runs, base)
    missing = sorted(set(config["runs"]) - set(rows))
    if missing:
        raise FileNotFoundError(f"no results for runs {missing} under {args.results}; "
                                "run `cd compare && dvc repro`")
    write_json(args.out / "compare.json", rows)
    write_text(args.out / "compare.csv", chart_csv(rows))
    log(markdown_table(config, rows))


if __name__ == "__main__":
    run_stage(main)
