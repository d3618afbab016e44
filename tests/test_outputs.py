"""What the stages write: with the user's umask (another user of the machine, or a container
running as another user, can read the model), through temporary paths that git ignores and the
next write removes once their writer is gone."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import tiny

from textclf.core import outputs
from textclf.core.outputs import staged_dir, temp_path, write_bytes, write_text

REPO = Path(__file__).resolve().parents[1]
UMASKS = [0o022, 0o002, 0o077]


@pytest.fixture()
def umask(request):
    """Run the test under the umask it is parametrised with (process-wide, restored after)."""
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wrong_modes(root: Path, umask: int, skip: set[Path] = frozenset()) -> dict[str, str]:
    """Every file and directory under `root` whose mode is not the one a plain open()/mkdir()
    gives under `umask`: relative path -> (mode, expected)."""
    wrong = {}
    for path in root.rglob("*"):
        if path in skip or path.is_symlink():
            continue
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        if mode(path) != expected:
            wrong[path.relative_to(root).as_posix()] = f"{mode(path):o}, not {expected:o}"
    return wrong


@pytest.mark.parametrize("umask", UMASKS, indirect=True, ids=oct)
def test_written_files_and_directories_get_the_umask(tmp_path, umask):
    write_text(tmp_path / "metrics/eval.json", "{}\n")
    write_bytes(tmp_path / "metrics/plots/roc.png", b"\x89PNG")
    for _ in range(2):  # a new directory, then one that replaces the previous output
        with staged_dir(tmp_path / "export") as tmp:
            write_text(tmp / "README.md", "# card\n")
            (tmp / "tokenizer").mkdir()
    assert wrong_modes(tmp_path, umask) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "metrics"]  # nothing left


@pytest.mark.parametrize("family, umask", [("gpt2", 0o022), ("bert", 0o002), ("bert", 0o077)],
                         indirect=["umask"], ids=["gpt2-022", "bert-002", "bert-077"])
def test_every_output_of_the_stages_gets_the_umask(tiny_dirs, data_dir, tmp_path, family, umask):
    """The whole pipeline in this process: data/prepared, models, outputs/*, metrics/ and export/
    (BERT's: textclf's own class, with its modelling file) as the umask says."""
    params = tiny.tiny_params(tiny_dirs[family], data_dir, train={"epochs": 1})
    run = tiny.run_stages(tmp_path / "run", params,
                          stages=("prepare", "train", "evaluate", "export"), in_process=True)
    assert (run / "export/model.safetensors").is_file()
    assert (run / "export/hf_model.py").is_file() or family == "gpt2"
    assert wrong_modes(run, umask, skip={run / "params.yaml"}) == {}


# ---------------------------------------------------------------------------------------------
# Temporary paths: named by their writer, removed once it is gone, ignored by git

# A writer in another process: enters staged_dir(target), writes a file into it, says where,
# then waits to be killed.
WRITER = """
import sys, time
from textclf.core.outputs import staged_dir, write_text
with staged_dir(sys.argv[1]) as tmp:
    write_text(tmp / "model.safetensors", "half of it")
    print(tmp, flush=True)
    time.sleep(600)
"""


def start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    """A process writing `target`, stopped half way; and its temporary directory."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            text=True)
    return proc, Path(proc.stdout.readline().strip())


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()


def test_a_killed_writers_directory_is_removed_by_the_next_write_a_live_ones_kept(tmp_path):
    target = tmp_path / "export"
    live, live_tmp = start_writer(target)
    killed, killed_tmp = start_writer(target)
    kill(killed)
    try:
        assert killed_tmp.is_dir() and live_tmp.is_dir()
        assert killed_tmp.name.startswith(".export.") and live_tmp.name.endswith(".textclf-tmp")
        with staged_dir(target) as tmp:
            write_text(tmp / "README.md", "card")
        assert not killed_tmp.exists()  # its writer is gone
        assert (live_tmp / "model.safetensors").is_file()  # its writer still runs
    finally:
        kill(live)
    write_text(tmp_path / "export.json", "{}")  # another target's write leaves it alone
    assert live_tmp.exists()
    with staged_dir(target):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.json"]


def test_a_killed_writers_file_is_removed_by_the_next_write(tmp_path):
    """What SIGKILL between write and rename leaves beside metrics/eval.json: the file, named by
    temp_path in the writer's process; other hosts' (a shared disk) are never touched."""
    target = tmp_path / "metrics" / "eval.json"
    target.parent.mkdir()
    code = ("import sys; from pathlib import Path; from textclf.core.outputs import temp_path; "
            "p = temp_path(Path(sys.argv[1])); p.write_text('{'); print(p)")
    made = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True,
                          text=True, check=True)
    leftover = Path(made.stdout.strip())
    other_host = target.with_name(leftover.name.replace(outputs.HOST, "otherhost"))
    other_host.write_text("{")
    assert leftover.is_file() and leftover.parent == target.parent
    write_text(target, "{}\n")
    assert not leftover.exists() and other_host.exists()
    assert target.read_text() == "{}\n"


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_dir(tmp_path / "models") as tmp:
            write_text(tmp / "head.safetensors", "x")
            raise RuntimeError("training failed")
    with pytest.raises(TypeError):
        write_bytes(tmp_path / "roc.png", "not bytes")
    assert list(tmp_path.iterdir()) == []


def test_git_ignores_every_temporary_path_and_nothing_a_user_keeps(tmp_path):
    """The temporary paths the pipelines' outputs get (as temp_path names them), in a git
    repository with the project's .gitignore files: only the user's files show."""
    for name in (".gitignore", "compare/.gitignore"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((REPO / name).read_text())
    targets = ["export", "models", "data/prepared", "outputs/evaluate", "metrics/eval.json",
               "metrics/plots/roc.png", "metrics/train_log/plots/metrics/train/loss.tsv",
               "compare/results/gpt2_lora/train.json", "compare/table/compare.json"]
    for target in targets:
        path = temp_path(tmp_path / target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if "." not in target else path.write_text("x")
        if path.is_dir():
            (path / "config.json").write_text("{}")
    kept = [".env", ".models.yaml", "notes.tmp", ".draft.tmp", "metrics/.eval.json.bak",
            "textclf-tmp", "compare/.textclf-tmp.md"]
    for name in kept:
        (tmp_path / name).write_text("mine")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    shown = {line[3:] for line in status.splitlines()}
    assert shown == {".gitignore", "compare/.gitignore", *kept}


@pytest.mark.slow
def test_export_killed_mid_write_leaves_what_git_ignores_and_its_next_run_removes(
        tiny_dirs, data_dir, tmp_path):
    """SIGKILL of the export stage while its directory is being built: git shows nothing of
    it, and the next run of the stage removes it."""
    params = tiny.tiny_params(tiny_dirs["gpt2"], data_dir, train={"epochs": 1})
    run = tiny.run_stages(tmp_path / "run", params, in_process=True)
    proc = subprocess.Popen(tiny.stage_command("export", run / "params.yaml", run),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=tiny.ENV)
    leftovers, deadline = [], time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # until it holds a file
        leftovers = list(run.glob(".export.*"))
        if leftovers and any(p.is_file() for p in leftovers[0].iterdir()):
            break
        time.sleep(0.005)
    assert leftovers and proc.poll() is None, "the export ended before it could be killed"
    kill(proc)
    assert leftovers[0].is_dir() and any(leftovers[0].iterdir())
    assert not (run / "export").exists()

    (run / ".gitignore").write_text((REPO / ".gitignore").read_text())
    subprocess.run(["git", "init", "-q"], cwd=run, check=True)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=run,
                            capture_output=True, text=True, check=True).stdout
    assert "export" not in status and "textclf-tmp" not in status, status

    tiny.run_stages(run, run / "params.yaml", stages=("export",))
    assert (run / "export/README.md").is_file()
    assert list(run.glob(".export.*")) == []
