"""The failures a user can cause or meet, each with a message that says what to do.

The stages turn these into one `error: ...` line and a non-zero exit (textclf.core.runner); anything
else is a bug and keeps its traceback. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import signal
from pathlib import Path


class ParamsError(ValueError):
    """Bad params: the message names each bad key and what is allowed."""


class ParamsChangedError(ParamsError):
    """A params file changed while a stage ran (textclf.core.params_watch)."""


class DataError(ValueError):
    """The data cannot be used as configured: the message says what, where and what to do."""


class ModelLoadError(OSError):
    """A model's config, weights or tokenizer could not be loaded."""


class UnsupportedModelError(ValueError):
    """A model family with no row in textclf.core.families.FAMILIES."""


class ExportError(ValueError):
    """A model that cannot be exported exactly, or an export that does not reproduce it."""


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, checkpoint: Path | None):
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint kept"
        super().__init__(f"the training loss became NaN/inf at step {step}; training stopped and "
                         f"{kept}. Lower train.lr (or lora.lr), or keep train.grad_clip > 0.")
        self.step = step


class TrainingInterrupted(RuntimeError):
    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        name = signal.Signals(signum).name
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint (disabled)"
        super().__init__(f"{name} received at step {step}: {where}; run `dvc repro` (or the same "
                         "`dvc exp run`) again to resume")
        self.signum = signum


# What a stage reports as one line (FileNotFoundError: a missing input, said plainly)
EXPECTED_ERRORS = (ParamsError, DataError, ModelLoadError, UnsupportedModelError, ExportError,
                   NonFiniteLossError, FileNotFoundError)
