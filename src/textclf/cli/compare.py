"""Compare: every compare run beside its published reference, and the README's table from it.

    textclf compare                       # print the table from compare/table/compare.json
    textclf compare --readme README.md    # and write it into the README, between its markers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from textclf.cli import HelpFormatter
from textclf.compare import markdown_table, update_readme
from textclf.core.outputs import read_json, write_text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="textclf compare",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("compare/params.yaml"),
                        help="the runs to compare and their published references")
    parser.add_argument("--metrics", type=Path, default=Path("compare/table/compare.json"),
                        help="the rows the compare pipeline wrote (`cd compare && dvc repro`)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also write the table into this README, between its markers")
    args = parser.parse_args(argv)
    import yaml

    config = yaml.safe_load(args.config.read_text())
    rows = read_json(args.metrics) if args.metrics.is_file() else {}
    table = markdown_table(config, rows)
    print(table, end="")
    if args.readme:
        write_text(args.readme, update_readme(args.readme.read_text(), table))
        print(f"updated the results table of {args.readme} ({len(rows)} measured runs)")
