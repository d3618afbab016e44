"""The `textclf` subcommands (see textclf.cli): tools that use what the pipeline wrote."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's layout and shows every option's default."""
