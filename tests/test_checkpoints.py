"""A resumable checkpoint is read as data only (torch.load weights_only=True): one holding any
other pickled object is refused before that object runs, a damaged one is set aside and the
run starts over, and a normal one restores the run's state, RNG states included. The loop's
state (LoopState) saves to and loads from one, in the layout checkpoints have always had. (The
interrupted-and-resumed runs: tests/test_reliability.py.)"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny

from textclf.core.errors import NonFiniteLossError
from textclf.train.checkpoints import Checkpointer, rng_state, set_rng_state
from textclf.train.loop import make_scheduler
from textclf.train.loop_state import BestEpoch, LoopState, trainable_weights


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


# ---------------------------------------------------------------------------------------------
# The loop's state: what a checkpoint holds

# A checkpoint's keys (Checkpointer adds "fingerprint", CheckpointsWithLog "train_log"): the
# checkpoints already written resume only as long as these stay the same
LAYOUT = {"weights", "optimizer", "scheduler", "rng", "epoch", "step", "global_step", "best",
          "history", "epoch_losses", "window"}


def trained_step(seed: int):
    """A model, its optimizer and scheduler, one step into training."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # a frozen part: not in the checkpoint's weights
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = make_scheduler(optimizer, "linear", 0.1, 20)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_the_loop_state_saves_to_and_loads_from_a_checkpoint(tmp_path):
    model, optimizer, scheduler = trained_step(seed=0)
    state = LoopState(epoch=1, step=2, global_step=7,
                      best=BestEpoch(0.75, 1, trainable_weights(model)),
                      history=[{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4,
                                "val_accuracy": 0.75}],
                      epoch_losses=[0.25, 0.125], window=[torch.tensor(0.5), torch.tensor(1.5)])
    checkpointer = Checkpointer(tmp_path, "run-id")
    checkpointer.save(state.to_checkpoint(model, optimizer, scheduler))
    saved = checkpointer.load()
    assert set(saved) == LAYOUT | {"fingerprint"}
    assert set(saved["weights"]) == {"1.weight", "1.bias"}

    other, other_optimizer, other_scheduler = trained_step(seed=1)
    resumed = LoopState.resume(saved, other, other_optimizer, other_scheduler,
                               torch.device("cpu"))
    assert (resumed.epoch, resumed.step, resumed.global_step) == (1, 2, 7)
    assert resumed.history == state.history and resumed.epoch_losses == [0.25, 0.125]
    assert [float(v) for v in resumed.window] == [0.5, 1.5]
    assert (resumed.best.accuracy, resumed.best.epoch) == (0.75, 1)
    torch.testing.assert_close(resumed.best.weights, state.best.weights)
    torch.testing.assert_close(other.state_dict()["1.weight"], model.state_dict()["1.weight"])
    torch.testing.assert_close(other_optimizer.state_dict(), optimizer.state_dict())
    assert other_scheduler.state_dict() == scheduler.state_dict()


def test_a_log_row_takes_the_window_and_stops_at_the_first_nan(tmp_path):
    state = LoopState(global_step=4, epoch_losses=[1.0])
    for loss in (0.5, 1.5):
        state.count_step(torch.tensor(loss))
    assert (state.step, state.global_step) == (2, 6)
    assert state.close_window(None) == 1.0
    assert state.window == [] and state.epoch_losses == [1.0, 0.5, 1.5]
    for loss in (0.5, float("nan"), 0.5):
        state.count_step(torch.tensor(loss))
    with pytest.raises(NonFiniteLossError, match="at step 8; .* no checkpoint kept") as error:
        state.close_window(Checkpointer(tmp_path, "run-id"))  # none written yet
    assert error.value.step == 8


def test_an_epoch_end_keeps_the_best_weights_and_starts_the_next_epoch():
    model, _, _ = trained_step(seed=0)
    state = LoopState(epoch=0, step=3, global_step=3, epoch_losses=[1.0, 2.0])
    row = state.end_epoch(0.5, 0.75, model)
    assert row == {"epoch": 1, "train_loss": 1.5, "val_loss": 0.5, "val_accuracy": 0.75}
    assert state.history == [row] and (state.epoch, state.step, state.epoch_losses) == (1, 0, [])
    assert state.best.epoch == 1 and state.best.accuracy == 0.75
    with torch.no_grad():
        model[1].weight.add_(1.0)
    state.end_epoch(0.4, 0.75, model)  # no better: the first epoch stays the best
    assert state.best.epoch == 1 and state.global_step == 3
    assert not torch.equal(state.best.weights["1.weight"], model[1].weight)


# ---------------------------------------------------------------------------------------------
# A damaged checkpoint: set aside, and the train stage trains from the start

def trained(run: Path) -> dict:
    """What a train stage run produced, but for its timings: the model's files, the metrics,
    the per-epoch history and the training log."""
    info = json.loads((run / "outputs/train/run.json").read_text())
    log = run / "metrics/train_log/plots/metrics"
    return {"model": {p.name: p.read_bytes() for p in sorted((run / "models").iterdir())},
            "metrics": (run / "metrics/train.json").read_text(),
            "run": {k: v for k, v in info.items()
                    if k not in ("train_seconds", "frozen_cache_reason")},  # time, free memory
            "log": {p.relative_to(log).as_posix(): p.read_text() for p in log.rglob("*.tsv")}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_dirs, data_dir):
    """A train stage run from prepared data, never interrupted, and its params."""
    run = tmp_path_factory.mktemp("uninterrupted")
    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir)
    tiny.run_stages(run, params, stages=("prepare", "train"), in_process=True)
    return run, run / "params.yaml"


DAMAGES = {  # a checkpoint file as Checkpointer writes it -> the damaged file
    "truncated": lambda whole: whole[: len(whole) // 2],  # a copy cut short (disk full)
    "truncated early": lambda whole: whole[:1024],  # zip archive without its directory
    "empty": lambda whole: b"",
    "garbage": lambda whole: bytes(range(256)) * 16,  # not a checkpoint at all
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_set_aside_and_training_starts_over(uninterrupted, tmp_path,
                                                                    capsys, damage):
    reference, params = uninterrupted
    run = tmp_path / "run"
    shutil.copytree(reference / "data/prepared", run / "data/prepared")
    checkpoint = run / "checkpoints" / "last.pt"
    Checkpointer(checkpoint.parent, "run-id").save(
        {"weights": {"w": torch.randn(64, 64)}, "epoch": 1, "history": []})
    damaged = DAMAGES[damage](checkpoint.read_bytes())
    checkpoint.write_bytes(damaged)
    capsys.readouterr()

    tiny.run_stages(run, params, stages=("train",), in_process=True)
    out = capsys.readouterr().out
    kept = [p for p in checkpoint.parent.iterdir() if p != checkpoint]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # kept, under a new name
    said = [line for line in out.splitlines() if str(checkpoint) in line]
    assert len(said) == 1 and str(kept[0]) in said[0], out  # one line, naming the new path
    assert "resuming" not in out and not checkpoint.exists()
    assert trained(run) == trained(reference)


def test_each_unreadable_checkpoint_is_kept_and_only_the_main_process_moves_it(tmp_path):
    logged = []
    main = Checkpointer(tmp_path, "run-id", log=logged.append)
    other = Checkpointer(tmp_path, "run-id", is_main=False, log=logged.append)
    for content in (b"first", b"second"):
        main.path.write_bytes(content)
        assert other.load() is None and main.path.read_bytes() == content  # left in place
        assert main.load() is None and not main.path.exists()
    assert (tmp_path / "last.unreadable.pt").read_bytes() == b"first"
    assert (tmp_path / "last.unreadable-2.pt").read_bytes() == b"second"
    assert len(logged) == 4 and all(line.startswith("ignoring checkpoint") for line in logged)
    assert "moved to" not in logged[0] and str(tmp_path / "last.unreadable-2.pt") in logged[3]
