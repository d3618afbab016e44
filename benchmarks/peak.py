"""The device's measured matmul peak, and the share of it a side reached (an MFU-like figure).

The peak is measured in the same process as the sides, before and after them (the faster
counts): a large square `torch.matmul` (2 x size^3 FLOPs), in the precision a side computes in
(fp32, or bf16 where it runs under bf16 autocast: bf16 operands, as autocast hands them to the
matmul), repeated for about `seconds` after one untimed product; the fastest product counts (a
busy machine only slows products down). It is a practical peak, what the BLAS reaches on this
device with this process's threads, not the vendor's number: a side at 100% runs as fast as one
big matmul.

share = a side's TFLOP/s (model FLOPs of what ran, benchmarks/flops.py) / the peak of its
precision. For our cached side that is the trained part: the frozen blocks' forward is not run
in the timed steps and not counted.
"""

from __future__ import annotations

import time

import torch
from meter import significant, sync

# Square matmul sizes: large enough to reach the BLAS's steady rate, small enough to take a
# fraction of a second on a CPU (a 2048 product is 17 GFLOP)
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}
PEAK_SECONDS = 1.0  # time spent repeating the product, after one untimed product
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(device: torch.device, precision: str = "fp32", size: int | None = None,
                seconds: float = PEAK_SECONDS) -> dict:
    """The fastest of repeated `size` x `size` matmuls in `precision` (fp32 | bf16) on `device`:
    {"tflops", "size", "repeats"}."""
    size = size or PEAK_SIZE.get(device.type, 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator, device=device).to(DTYPES[precision])
            for _ in range(2))
    torch.matmul(a, b)  # untimed: the BLAS's first-call setup, threads waking up
    sync(device)
    best, repeats, started = float("inf"), 0, time.perf_counter()
    while repeats < 3 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
        repeats += 1
    return {"tflops": significant(2 * size**3 / best / 1e12), "size": size, "repeats": repeats}


def precision_of(dtype: str) -> str:
    """The matmul precision of a side's dtype label ("fp32", "fp32 (TF32 matmuls)", "bf16
    autocast, fp32 weights")."""
    return "bf16" if dtype.startswith("bf16") else "fp32"


def peak_share(tflops: float, peak_tflops: float) -> float:
    """Achieved / peak, a fraction (0.42 = 42% of the measured matmul peak)."""
    return round(tflops / peak_tflops, 4)
