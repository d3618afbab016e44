"""The training log that `dvc plots` draws: dvclive's per-step files under metrics/train_log.

dvc.yaml declares dvclive's files as plots: plots/metrics/train/loss.tsv (the mean loss every
train.log_every steps), plots/metrics/val/accuracy.tsv and val/loss.tsv (after each epoch). A
zero-shot run trains nothing and writes them with a header only, so its plots are empty rather
than the previous run's curves.

A resumed run's log equals an uninterrupted run's: each checkpoint also holds the log written so
far, and a run that resumes from it writes the log back from there (`CheckpointsWithLog`). The
files on disk cannot be trusted then: DVC removes them before it reruns the stage, and outside DVC
they may hold rows logged after the checkpoint, or another run's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from textclf.core.outputs import write_text
from textclf.train.checkpoints import Checkpointer

# (dvclive metric name, file under the log directory); the plots dvc.yaml declares
LOGGED = (("train/loss", Path("plots/metrics/train/loss.tsv")),
          ("val/accuracy", Path("plots/metrics/val/accuracy.tsv")),
          ("val/loss", Path("plots/metrics/val/loss.tsv")))


LOG_KEY = "train_log"  # the checkpoint's key for the log: {file under the log directory: text}


def step_logger(log_dir: Path):
    """dvclive's Live for the train stage, on an empty log (a resumed run's rows come back from
    the checkpoint): no dvc.yaml or experiment of its own (the pipeline's dvc.yaml declares the
    plots, `dvc exp run` makes the experiment)."""
    from dvclive import Live

    return Live(str(log_dir), resume=False, dvcyaml=None, save_dvc_exp=False)


class CheckpointsWithLog(Checkpointer):
    """A Checkpointer whose checkpoints also hold the training log written so far, under
    LOG_KEY, and which writes the log back from them when a run resumes. `log_dir` None: a
    process that writes no log (not the main one)."""

    def __init__(self, directory: Path, fingerprint: str, log_dir: Path | None,
                 is_main: bool = True, log: Callable[[str], None] = print):
        super().__init__(directory, fingerprint, is_main, log)
        self.log_dir = log_dir

    def load(self) -> dict | None:
        state = super().load()
        if state is not None and self.log_dir is not None:
            restore_log(self.log_dir, state.get(LOG_KEY, {}))  # an older checkpoint: none kept
        return state

    def save(self, state: dict) -> None:
        written = read_log(self.log_dir) if self.log_dir is not None else {}
        super().save({**state, LOG_KEY: written})


def read_log(log_dir: Path) -> dict[str, str]:
    return {path.as_posix(): (log_dir / path).read_text() for _, path in LOGGED
            if (log_dir / path).is_file()}


def restore_log(log_dir: Path, log: dict[str, str]) -> None:
    """The log files as `read_log` found them; files it did not find are removed."""
    for _, path in LOGGED:
        if path.as_posix() in log:
            write_text(log_dir / path, log[path.as_posix()])
        else:
            (log_dir / path).unlink(missing_ok=True)


def empty_log(log_dir: Path) -> None:
    """A log with the declared files and no rows (zero-shot: nothing was trained)."""
    shutil.rmtree(log_dir, ignore_errors=True)
    for name, path in LOGGED:
        write_text(log_dir / path, f"step\t{name.split('/')[-1]}\n")
