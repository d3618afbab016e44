"""Where and in which precision the pipeline runs: Accelerate's device and processes, and the
hardware name that goes beside every measured figure."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")  # train.mixed_precision and predict --mixed-precision


def cpu_capabilities() -> dict:
    """The CPU's instruction sets as torch's cpuinfo reports them (torch.cpu.get_capabilities,
    public since torch 2.9; empty on older versions, which keeps fp32)."""
    probe = getattr(torch.cpu, "get_capabilities", None)
    return dict(probe()) if probe else {}


def native_bf16_cpu() -> bool:
    """The CPU computes bf16 in hardware: AVX-512 BF16 or AMX-BF16 (x86). Without them, bf16
    autocast is emulated and slower than fp32 (measured on an Ice Lake Xeon, AVX-512 without
    BF16: docs/performance.md, "What auto chooses")."""
    caps = cpu_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolved_precision(mixed_precision: str, cuda: bool) -> str:
    """The one precision rule of train, evaluate and predict: `auto` is bf16 autocast on a GPU
    that supports it or a CPU with native bf16 (native_bf16_cpu), fp32 elsewhere; bf16 and fp32
    are taken as they are."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision
    native = torch.cuda.is_bf16_supported() if cuda else native_bf16_cpu()
    return "bf16" if native else "fp32"


def make_accelerator(mixed_precision: str, device: str = "auto"):
    """Accelerate decides the device and processes (`accelerate launch` for several); `device`
    cpu keeps a single process on the CPU even where there is a GPU.

    Without a GPU, processes started by `accelerate launch --multi_gpu` or torchrun join over
    gloo on the CPU (`cpu=True` is what selects Accelerate's multi-CPU mode).
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and device != "cpu"
    precision = resolved_precision(mixed_precision, cuda)
    # Accelerate spells fp32 "no"
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision, cpu=not cuda)


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
