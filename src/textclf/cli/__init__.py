"""The `textclf` command: the tools around the pipeline, one subcommand each.

    textclf --help                 # the subcommands
    textclf --version              # the installed version
    textclf predict --help         # one subcommand's options, with their defaults

The pipeline itself runs with `dvc repro` (stages/); these tools use what it wrote. Each
subcommand is a module of textclf.cli with a `main(argv)`; importing this file imports none
of them, so `textclf --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's layout and shows each option's default where it says
    something: not for a flag (off unless given), nor for an option without a value (None),
    whose help says what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action)


# name -> (module, one line for `textclf --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("textclf.cli.predict",
                "label new texts with a trained model (models/ or an export), JSON lines out"),
    "compare": ("textclf.cli.compare",
                "every compare run beside its published reference, in one table"),
    "seeds": ("textclf.cli.seeds",
              "mean and spread of a configuration over seeds, from DVC experiments"),
    "pr-report": ("textclf.cli.pr_report",
                  "a pull request's params, metrics, stale results and plots, in Markdown"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: textclf [--help | --version] COMMAND [options]", "",
             "Tools around the DVC pipeline (run the pipeline itself with `dvc repro`).", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`textclf COMMAND --help` lists a command's options and their defaults;",
              "`textclf --version` prints the installed version."]
    return "\n".join(lines) + "\n"


def package_version() -> str:
    """The version of the installed package (pyproject.toml's, as pip installed it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textclf")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src) without pip install
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return
    if argv[0] == "--version":
        print(f"textclf {package_version()}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(usage())
        print(f"error: unknown command {name!r} (choose from {', '.join(COMMANDS)})",
              file=sys.stderr)
        sys.exit(2)
    importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    main()
