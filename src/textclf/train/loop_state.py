"""The training loop's state, and what a checkpoint holds.

`LoopState` is where a run is (epoch, step) and what it has seen (the best epoch so far, one
history row per epoch, the losses not yet in a log row). With the trainable weights, the
optimizer's and the scheduler's states and the RNG states, that is a checkpoint:
`LoopState.to_checkpoint` writes its keys and `LoopState.resume` reads them, the one place that
names them (textclf.train.checkpoints stores the file, adding the params' fingerprint;
textclf.train.train_log.CheckpointsWithLog adds the training log).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from textclf.core.errors import NonFiniteLossError
from textclf.train.checkpoints import Checkpointer, rng_state, set_rng_state


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
            if p.requires_grad}


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


@dataclass
class BestEpoch:
    """The epoch with the highest validation accuracy so far, and its trainable weights."""
    accuracy: float = -1.0  # -1: no epoch validated yet
    epoch: int = 0  # 1-based; 0: none yet
    weights: dict[str, torch.Tensor] | None = None


@dataclass
class LoopState:
    """Where a training run is and what it has seen: all a resumed run needs besides the model,
    optimizer, scheduler and RNG states."""
    epoch: int = 0  # epochs finished: the 0-based index of the current one
    step: int = 0  # optimizer steps taken in the current epoch
    global_step: int = 0  # optimizer steps taken in the run
    best: BestEpoch = field(default_factory=BestEpoch)
    history: list[dict] = field(default_factory=list)  # one row per validated epoch
    epoch_losses: list[float] = field(default_factory=list)  # this epoch's losses in log rows
    # this epoch's losses since the last log row, left on the device (reading them waits for
    # the device) until the row
    window: list[torch.Tensor] = field(default_factory=list)

    def to_checkpoint(self, model: torch.nn.Module, optimizer, scheduler) -> dict:
        """A checkpoint of the run at this point: the trainable weights of `model` (unwrapped),
        the optimizer's, the scheduler's and the RNG states, and this state."""
        return {"weights": trainable_weights(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(),
                "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                "best": {"accuracy": self.best.accuracy, "epoch": self.best.epoch,
                         "weights": self.best.weights},
                "history": self.history, "epoch_losses": self.epoch_losses,
                # a run stopped between log rows: the losses its resumed epoch's next row needs
                "window": [float(v) for v in self.window]}

    @classmethod
    def resume(cls, saved: dict, model: torch.nn.Module, optimizer, scheduler,
               device: torch.device) -> LoopState:
        """The state of a checkpoint (`to_checkpoint`'s), with `model`, the optimizer, the
        scheduler and the RNGs set back to where it was written."""
        load_weights(model, saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        return cls(epoch=saved["epoch"], step=saved["step"], global_step=saved["global_step"],
                   best=BestEpoch(**saved["best"]), history=saved["history"],
                   epoch_losses=saved["epoch_losses"],
                   # absent from checkpoints of older versions: no unlogged losses then
                   window=[torch.tensor(v, device=device) for v in saved.get("window", [])])

    def count_step(self, loss: torch.Tensor) -> None:
        """One optimizer step taken; its loss waits in the window for the next log row."""
        self.step += 1
        self.global_step += 1
        self.window.append(loss.detach())

    def close_window(self, checkpointer: Checkpointer | None) -> float:
        """The mean loss of the steps since the last log row, which join the epoch's losses.
        NonFiniteLossError at the first NaN/inf among them, naming the checkpointer's last
        good checkpoint if there is one."""
        values = torch.stack(self.window).float().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            last_good = checkpointer.path if checkpointer and checkpointer.path.exists() else None
            raise NonFiniteLossError(self.global_step - len(self.window) + int(bad[0]) + 1,
                                     last_good)
        losses = values.tolist()
        self.epoch_losses += losses
        self.window = []
        return sum(losses) / len(losses)

    def end_epoch(self, val_loss: float, val_accuracy: float, model: torch.nn.Module) -> dict:
        """Record the epoch just validated (its history row, returned), keep the trainable
        weights of `model` if it is the best so far, and move on to the next epoch."""
        row = {"epoch": self.epoch + 1,
               "train_loss": float(np.mean(self.epoch_losses)) if self.epoch_losses
               else float("nan"),
               "val_loss": val_loss, "val_accuracy": val_accuracy}
        self.history.append(row)
        if val_accuracy > self.best.accuracy:
            self.best = BestEpoch(val_accuracy, self.epoch + 1, trainable_weights(model))
        self.epoch, self.step, self.epoch_losses = self.epoch + 1, 0, []
        return row
