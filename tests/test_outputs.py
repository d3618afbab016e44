"""What the stages write gets the user's umask: another user of the machine, or a container
running as another user, can read the model."""

import os
import stat
from pathlib import Path

import pytest
from support import tiny

from textclf.core.outputs import staged_dir, write_bytes, write_text

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
