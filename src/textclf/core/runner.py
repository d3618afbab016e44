"""What every stage script shares: its params arguments and turning known failures into one
clear message and a non-zero exit, instead of a traceback."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Callable

from textclf.core.errors import EXPECTED_ERRORS, ParamsError, TrainingInterrupted
from textclf.core.params import Params, deep_merge, load_params
from textclf.core.params_watch import check_params_unchanged, stop_watching, watch_params


def log(message: str, file=None) -> None:
    """Print a line without breaking a progress bar that is being drawn."""
    from tqdm.auto import tqdm

    tqdm.write(str(message), file=file or sys.stdout)
    (file or sys.stdout).flush()


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    parser.add_argument("--overlay", action="append", default=[], metavar="FILE:KEY",
                        help="merge the mapping at KEY (dotted) of YAML FILE over the params; "
                             "repeatable, later ones win (the compare pipeline uses this)")
    return parser


# The params files this stage read (params.yaml and its overlays), for `refresh_params_files`
PARAMS_FILES: list[str] = []


def params_from_args(args: argparse.Namespace) -> Params:
    """The params of `--params` and `--overlay`s; the values read are watched until the stage
    ends (textclf.core.params_watch): of the params file all of it, of an overlay its key."""
    PARAMS_FILES[:] = [args.params] + [spec.partition(":")[0] for spec in args.overlay]
    watch_params([(args.params, "")] + [(path, key) for path, _, key in
                                        (spec.partition(":") for spec in args.overlay)])
    overrides: dict = {}
    for spec in args.overlay:
        overrides = deep_merge(overrides, read_overlay(spec))
    return load_params(args.params, overrides)


def read_overlay(spec: str) -> dict:
    """The mapping at `KEY` (dotted path) in the YAML file of a `FILE:KEY` spec."""
    import yaml

    path, _, key = spec.partition(":")
    try:
        with open(path, encoding="utf-8") as f:
            node = yaml.safe_load(f)
    except OSError as e:
        raise ParamsError(f"--overlay {spec}: cannot read {path} ({e.strerror})") from None
    for part in filter(None, key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"--overlay {spec}: no key {key!r} in {path}")
        node = node[part]
    if not isinstance(node, dict):
        raise ParamsError(f"--overlay {spec}: {key!r} in {path} is not a mapping")
    return node


def quiet_libraries() -> None:
    """Keep the logs to what helps a person: no deprecation chatter from inside the libraries,
    and the libraries' download and loading bars only where ours show (a terminal, not CI).
    Imports nothing: the Hugging Face libraries read the variable when they are imported."""
    from textclf.core.progress import show_progress

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    if not show_progress():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def refresh_params_files() -> None:
    """After a failure, give the params files a new modification time (their content stays).

    `dvc exp run -S key=value` writes the value into params.yaml, and a failed run leaves it
    there. DVC rewrites the file and git's index several times within a second at the start of
    the run, and can leave the index holding the committed content with the size and time of the
    rewritten file (a shorter value keeps the size: the comment column stays put). git then
    trusts the file to be unchanged: `git status` shows nothing and `git checkout params.yaml`
    restores nothing. A new modification time makes git read the file again."""
    for path in PARAMS_FILES:
        try:
            os.utime(path)
        except OSError:
            pass


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); expected failures print `error: ...` and exit with status 2. On
    any failure the params files are refreshed for git (refresh_params_files). A stage whose
    params files changed while it ran fails (textclf.core.params_watch)."""
    quiet_libraries()
    try:
        _run(main)
    except BaseException:
        refresh_params_files()
        raise
    finally:
        stop_watching()


def _run(main: Callable[[], None]) -> None:
    try:
        main()
        check_params_unchanged()
    except TrainingInterrupted as e:
        log(f"error: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        log("error: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except EXPECTED_ERRORS as e:
        log(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            log("error: the GPU ran out of memory. Lower train.batch_size (training), "
                "eval.batch_size (evaluation) or data.max_tokens.", file=sys.stderr)
            sys.exit(2)
        raise
