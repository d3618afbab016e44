"""A stage whose params change while it runs stops with one error line instead of writing outputs
that dvc.lock would record with values they were not made with (a second `dvc exp run` in the
workspace writes its -S values into params.yaml under the first one's running stage)."""

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from support import tiny
from support.tiny import ENV

from textclf.core import params_watch, runner
from textclf.core.errors import ParamsChangedError
from textclf.core.outputs import staged_dir, write_text

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_settling(monkeypatch):
    monkeypatch.setattr(params_watch, "SETTLE_SECONDS", 0.0)


@pytest.fixture()
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    return path


def set_value(path: Path, old: str, new: str) -> None:
    """Replace the text `old` (a `key: value` line's start) in the file by `new`."""
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def stage_args(params: Path, *overlays: str):
    return runner.stage_parser(None).parse_args(["--params", str(params),
                                                 *[a for o in overlays for a in ("--overlay", o)]])


@pytest.fixture()
def watching(params_file):
    """The params file watched, as params_from_args does at a stage's start."""
    runner.params_from_args(stage_args(params_file))
    yield params_file
    params_watch.stop_watching()


def test_a_changed_value_stops_the_next_output_before_it_is_in_place(watching, tmp_path,
                                                                     no_settling):
    set_value(watching, "  lr: 5.0e-5", "  lr: 5.0e-3")
    with pytest.raises(ParamsChangedError) as error:
        with staged_dir(tmp_path / "models") as tmp:
            write_text(tmp / "head.safetensors", "weights")
    message = str(error.value)
    assert message.startswith(f"{watching} changed while this stage ran (train.lr): dvc.lock "
                              "would record values it did not run with")
    assert "dvc exp run --queue" in message and "dvc exp run --temp" in message
    assert "\n" not in message
    with pytest.raises(ParamsChangedError):
        write_text(tmp_path / "metrics.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_comments_and_layout_are_no_change(watching, tmp_path, no_settling):
    text = watching.read_text()
    edited = text.replace("  lr: 5.0e-5", "  lr: 0.00005")  # the same number
    watching.write_text("# a note for the next run\n" + edited)
    write_text(tmp_path / "metrics.json", "{}")
    assert params_watch.changed_params() == {}


@pytest.mark.parametrize("damage, keys", [
    (lambda p: p.unlink(), ["the whole file"]),
    (lambda p: p.write_text("seed: [unclosed\n"), ["the whole file"]),
    (lambda p: set_value(p, "seed: 42", "seed: 1"), ["seed"]),
])
def test_a_missing_or_broken_file_is_a_change(watching, no_settling, damage, keys):
    damage(watching)
    assert params_watch.changed_params() == {str(watching): keys}


def test_of_an_overlay_only_its_key_is_watched(params_file, tmp_path, no_settling):
    """The compare pipeline's stages read one entry of compare/params.yaml each: another
    entry's edit is no change to them (DVC records only theirs)."""
    overlay = tmp_path / "compare.yaml"
    overlay.write_text("runs:\n  a:\n    params: {method: lora}\n  b:\n    params: {seed: 1}\n")
    runner.params_from_args(stage_args(params_file, f"{overlay}:runs.a.params"))
    try:
        overlay.write_text("runs:\n  a:\n    params: {method: lora}\n  b:\n    params: {seed: 2}\n")
        assert params_watch.changed_params() == {}
        overlay.write_text("runs:\n  a:\n    params: {method: finetune}\n")
        assert params_watch.changed_params() == {str(overlay): ["runs.a.params.method"]}
    finally:
        params_watch.stop_watching()


def test_a_change_undone_within_the_settling_time_is_no_change(watching, monkeypatch):
    """`dvc exp run --queue` started while a stage runs stashes params.yaml's changes and
    applies them again a moment later."""
    monkeypatch.setattr(params_watch, "SETTLE_SECONDS", 5.0)
    original = watching.read_text()
    set_value(watching, "seed: 42", "seed: 7")
    threading.Timer(0.5, watching.write_text, args=(original,)).start()
    started = time.monotonic()
    params_watch.check_params_unchanged()
    assert 0.4 < time.monotonic() - started < 4


def run_in_process(main, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        runner.run_stage(main)
    return done.value.code, capsys.readouterr().err


def test_a_change_after_the_last_output_fails_the_stage(params_file, tmp_path, capsys,
                                                        no_settling):
    """Checked once more when main() returns: DVC reads the params for dvc.lock after that."""
    def main():
        runner.params_from_args(stage_args(params_file))
        write_text(tmp_path / "metrics.json", "{}")
        set_value(params_file, "  bootstrap: 1000", "  bootstrap: 10")

    code, err = run_in_process(main, capsys)
    assert code == 2
    assert err.startswith(f"error: {params_file} changed while this stage ran (eval.bootstrap)")
    assert err.count("\n") == 1
    assert params_watch.WATCHED == []  # not watched past the stage


def test_a_stage_whose_params_change_while_it_runs_writes_nothing(tiny_dirs, data_dir, tmp_path,
                                                                  monkeypatch, capsys,
                                                                  no_settling):
    """The real prepare stage, with params.yaml edited while it loads the data."""
    from textclf.core import data

    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir)
    run = tmp_path / "run"
    run.mkdir()
    params_path = run / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    load_corpus = data.load_corpus

    def load_then_edit(*args, **kwargs):
        corpus = load_corpus(*args, **kwargs)
        changed = {**params, "data": {**params["data"], "val_fraction": 0.5}}
        params_path.write_text(yaml.safe_dump(changed, sort_keys=False))
        return corpus

    monkeypatch.setattr(data, "load_corpus", load_then_edit)
    script, *args = tiny.stage_command("prepare", params_path, run)[1:]
    assert tiny.run_script_in_process(Path(script), args) == 2
    err = capsys.readouterr().err
    assert f"error: {params_path} changed while this stage ran (data.val_fraction)" in err
    assert not (run / "data").exists() or list((run / "data").iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Between the stages of one DVC run

@pytest.fixture()
def dvc_project(tmp_path, params_file, monkeypatch, no_settling):
    """Stages run by one DVC process (as DVC runs them: in the project, with DVC_STAGE set)."""
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(params_watch, "dvc_run", lambda: "4242-1700000000.5")
    yield params_file
    params_watch.stop_watching()


def start_stage(monkeypatch, name: str, *overlays: str) -> None:
    monkeypatch.setenv("DVC_STAGE", name)
    runner.params_from_args(stage_args(Path("params.yaml"), *overlays))


def test_a_stage_stops_if_params_changed_after_an_earlier_stage_of_its_run(dvc_project,
                                                                          monkeypatch):
    start_stage(monkeypatch, "prepare")
    start_stage(monkeypatch, "train")  # nothing changed
    set_value(dvc_project, "  val_fraction: 0.1", "  val_fraction: 0.2")
    with pytest.raises(ParamsChangedError) as error:
        start_stage(monkeypatch, "evaluate")
    assert str(error.value).startswith(
        "params.yaml changed after stage 'prepare' of this run read it (data.val_fraction): "
        "this stage would run on other values. Is another `dvc exp run` running")


def test_stages_of_other_runs_and_a_rerun_of_the_same_stage_are_not_compared(dvc_project,
                                                                             monkeypatch):
    """`dvc repro -s train` after an edit, `--downstream`, a frozen prepare: only stages that
    ran in the same DVC process count."""
    start_stage(monkeypatch, "prepare")
    set_value(dvc_project, "  val_fraction: 0.1", "  val_fraction: 0.2")
    start_stage(monkeypatch, "prepare")  # the same stage again: its record is replaced
    set_value(dvc_project, "seed: 42", "seed: 1")
    monkeypatch.setattr(params_watch, "dvc_run", lambda: "4343-1700000100.0")  # the next run
    start_stage(monkeypatch, "train")
    records = sorted(p.name for p in (dvc_project.parent / ".dvc/tmp/textclf-params").iterdir())
    assert records == ["prepare.json", "train.json"]


def test_outside_dvc_nothing_is_recorded(params_file, tmp_path, monkeypatch):
    """`python stages/x.py` by hand (no DVC_STAGE), with any params file."""
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert params_watch.dvc_run() is None
    runner.params_from_args(stage_args(params_file))
    params_watch.stop_watching()
    assert not (tmp_path / ".dvc/tmp").exists()


def test_compare_stages_compare_the_overlay_entries_they_read(dvc_project, monkeypatch,
                                                             tmp_path):
    """compare/: train@a and train@b read their own entries of compare/params.yaml."""
    overlay = tmp_path / "compare.yaml"
    overlay.write_text("runs:\n  a: {params: {seed: 1}}\n  b: {params: {seed: 2}}\n")
    start_stage(monkeypatch, "train@a", "compare.yaml:runs.a.params")
    overlay.write_text("runs:\n  a: {params: {seed: 1}}\n  b: {params: {seed: 3}}\n")
    start_stage(monkeypatch, "train@b", "compare.yaml:runs.b.params")
    overlay.write_text("runs:\n  a: {params: {seed: 5}}\n  b: {params: {seed: 3}}\n")
    with pytest.raises(ParamsChangedError, match=r"compare.yaml changed after stage 'train@a' "
                                                 r"of this run read it \(runs.a.params.seed\)"):
        start_stage(monkeypatch, "train@c", "compare.yaml:runs.a.params")


# ---------------------------------------------------------------------------------------------
# End to end: two `dvc exp run` in one workspace

# The stages of the test's own pipeline: each says it waits, reads the params once the test
# lets it (signals/<stage>.go), says it has read them, and writes what it read once the test lets
# it (signals/<stage>.done); as every stage, through run_stage and params_from_args
WAITING_STAGE = """
import os
import time
from pathlib import Path

from textclf.core import params_watch
from textclf.core.outputs import write_json
from textclf.core.runner import params_from_args, run_stage, stage_parser

params_watch.SETTLE_SECONDS = 1.0
STAGE = os.environ["DVC_STAGE"]


def signal(name):
    Path(f"signals/{STAGE}.{name}").touch()


def wait_for(name):
    while not Path(f"signals/{STAGE}.{name}").exists():
        time.sleep(0.05)


def main():
    signal("waiting")
    wait_for("go")
    params = params_from_args(stage_parser(None).parse_args())
    signal("started")
    wait_for("done")
    write_json(f"{STAGE}.json", {"lr": params.train.lr})


run_stage(main)
"""

PIPELINE = {"stages": {
    "first": {"cmd": "python wait.py", "deps": ["wait.py"], "params": ["train.lr"],
              "outs": ["first.json"]},
    "second": {"cmd": "python wait.py", "deps": ["wait.py", "first.json"],
               "params": ["train.lr"], "outs": ["second.json"]},
}}


def sh(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


class Experiment:
    """`dvc exp run -S train.lr=<lr>` in the background, its stages let through except where
    the test holds them (`hold`: signal names such as "first.done")."""

    def __init__(self, project: Path, lr: float, hold: tuple[str, ...]):
        self.signals = project / "signals"
        shutil.rmtree(self.signals, ignore_errors=True)
        self.signals.mkdir()
        for name in {f"{s}.{step}" for s in ("first", "second") for step in ("go", "done")}:
            if name not in hold:
                (self.signals / name).touch()
        self.proc = subprocess.Popen(["dvc", "exp", "run", "-S", f"train.lr={lr}"], cwd=project,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=ENV)

    def wait_for(self, name: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not (self.signals / name).exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, f"no {name} after {seconds} s"
            time.sleep(0.05)

    def let(self, name: str) -> tuple[int, str]:
        (self.signals / name).touch()
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, out


def recorded_lr(project: Path) -> dict[str, float]:
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {name: stage["params"]["params.yaml"]["train.lr"] for name, stage in stages.items()}


@pytest.mark.slow
def test_a_second_exp_run_in_the_workspace_fails_the_first_instead_of_mixing(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (project / "wait.py").write_text(WAITING_STAGE)
    (project / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    (project / ".gitignore").write_text("/signals/\n")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "t@e.st"],
                ["git", "config", "user.name", "test"], ["dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-q", "-m", "start"]):
        sh(project, *cmd)

    # An experiment queued meanwhile is fine: the workspace's params.yaml comes back as it was
    exp = Experiment(project, 0.002, hold=("first.done",))
    exp.wait_for("first.started")
    sh(project, "dvc", "exp", "run", "--queue", "-S", "train.lr=0.005")
    code, out = exp.let("first.done")
    assert code == 0, out
    assert recorded_lr(project) == {"first": 0.002, "second": 0.002}

    # A second one in the workspace while a stage runs: it writes its value into params.yaml,
    # then fails; the stage, which read 0.003, stops instead of letting dvc.lock record 0.004
    exp = Experiment(project, 0.003, hold=("first.done",))
    exp.wait_for("first.started")
    second = sh(project, "dvc", "exp", "run", "-S", "train.lr=0.004", check=False)
    assert second.returncode != 0 and "is busy" in second.stdout + second.stderr
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == 0.004
    code, out = exp.let("first.done")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1, out
    assert "params.yaml changed while this stage ran (train.lr)" in errors[0]
    assert recorded_lr(project) == {"first": 0.002, "second": 0.002}  # the last good run's

    # ... and between two stages: the second stage would run on 0.007, the first ran on 0.006
    sh(project, "git", "checkout", "params.yaml")
    exp = Experiment(project, 0.006, hold=("second.go",))
    exp.wait_for("second.waiting")
    assert sh(project, "dvc", "exp", "run", "-S", "train.lr=0.007", check=False).returncode != 0
    code, out = exp.let("second.go")
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code != 0 and len(errors) == 1, out
    assert "params.yaml changed after stage 'first' of this run read it (train.lr)" in errors[0]
