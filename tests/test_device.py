"""The one precision rule (textclf.modeling.device.resolved_precision) of train, evaluate and
predict: `auto` is bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere."""

from pathlib import Path

import pytest
import torch

from textclf.modeling import device


@pytest.mark.parametrize("capabilities, expected", [
    ({"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, "bf16"),  # e.g. Cooper Lake, Zen 4
    ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": True}, "bf16"),  # AMX (Sapphire Rapids)
    ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, "fp32"),  # Ice Lake: emulated
    ({"architecture": "x86_64"}, "fp32"),  # nothing known
])
def test_auto_on_a_cpu_is_bf16_only_with_native_bf16(monkeypatch, capabilities, expected):
    monkeypatch.setattr(device, "cpu_capabilities", lambda: capabilities)
    assert device.resolved_precision("auto", cuda=False) == expected


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_is_bf16_where_the_gpu_supports_it(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"avx512_bf16": not supported})
    assert device.resolved_precision("auto", cuda=True) == expected


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_an_explicit_precision_is_taken_as_it_is(monkeypatch, native, precision):
    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"avx512_bf16": native})
    assert device.resolved_precision(precision, cuda=False) == precision


def test_the_old_spelling_is_refused():
    with pytest.raises(ValueError, match="must be one of auto, bf16, fp32, got 'no'"):
        device.resolved_precision("no", cuda=False)


def test_the_probe_agrees_with_the_kernel_on_this_machine():
    """torch's cpuinfo and /proc/cpuinfo name the same BF16 instructions (x86 Linux only)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or device.cpu_capabilities().get("architecture") != "x86_64":
        pytest.skip("needs x86 Linux")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    flags = set(flags.split(":", 1)[1].split())
    assert device.native_bf16_cpu() == bool({"avx512_bf16", "amx_bf16"} & flags)
