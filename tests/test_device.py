"""The one precision rule (textclf.modeling.device.resolved_precision) of train, evaluate and
predict: `auto` is bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere; the
switch that forces the probes' answer; and accelerators of any precision, one after another, in
one process (textclf.modeling.accelerator)."""

from pathlib import Path

import pytest
import torch

from textclf.modeling import device
from textclf.modeling.accelerator import make_accelerator


@pytest.fixture()
def probed(monkeypatch):
    """The probes answer from the hardware (or what a test patches in), not from the switch
    the suite may run under."""
    monkeypatch.delenv(device.NATIVE_BF16_ENV, raising=False)


@pytest.mark.parametrize("capabilities, expected", [
    ({"avx512_f": True, "avx512_bf16": True, "amx_bf16": False}, "bf16"),  # e.g. Cooper Lake, Zen 4
    ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": True}, "bf16"),  # AMX (Sapphire Rapids)
    ({"avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, "fp32"),  # Ice Lake: emulated
    ({"architecture": "x86_64"}, "fp32"),  # nothing known
])
def test_auto_on_a_cpu_is_bf16_only_with_native_bf16(monkeypatch, probed, capabilities,
                                                      expected):
    monkeypatch.setattr(device, "cpu_capabilities", lambda: capabilities)
    assert device.resolved_precision("auto", cuda=False) == expected


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_is_bf16_where_the_gpu_supports_it(monkeypatch, probed, supported,
                                                          expected):
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


def test_the_probe_agrees_with_the_kernel_on_this_machine(probed):
    """torch's cpuinfo and /proc/cpuinfo name the same BF16 instructions (x86 Linux only)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or device.cpu_capabilities().get("architecture") != "x86_64":
        pytest.skip("needs x86 Linux")
    flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags"))
    flags = set(flags.split(":", 1)[1].split())
    assert device.native_bf16_cpu() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("value, native", [("1", True), ("yes", True), ("0", False),
                                           ("no", False)])
@pytest.mark.parametrize("capable", [True, False])
def test_the_switch_forces_the_answer_whatever_the_hardware(monkeypatch, value, native, capable):
    monkeypatch.setenv(device.NATIVE_BF16_ENV, value)
    monkeypatch.setattr(device, "cpu_capabilities", lambda: {"avx512_bf16": capable})
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: capable)
    expected = "bf16" if native else "fp32"
    assert device.resolved_precision("auto", cuda=False) == expected
    assert device.resolved_precision("auto", cuda=True) == expected
    assert device.resolved_precision("fp32", cuda=False) == "fp32"  # explicit: taken as it is


def test_a_bad_switch_value_is_refused(monkeypatch):
    monkeypatch.setenv(device.NATIVE_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match="TEXTCLF_NATIVE_BF16 must be 1 or 0"):
        device.native_bf16_cpu()


@pytest.mark.parametrize("gpu, asked, expected", [
    (True, "auto", True), (True, "cpu", False), (True, "cuda", True),
    (False, "auto", False), (False, "cpu", False),
])
def test_the_device_rule_with_and_without_a_gpu(monkeypatch, gpu, asked, expected):
    monkeypatch.setattr(device, "cuda_available", lambda: gpu)
    assert device.uses_cuda(asked) is expected


def autocast_dtype(accelerator) -> torch.dtype:
    a = torch.ones(2, 2)
    with accelerator.autocast():
        return (a @ a).dtype


def test_accelerators_of_any_precision_follow_one_another_in_one_process():
    """Accelerate keeps one mixed precision per process; textclf's accelerators each keep
    their own: a bf16 one after an fp32 one, and the first still computes in fp32."""
    first = make_accelerator("fp32", "cpu")
    second = make_accelerator("bf16", "cpu")
    third = make_accelerator("fp32")
    assert [a.mixed_precision for a in (first, second, third)] == ["no", "bf16", "no"]
    assert [autocast_dtype(a) for a in (first, second, third)] == [
        torch.float32, torch.bfloat16, torch.float32]
    assert make_accelerator("auto", "cpu").precision == device.resolved_precision("auto", False)


@pytest.mark.gpu
def test_cpu_and_gpu_accelerators_follow_one_another_in_one_process():
    on_gpu = make_accelerator("bf16", "cuda")
    on_cpu = make_accelerator("fp32", "cpu")
    again = make_accelerator("auto", "cuda")
    assert (on_gpu.device.type, on_cpu.device.type, again.device.type) == ("cuda", "cpu", "cuda")
    assert autocast_dtype(on_cpu) == torch.float32
