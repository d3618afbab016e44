"""The hardware probes every `auto` rule reads, the precision and device rules built on them
(textclf.modeling.accelerator applies them), and the hardware name that goes beside every
measured figure. Imports torch only.

The probes answer from the hardware, except that TEXTCLF_NATIVE_BF16=1 (or 0) makes the bf16
probes answer yes (or no) whatever the machine: a developer on a CPU without native bf16 runs the
branches a user with one takes (`python -m pytest --native-bf16=yes` sets it for a test run).
"""

from __future__ import annotations

import os

import torch

PRECISIONS = ("auto", "bf16", "fp32")  # train.mixed_precision and predict --mixed-precision
DEVICES = ("auto", "cpu", "cuda")  # predict --device
NATIVE_BF16_ENV = "TEXTCLF_NATIVE_BF16"  # 1 / 0: the answer of the bf16 probes; unset: probe


# ---------------------------------------------------------------------------------------------
# The hardware probes

def cpu_capabilities() -> dict:
    """The CPU's instruction sets as torch's cpuinfo reports them (torch.cpu.get_capabilities,
    public since torch 2.9; empty on older versions, which keeps fp32)."""
    probe = getattr(torch.cpu, "get_capabilities", None)
    return dict(probe()) if probe else {}


def forced_native_bf16() -> bool | None:
    """The answer TEXTCLF_NATIVE_BF16 forces on the bf16 probes, or None (unset: probe)."""
    value = os.environ.get(NATIVE_BF16_ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "yes", "true"):
        return True
    if value in ("0", "no", "false"):
        return False
    raise ValueError(f"{NATIVE_BF16_ENV} must be 1 or 0 (yes or no), got {value!r}")


def native_bf16_cpu() -> bool:
    """The CPU computes bf16 in hardware: AVX-512 BF16 or AMX-BF16 (x86). Without them bf16
    autocast is emulated and slower than fp32 (docs/performance.md, "What auto chooses")."""
    forced = forced_native_bf16()
    if forced is not None:
        return forced
    caps = cpu_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def native_bf16_gpu() -> bool:
    """The GPU computes bf16 in hardware (Ampere and later)."""
    forced = forced_native_bf16()
    return forced if forced is not None else torch.cuda.is_bf16_supported()


def cuda_available() -> bool:
    return torch.cuda.is_available()


def gpu_free_bytes(device: torch.device) -> int:
    """Memory the GPU `device` can still give."""
    return torch.cuda.mem_get_info(device)[0]


# ---------------------------------------------------------------------------------------------
# The rules

def resolved_precision(mixed_precision: str, cuda: bool) -> str:
    """The one precision rule of train, evaluate and predict: `auto` is bf16 autocast on a GPU
    that supports it or a CPU with native bf16, fp32 elsewhere; bf16 and fp32 are taken as they
    are."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision
    native = native_bf16_gpu() if cuda else native_bf16_cpu()
    return "bf16" if native else "fp32"


def uses_cuda(device: str) -> bool:
    """`device` auto is a GPU when there is one; cpu keeps the CPU even where there is a GPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device != "cpu" and cuda_available()


def precision_name(accelerator) -> str:
    """How run.json and the model card name the precision a figure was computed in."""
    return "bf16 autocast" if accelerator.mixed_precision == "bf16" else "fp32"


def device_name(device: torch.device) -> str:
    """The hardware a figure was measured on, e.g. 'cuda: NVIDIA H100 80GB HBM3'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        model = platform.machine()
    threads = torch.get_num_threads()
    return f"cpu: {model}, {threads} thread{'' if threads == 1 else 's'}"
