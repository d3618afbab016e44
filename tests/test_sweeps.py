"""Queued sweeps: `dvc exp run --queue` + `dvc queue start -j 2` run each experiment on the code
it was queued with (stages/this_checkout.py), with nothing shared between parallel workers."""

import json
import time

import pytest
from support import tiny
from support.tiny import ENV, sh


def wait_for_queue(project, timeout: float = 900) -> str:
    """Poll `dvc queue status` until nothing is queued or running; its last output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sh(project, "dvc", "queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


@pytest.mark.slow
def test_a_queued_grid_runs_the_queued_code_in_parallel(tiny_dirs, data_dir, tmp_path,
                                                        monkeypatch):
    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, train={"epochs": 1})
    project = tiny.dvc_project(tmp_path / "project", params)
    # The project's package is the one Python finds, as with an editable install of the
    # workspace: the queued experiments must not pick up what is edited after queueing.
    monkeypatch.setitem(ENV, "PYTHONPATH", str(project / "src"))
    sh(project, "dvc", "exp", "run", "--queue", "-S", "method=lora",
       "-S", "train.lr=1e-5,5e-5", "-S", "lora.r=4,8")
    assert sh(project, "dvc", "queue", "status").count("Queued") == 4

    # Keep working in the workspace: this edit makes every stage fail at once
    runner = project / "src" / "textclf" / "core" / "runner.py"
    runner.write_text(runner.read_text() + "\nraise SystemExit('the workspace code ran')\n")

    sh(project, "dvc", "queue", "start", "-j", "2")
    status = wait_for_queue(project)
    assert status.count("Success") == 4, status + sh(project, "dvc", "queue", "logs", "--help")

    rows = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    runs = []
    for baseline in rows:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev["data"]
                p = data["params"]["params.yaml"]["data"]
                metrics = data["metrics"]["metrics/eval.json"]["data"]
                runs.append(((float(p["train"]["lr"]), p["lora"]["r"]), metrics["n"]))
    assert sorted(grid for grid, _ in runs) == [(1e-5, 4), (1e-5, 8), (5e-5, 4), (5e-5, 8)]
    assert all(n == 12 for _, n in runs)
    # the workspace's edit stays the workspace's
    assert "the workspace code ran" in runner.read_text()
