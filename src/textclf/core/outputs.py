"""Writing outputs so that a failed run never leaves a half-written or mixed result behind.

Files are written to a temporary name and renamed; a directory is built beside its target and
swapped in at the end. Until then the previous successful run's outputs stay as they were.

Temporary paths sit beside their target as `.<target>.<host>-<pid>-<random>.textclf-tmp`
(.gitignore ignores `.*.textclf-tmp`). A writer killed before its rename (SIGKILL, a power cut)
leaves its own behind; the next write of the same target removes those whose writer is gone
(this host, process no longer running) and never one of a live process. They are made as a plain
open() or mkdir() makes them, and what a library writes into a staged directory gets the same
modes, so outputs follow the user's umask (tempfile's and safetensors' files are owner-only: a
model nobody else on the machine could read).

Before anything is renamed into place, the params files the stage read must still hold what it
read (textclf.core.params_watch).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textclf.core.params_watch import check_params_unchanged

TEMP_SUFFIX = ".textclf-tmp"
HOST = socket.gethostname() or "localhost"


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Binary files (PNG figures), written and renamed as write_text does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = temp_path(path)
    # 0o666 minus the umask, as open() gives a new file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _rename_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data) -> None:
    """Indented JSON with a stable key order (as given), ending in a newline."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextmanager
def staged_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty directory beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    tmp = temp_path(target)
    tmp.mkdir()  # 0o777 minus the umask, as mkdir() gives a new directory
    old = temp_path(target)  # the previous output, removed once the new one is in place
    try:
        yield tmp
        _umask_modes(tmp)
        check_params_unchanged()
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def temp_path(target: Path) -> Path:
    """A new temporary name beside `target`, naming this host and process as its writer."""
    return target.with_name(f".{target.name}.{HOST}-{os.getpid()}-{secrets.token_hex(4)}"
                            f"{TEMP_SUFFIX}")


def remove_leftovers(target: Path) -> None:
    """Remove the temporary paths of `target` left by writers on this host that are gone."""
    prefix = f".{target.name}."
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        host, _, pid = name[len(prefix):-len(TEMP_SUFFIX)].rpartition("-")[0].rpartition("-")
        if host != HOST or not pid.isdigit() or _alive(int(pid)):
            continue
        path = target.parent / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _umask_modes(directory: Path) -> None:
    """Give what was written inside `directory` the modes open() and mkdir() give (0o666 and
    0o777 less the umask), as `directory` itself has them: libraries may write owner-only files
    (safetensors does)."""
    dir_mode = stat.S_IMODE(directory.stat().st_mode)
    file_mode = dir_mode & 0o666
    for root, dirs, files in os.walk(directory):
        for name, wanted in [(d, dir_mode) for d in dirs] + [(f, file_mode) for f in files]:
            path = os.path.join(root, name)
            info = os.lstat(path)
            if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) != wanted:
                os.chmod(path, wanted)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (when in doubt: yes, keep its files)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows, os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def _rename_into_place(tmp: Path, target: Path) -> None:
    check_params_unchanged()
    os.replace(tmp, target)
