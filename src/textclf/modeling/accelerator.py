"""The Accelerator of a stage or predictor: Accelerate's device, processes, gradient sync and
gather, with the device and precision of textclf's rules (textclf.modeling.device) held by each
object rather than by Accelerate's process-wide state."""

from __future__ import annotations

import contextlib

import torch
from accelerate import Accelerator

from textclf.modeling.device import resolved_precision, uses_cuda


class PipelineAccelerator(Accelerator):
    """Accelerate's Accelerator (device, processes, gradient sync, gather) holding its device
    and precision itself.

    Accelerate keeps one device and one mixed precision per process (AcceleratorState, shared
    by every Accelerator): a second Accelerator with another precision raises "AcceleratorState
    has already been initialized", and an existing one's autocast follows whatever the shared
    state says. Here Accelerate's own precision stays off and `autocast()` is this object's
    (bf16 or none), and a single process may use the CPU or the GPU per object: any sequence of
    stages, predictors and precisions runs in one process (a notebook, the tests). Under several
    processes (accelerate launch) each runs one stage, on the device the launcher gave it.
    """

    def __init__(self, precision: str, cuda: bool):
        from accelerate.state import PartialState

        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be bf16 or fp32, got {precision!r}")
        if PartialState._shared_state:
            # the process-wide state, once started, keeps its device: ask for the one it has
            # (Accelerate refuses cpu=True after a GPU), then hold the one wanted here
            cpu = PartialState().device.type != "cuda"
        else:
            cpu = not cuda
        super().__init__(mixed_precision="no", cpu=cpu)
        self.precision = precision
        if self.num_processes > 1:
            if cuda != (self.state.device.type == "cuda"):
                raise ValueError(f"this process was launched on {self.state.device}; under "
                                 "several processes every stage runs on the launcher's device")
            self._device = self.state.device
        else:
            self._device = torch.device("cuda", torch.cuda.current_device()) if cuda \
                else torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def mixed_precision(self) -> str:
        """Accelerate's spelling: "bf16" or "no"."""
        return "bf16" if self.precision == "bf16" else "no"

    def autocast(self, autocast_handler=None):
        """bf16 autocast on this object's device, or nothing in fp32."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def make_accelerator(mixed_precision: str, device: str = "auto") -> PipelineAccelerator:
    """The device (`device` auto: a GPU if there is one; cpu) and precision (resolved_precision)
    of a stage or predictor. Processes started by `accelerate launch --multi_gpu` or torchrun
    join over gloo on a machine without a GPU."""
    cuda = uses_cuda(device)
    return PipelineAccelerator(resolved_precision(mixed_precision, cuda), cuda)
