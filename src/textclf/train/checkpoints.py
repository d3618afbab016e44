"""Checkpoints that resume an interrupted training run exactly, and the signals that ask for one.

A checkpoint (checkpoints/last.pt, outside DVC's outputs) holds the trainable weights, optimizer,
scheduler, RNG states and position in the epoch, with a fingerprint of the params and data: it
resumes only a run like the one that wrote it. It holds tensors and plain values only (dicts,
lists, tuples, numbers, strings) and is read with torch.load(weights_only=True), so a checkpoint
file can never run code. A file that cannot be read so (cut short, empty, not a checkpoint, or
holding other objects) is set aside as last.unreadable.pt, kept for a look, and the run starts
over; one written with other params or data is ignored (the run's own checkpoints replace it).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def fingerprint(*parts: Any, files: tuple[Path, ...] = ()) -> str:
    """A hash of the params and data a run depends on: a checkpoint resumes only a run like it."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for path in files:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class Checkpointer:
    """`last.pt` in a directory, written atomically (temp file, then rename), main process only."""

    def __init__(self, directory: Path, fingerprint: str, is_main: bool = True,
                 log: Callable[[str], None] = print):
        self.path = Path(directory) / "last.pt"
        self.fingerprint = fingerprint
        self.is_main = is_main
        self.log = log

    def load(self) -> dict | None:
        """The checkpoint, if there is one this run resumes from; else None, said in one line
        (an unreadable file is set aside first, by the main process)."""
        if not self.path.is_file():
            return None
        try:  # data only: unpickling anything else could run code
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds on a damaged file (OSError, EOFError...)
            why = unreadable_reason(e, self.path)
            kept = f"; moved to {self.set_aside()}" if self.is_main else ""
            self.log(f"ignoring checkpoint {self.path}: {why}{kept}; starting over")
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            self.log(f"ignoring stale checkpoint {self.path}: it was written with other params or "
                     "data; starting over")
            return None
        return state

    def save(self, state: dict) -> None:
        if not self.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(plain({**state, "fingerprint": self.fingerprint}), tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        if self.is_main and self.path.exists():
            self.path.unlink()

    def set_aside(self) -> Path:
        """Rename the checkpoint to the first free name of last.unreadable.pt,
        last.unreadable-2.pt, ... beside it; the new path."""
        for n in itertools.count(1):
            kept = self.path.with_name(f"{self.path.stem}.unreadable{f'-{n}' if n > 1 else ''}.pt")
            if not kept.exists():
                os.replace(self.path, kept)
                return kept


def unreadable_reason(error: Exception, path: Path) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words."""
    if path.stat().st_size == 0:
        return "the file is empty"
    # torch's message for a refused pickle is long; what it refused follows this marker
    text = str(error).rpartition("WeightsUnpickler error:")[2]
    detail = next((line.strip() for line in text.splitlines() if line.strip()), "")
    detail = detail.split(". ")[0].rstrip(".")[:200] or type(error).__name__
    if "Unsupported global" in detail:
        return f"it holds objects other than tensors and plain values ({detail})"
    return f"it is damaged or not a checkpoint ({detail})"


def plain(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and numpy arrays as tensors: what
    torch.load(weights_only=True) reads back."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def rng_state() -> dict:
    """The RNG states of Python, numpy and torch, as plain values and tensors."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss,
                         cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can checkpoint."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
