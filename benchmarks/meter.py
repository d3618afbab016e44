"""The benchmark's meter: wall time, texts, real tokens and peak memory of one side's timed window,
read the same way for both sides.

- samples/s and tokens/s: reviews and real (non-padding) tokens processed per second, over
  `steps` optimizer steps after `warmup` steps (training; timed from the end of optimizer step
  `warmup` to the end of step `warmup + steps`, by a global optimizer hook, the same clock for both
  sides) or over one pass through `steps` batches after a warm-up batch (scoring and evaluation);
  whole runs (train_run, eval_run): from the call to its return, the training texts of every
  epoch (train_run) or every test text (eval_run) over that wall time;
  on a GPU the clock reads after `torch.cuda.synchronize()`;
- peak memory: `torch.cuda.max_memory_allocated` on a GPU (reset before each side); on a CPU the
  process's peak resident set size (VmHWM, reset per side through /proc/self/clear_refs where
  Linux allows it, else `resource.getrusage`: the peak since the process started).

Texts and tokens are counted at collation (`CountingCollator`), so the measured loop runs
untouched. Each side starts from the process's initial global state (`fresh_globals`).
"""

from __future__ import annotations

import gc
import platform
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak; returns what `peak_memory_bytes` will then measure."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda max_memory_allocated"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: resets VmHWM, the peak resident set size
        return "process peak RSS (VmHWM, reset per side)"
    except OSError:
        return "process peak RSS since start (getrusage)"


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return int(kib) * (1 if platform.system() == "Darwin" else 1024)


class CountingCollator:
    """A collator that records each batch it builds: whether it is a training batch (as
    `training()` says when it is built), its texts, real (attention mask) tokens and padded
    tokens. Counting on the CPU at collation leaves the measured loop untouched: no hooks in the
    model, nothing to synchronize, torch.compile unaffected. Training batches are consumed in
    the order they are built, so the i-th one is the i-th optimizer step's."""

    def __init__(self, collator, training: Callable[[], bool]):
        self.collator = collator
        self.training = training
        self.batches: list[tuple[bool, int, int, int]] = []

    def __call__(self, items):
        batch = self.collator(items)
        mask = batch["attention_mask"]
        self.batches.append((self.training(), int(mask.shape[0]), int(mask.sum()),
                             int(mask.numel())))
        return batch

    def __getattr__(self, name: str):  # pad_multiple, fmt, ... of the wrapped collator
        if name in ("collator", "training", "batches"):
            raise AttributeError(name)
        return getattr(self.collator, name)


class Meter:
    """Wall time, texts and tokens of a timed window.

    `training` opens the window at the end of optimizer step `warmup` and closes it at the end of
    step `warmup + steps` (a global optimizer hook, so our loop and the Trainer are timed by the
    same clock) and counts the training batches of those steps; `timed` times a block and counts
    the batches built inside it.
    """

    def __init__(self, device: torch.device, counter: CountingCollator):
        self.device = device
        self.counter = counter
        self.seconds = 0.0
        self.startup_seconds = 0.0  # from the call to the end of the first step (training)
        self.batches: list[tuple[bool, int, int, int]] = []

    def _clock(self) -> float:
        sync(self.device)
        return time.perf_counter()

    @contextmanager
    def training(self, warmup: int, steps: int) -> Iterator[Meter]:
        done, marks = 0, {}

        def on_step(optimizer, args, kwargs):
            nonlocal done
            done += 1
            if done in (1, warmup, warmup + steps):
                marks[done] = self._clock()

        entered = self._clock()
        handle = register_optimizer_step_post_hook(on_step)
        try:
            yield self
        finally:
            handle.remove()
        trained = [b for b in self.counter.batches if b[0]]
        if done != warmup + steps or len(trained) < warmup + steps:
            raise RuntimeError(f"{done} optimizer steps and {len(trained)} training batches, "
                               f"{warmup + steps} expected")
        self.seconds = marks[warmup + steps] - marks[warmup]
        self.startup_seconds = marks[1] - entered
        self.batches = trained[warmup:warmup + steps]

    @contextmanager
    def timed(self, training_only: bool = False) -> Iterator[Meter]:
        """Times the block; counts the batches built inside it (`training_only`: the training
        batches alone, e.g. of a whole run that also validates and builds a cache)."""
        first = len(self.counter.batches)
        started = self._clock()
        yield self
        self.seconds = self._clock() - started
        self.batches = [b for b in self.counter.batches[first:] if b[0] or not training_only]

    @property
    def samples(self) -> int:
        return sum(b[1] for b in self.batches)

    @property
    def tokens(self) -> int:
        return sum(b[2] for b in self.batches)

    @property
    def padded(self) -> int:
        return sum(b[3] for b in self.batches)


def free_memory(device: torch.device) -> None:
    """Return what a finished side held, before the next one starts."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def fresh_globals(snapshot: dict) -> Iterator[None]:
    """Each side starts from the process's initial global state, and leaves it so: the Trainer
    resets Accelerate's shared state and an Accelerator refuses another precision later in the
    process, and neither side may leave TF32 switched on for the other (or for the caller)."""
    from accelerate.state import AcceleratorState

    def restore() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        torch.backends.cuda.matmul.allow_tf32 = snapshot["matmul_tf32"]
        torch.backends.cudnn.allow_tf32 = snapshot["cudnn_tf32"]
        torch.set_float32_matmul_precision(snapshot["matmul_precision"])

    restore()
    try:
        yield
    finally:
        restore()


def global_snapshot() -> dict:
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_precision": torch.get_float32_matmul_precision()}


def measured_figures(meter: Meter, device: torch.device, flops_per_token: int | None,
                     memory_kind: str, training: bool) -> dict:
    """One side's figures of bench.json from its meter (TFLOP/s when its FLOPs per token are
    known; the plain side's are set from ours, which counted the same model)."""
    tokens = meter.tokens
    out = {
        "seconds": round(meter.seconds, 4),
        "samples": meter.samples,
        "tokens": tokens,
        "samples_per_s": round(meter.samples / meter.seconds, 2),
        "tokens_per_s": round(tokens / meter.seconds, 1),
        "padding_fraction": round(1 - tokens / meter.padded, 4) if meter.padded else 0.0,
        "peak_memory_mib": round(peak_memory_bytes(device) / 2**20, 1),
        "memory": memory_kind,
    }
    if training:  # setup, the first step's compilation or cache building: outside the window
        out["startup_seconds"] = round(meter.startup_seconds, 3)
    if flops_per_token is not None:
        out["flops_per_token"] = flops_per_token
        out["tflops"] = significant(flops_per_token * tokens / meter.seconds / 1e12)
    return out


def significant(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (TFLOP/s span 1e-4 on a CPU to 1e2)."""
    return float(f"{x:.{digits}g}")
