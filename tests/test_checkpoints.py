"""A resumable checkpoint is read as data only (torch.load weights_only=True): one holding any
other pickled object is refused before that object runs, and a normal one restores the run's
state, RNG states included. (The interrupted-and-resumed runs: tests/test_reliability.py.)"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from textclf.train.checkpoints import Checkpointer, rng_state, set_rng_state


class Payload:
    """Unpickling it writes a file: what arbitrary code in a checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "this code ran"))


def draws() -> list:
    return [random.random(), float(np.random.rand()), float(torch.rand(()))]


def test_a_checkpoint_holding_an_arbitrary_object_is_refused(tmp_path):
    logged = []
    checkpointer = Checkpointer(tmp_path, "run-id", log=logged.append)
    marker = tmp_path / "marker"
    torch.save({"fingerprint": "run-id", "epoch": 1, "extra": Payload(marker)},
               checkpointer.path)
    assert checkpointer.load() is None
    assert not marker.exists(), "the checkpoint's code ran"
    assert len(logged) == 1 and "ignoring checkpoint" in logged[0], logged


def test_a_normal_checkpoint_restores_state_and_rng(tmp_path):
    checkpointer = Checkpointer(tmp_path, "run-id", log=print)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = {"weights": model.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": rng_state(), "epoch": 2, "history": [{"epoch": 1, "val_accuracy": 0.5}],
             "best": {"accuracy": np.float64(0.5), "epoch": 1, "weights": None},
             "epoch_losses": [0.25, 0.125]}
    expected = draws()
    checkpointer.save(state)
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    loaded = checkpointer.load()
    assert loaded is not None and loaded["fingerprint"] == "run-id"
    set_rng_state(loaded["rng"])
    assert draws() == expected
    assert loaded["history"] == state["history"] and loaded["epoch_losses"] == [0.25, 0.125]
    assert loaded["best"]["accuracy"] == 0.5
    torch.testing.assert_close(loaded["weights"], state["weights"])
    torch.optim.AdamW(model.parameters(), lr=0.1).load_state_dict(loaded["optimizer"])
