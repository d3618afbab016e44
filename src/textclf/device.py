"""Where and in which precision the pipeline runs: Accelerate's device and processes, and the
hardware name that goes beside every measured figure."""

from __future__ import annotations

import torch


def make_accelerator(mixed_precision: str):
    """Accelerate decides the device and processes (`accelerate launch` for several).

    Without a GPU, processes started by `accelerate launch --multi_gpu` or torchrun join over
    gloo on the CPU (`cpu=True` is what selects Accelerate's multi-CPU mode).
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=mixed_precision, cpu=not cuda)


def device_name(device: torch.device) -> str:
    """The hardware a figure was measured on, e.g. 'cuda: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        model = platform.machine()
    return f"cpu: {model}, {torch.get_num_threads()} threads"
