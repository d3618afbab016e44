"""Interrupted runs resume to the same result, the same seed gives the same numbers, a failed run
keeps the previous outputs, and several processes train like one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import tiny

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # stage subprocesses, interrupted and multi-process runs
TIMING = {"train_seconds", "eval_seconds", "resumed_at_step"}


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stage_cmd(stage: str, params: Path, run: Path) -> list[str]:
    """The stage script with every path inside `run` (as the compare pipeline passes them)."""
    return tiny.stage_command(stage, params, run)


def run_stage(stage: str, params: Path, run: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(stage_cmd(stage, params, run), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def quality(run: Path) -> dict:
    """Every metric and prediction of a run except timing fields."""
    train = json.loads((run / "metrics/train.json").read_text())
    evaluation = json.loads((run / "metrics/eval.json").read_text())
    return {
        "train": {k: v for k, v in train.items() if k not in TIMING},
        "eval": {k: v for k, v in evaluation.items() if k not in TIMING},
        "predictions": (run / "outputs/evaluate/predictions.jsonl").read_text(),
    }


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory, tiny_dirs, data_dir):
    """Params for a longer tiny run (enough steps to interrupt) and its prepared data."""
    root = tmp_path_factory.mktemp("reliability")
    params = write_params(root / "params.yaml", tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, train={"epochs": 12, "checkpoint_every": 3, "log_every": 1}))
    run_stage("prepare", params, root / "reference")
    run_stage("train", params, root / "reference")
    run_stage("evaluate", params, root / "reference")
    return root, params


def copy_prepared(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src / "data/prepared", dst / "data/prepared")


def train_until_checkpoint(params: Path, run: Path, settle: float = 0.0) -> subprocess.Popen:
    """The train stage started on `run`, returned once it has written its first checkpoint
    (and `settle` seconds more), still running so that the test can interrupt it."""
    proc = subprocess.Popen(stage_cmd("train", params, run), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint, deadline = run / "checkpoints" / "last.pt", time.time() + 60
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    assert proc.poll() is None, "training ended before it could be interrupted"
    return proc


def test_same_seed_same_numbers(prepared_run, tmp_path):
    root, params = prepared_run
    again = tmp_path / "again"
    run_stage("prepare", params, again)
    run_stage("train", params, again)
    run_stage("evaluate", params, again)
    assert quality(again) == quality(root / "reference")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])  # SIGTERM: the log test below
def test_interrupted_training_resumes_to_the_same_result(prepared_run, tmp_path, sig):
    root, params = prepared_run
    run = tmp_path / "run"
    copy_prepared(root / "reference", run)
    checkpoint = run / "checkpoints" / "last.pt"
    proc = train_until_checkpoint(params, run)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig != signal.SIGKILL:
        assert f"{signal.Signals(sig).name} received at step" in err
        assert proc.returncode == 128 + sig
    assert checkpoint.exists() and not (run / "models").exists()

    resumed = run_stage("train", params, run)
    assert "resuming from" in resumed.stdout
    assert json.loads((run / "outputs/train/run.json").read_text())["resumed_at_step"] > 0
    assert not checkpoint.exists()  # a finished run forgets its checkpoint
    run_stage("evaluate", params, run)
    assert quality(run) == quality(root / "reference")


def training_log(run: Path) -> dict[str, str]:
    """The training log files dvc.yaml declares as plots (steps and values, no timestamps)."""
    log = run / "metrics/train_log/plots/metrics"
    return {name: (log / name).read_text()
            for name in ("train/loss.tsv", "val/accuracy.tsv", "val/loss.tsv")}


@pytest.mark.parametrize("sig, log_removed", [
    (signal.SIGKILL, False),  # killed after logging steps past its last checkpoint
    (signal.SIGTERM, True),  # DVC removes the declared log files before it reruns the stage
])
def test_resumed_run_plots_the_same_training_log(prepared_run, tmp_path, sig, log_removed):
    root, params = prepared_run
    run = tmp_path / "run"
    copy_prepared(root / "reference", run)
    proc = train_until_checkpoint(params, run, settle=0.3)  # a few steps past the checkpoint
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:  # what `dvc queue kill` and job schedulers send
        assert "SIGTERM received at step" in err and proc.returncode == 128 + sig
    if log_removed:
        import shutil

        shutil.rmtree(run / "metrics/train_log")
    assert "resuming from" in run_stage("train", params, run).stdout
    assert training_log(run) == training_log(root / "reference")


def test_checkpoint_of_other_params_is_not_resumed(prepared_run, tmp_path):
    root, params = prepared_run
    run = tmp_path / "run"
    copy_prepared(root / "reference", run)
    proc = train_until_checkpoint(params, run)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)

    other = yaml.safe_load(params.read_text())
    other["train"]["lr"] = 1.0e-4
    other_params = write_params(tmp_path / "other.yaml", other)
    result = run_stage("train", other_params, run)
    assert "ignoring stale checkpoint" in result.stdout
    assert "resuming" not in result.stdout
    assert json.loads((run / "outputs/train/run.json").read_text())["resumed_at_step"] is None
    # the log is this run's alone, not the interrupted one's rows with these after them
    steps = {name: [line.split("\t")[0] for line in text.splitlines()]
             for name, text in training_log(run).items()}
    assert steps == {name: [line.split("\t")[0] for line in text.splitlines()]
                     for name, text in training_log(root / "reference").items()}


def test_failed_run_keeps_the_previous_outputs(prepared_run, tmp_path):
    root, params = prepared_run
    run = tmp_path / "run"
    run_stage("prepare", params, run)
    run_stage("train", params, run)
    before = {p: p.read_bytes() for p in (run / "models").iterdir()}
    metrics_before = (run / "metrics/train.json").read_text()

    broken = yaml.safe_load(params.read_text())
    broken["train"]["lr"] = 1.0e12  # diverges: the loss becomes NaN/inf
    broken["train"]["grad_clip"] = 0.0
    broken["finetune"]["trainable_blocks"] = "all"
    result = subprocess.run(stage_cmd("train", write_params(tmp_path / "b.yaml", broken), run),
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "the training loss became NaN/inf at step" in result.stderr
    assert "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in (run / "models").iterdir()} == before
    assert (run / "metrics/train.json").read_text() == metrics_before


def test_two_processes_train_like_one(prepared_run, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU: the processes join over gloo."""
    root, params = prepared_run
    run = tmp_path / "run"
    copy_prepared(root / "reference", run)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           *stage_cmd("train", params, run)[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # outputs written by the main process only
    two = json.loads((run / "metrics/train.json").read_text())
    one = json.loads((root / "reference/metrics/train.json").read_text())
    # Each process takes every other batch: half the optimizer steps of one process.
    steps = [json.loads((r / "outputs/train/run.json").read_text())["steps"]
             for r in (run, root / "reference")]
    assert steps[0] == steps[1] // 2
    # Both see the whole validation split; tiny fixture data, so a loose tolerance (2 of 7).
    assert abs(two["best_val_accuracy"] - one["best_val_accuracy"]) <= 2 / 7 + 1e-9
    assert not (run / "checkpoints/last.pt").exists()


@pytest.mark.slow
def test_a_run_stopped_between_log_rows_plots_as_an_uninterrupted_one(tiny_dirs, data_dir,
                                                                      tmp_path):
    """Rows only at epoch ends (log_every beyond an epoch), checkpoints only at epoch ends and on
    the stop: a SIGTERM mid-epoch must neither add a row at the stop nor leave the resumed
    epoch's row without the losses before it."""
    params = write_params(tmp_path / "params.yaml", tiny.tiny_params(
        tiny_dirs["gpt2"], data_dir, train={"epochs": 12, "checkpoint_every": 0,
                                            "log_every": 1000}))
    reference, run = tmp_path / "reference", tmp_path / "run"
    run_stage("prepare", params, reference)
    run_stage("train", params, reference)
    copy_prepared(reference, run)
    proc = train_until_checkpoint(params, run, settle=0.2)  # into the next epoch
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert "resuming from" in run_stage("train", params, run).stdout
    assert training_log(run) == training_log(reference)
