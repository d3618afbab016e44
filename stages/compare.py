"""Compare: one table of every run of the compare pipeline, beside the published references.

    dvc repro compare/dvc.yaml                    # runs everything, ends with this stage
    python stages/compare.py --readme README.md   # regenerate the README's results table from
                                                  # metrics/compare.json (run at the top level)

Reads compare/params.yaml (runs, datasets, references) and compare/results/<run>/*.json.
Writes metrics/compare.json (one flat row per run), metrics/compare.md and metrics/compare.csv
(the chart data: accuracy and F1 per run).
"""

import argparse
from pathlib import Path

import yaml

from textclf.cli import log, run_stage
from textclf.compare import chart_csv, collect, markdown_table, update_readme
from textclf.outputs import read_json, write_json, write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("compare/params.yaml"))
    parser.add_argument("--base-params", type=Path, default=None,
                        help="the params the overlays apply to (default: params.yaml beside "
                             "the config's folder)")
    parser.add_argument("--results", type=Path, default=Path("compare/results"))
    parser.add_argument("--out", type=Path, default=Path("metrics"))
    parser.add_argument("--readme", type=Path, default=None,
                        help="only regenerate this README's table from OUT/compare.json")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    base = args.base_params or args.config.resolve().parent.parent / "params.yaml"

    if args.readme:
        compare_json = args.out / "compare.json"
        rows = read_json(compare_json) if compare_json.is_file() else {}
        write_text(args.readme, update_readme(args.readme.read_text(),
                                              markdown_table(config, rows)))
        log(f"updated the results table of {args.readme} ({len(rows)} measured runs)")
        return

    rows = collect(config, args.results, base)
    missing = sorted(set(config["runs"]) - set(rows))
    if missing:
        raise FileNotFoundError(f"no results for runs {missing} under {args.results}; "
                                "run `dvc repro compare/dvc.yaml`")
    write_json(args.out / "compare.json", rows)
    write_text(args.out / "compare.md", markdown_table(config, rows))
    write_text(args.out / "compare.csv", chart_csv(rows))
    log(markdown_table(config, rows))


if __name__ == "__main__":
    run_stage(main)
