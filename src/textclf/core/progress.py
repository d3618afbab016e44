"""Progress bars for the long loops (training steps, scoring a split, building the frozen-block
cache): on stderr, for a person watching a terminal only.

Quiet when stderr is not a terminal (a log file, a pipe, `dvc exp run --queue`) and when the CI
environment variable is set (CI services set CI=true), so logs get the stages' summary lines and
no carriage-return noise. Model and dataset download bars are the libraries' own: not these.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TextIO

FALSE = ("", "0", "false", "no")  # CI values that do not mean "running under CI"


def show_progress(stream: TextIO | None = None) -> bool:
    """Whether a bar on `stream` (default: the current sys.stderr) would reach a person."""
    stream = sys.stderr if stream is None else stream
    if os.environ.get("CI", "").strip().lower() not in FALSE:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str,
                 unit: str, enabled: bool = True, leave: bool = True, **kwargs):
    """A tqdm bar on stderr, shown only when `show_progress()` and `enabled` (pass
    `accelerator.is_main_process`: one bar per run, not one per process)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave,
                disable=not (enabled and show_progress(sys.stderr)), mininterval=1.0,
                dynamic_ncols=True, **kwargs)
