"""The training log that `dvc plots` draws: dvclive's per-step files under metrics/train_log.

dvc.yaml declares dvclive's files as plots: plots/metrics/train/loss.tsv (the mean loss every
train.log_every steps), plots/metrics/val/accuracy.tsv and val/loss.tsv (after each epoch). A zero-shot
run trains nothing and writes both with a header only, so its plots are empty rather than the
previous run's curves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from textclf.core.outputs import write_text

# (dvclive metric name, file under the log directory); the plots dvc.yaml declares
LOGGED = (("train/loss", Path("plots/metrics/train/loss.tsv")),
          ("val/accuracy", Path("plots/metrics/val/accuracy.tsv")),
          ("val/loss", Path("plots/metrics/val/loss.tsv")))


def step_logger(log_dir: Path, resume: bool):
    """dvclive's Live for the train stage: no dvc.yaml or experiment of its own (the pipeline's
    dvc.yaml declares the plots, `dvc exp run` makes the experiment)."""
    from dvclive import Live

    return Live(str(log_dir), resume=resume, dvcyaml=None, save_dvc_exp=False)


def empty_log(log_dir: Path) -> None:
    """A log with the declared files and no rows (zero-shot: nothing was trained)."""
    shutil.rmtree(log_dir, ignore_errors=True)
    for name, path in LOGGED:
        write_text(log_dir / path, f"step\t{name.split('/')[-1]}\n")
