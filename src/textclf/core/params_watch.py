"""The params a stage read must still be in its params files when its outputs go into place.

DVC reads the values of a stage's params for dvc.lock after the stage's command has ended. If
params.yaml changes while the stage runs, dvc.lock records values it did not run with, and the
stages after it run on others: a mix no record shows. That is what a second `dvc exp run` in the
same workspace does: it writes its `-S` values into params.yaml, then fails ("is busy") and
leaves them there, under the first one's running stage. So a stage notes the values when it
reads them (`watch_params`, from the runner) and checks them again before each output is renamed
into place and when it ends (`check_params_unchanged`); a change stops it with one error line.

Between two stages of one run the file can change too (the second `dvc exp run` writes it
without holding DVC's repository lock): the next stage would run on the new values, and the one
before may be recorded with them. So under DVC each stage also leaves what it read in
.dvc/tmp/textclf-params/, tagged with the DVC process that runs it, and a stage starts only if
the stages of the same DVC process before it read what the files hold now. Only one process's
stages are compared: `dvc repro -s`, `--downstream`, frozen stages, queued and `--temp`
experiments (each in its own copy) and params that only later stages read are untouched.

Values are compared, not bytes: an edited comment changes nothing DVC records. A change that
is undone within SETTLE_SECONDS is no change: `dvc exp run --queue` or `--temp` started while a
stage runs stashes the workspace's changes and puts them back a moment later.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from textclf.core.errors import ParamsChangedError
from textclf.core.params import flat_params

SETTLE_SECONDS = 10.0  # how long a changed file may take to come back before the stage stops
UNREADABLE = object()  # the value of a missing or half-written file


@dataclass(frozen=True)
class Watched:
    path: str
    key: str  # the dotted key of the part the stage reads ("" = the whole file)
    raw: bytes | None
    value: Any


WATCHED: list[Watched] = []
ADVICE = ("Is another `dvc exp run` running in this workspace? Run experiments side by side "
          "with `dvc exp run --queue ...` then `dvc queue start`, or with `dvc exp run --temp ...`")


def watch_params(files: list[tuple[str, str]]) -> None:
    """Note what each (params file, dotted key) holds now: what the stage runs with. Under DVC,
    first check it against what the earlier stages of the same run read, then record it."""
    WATCHED[:] = [Watched(path, key, *_read(path, key)) for path, key in files]
    run, records = dvc_run(), records_dir()
    if run is None or records is None:
        return
    stage = os.environ["DVC_STAGE"]
    read = [[str(Path(w.path).resolve()), w.key, _as_json(w.value)] for w in WATCHED]
    for earlier in _records_of(run, records):
        if earlier["stage"] != stage:
            changed = _settled(functools.partial(_changed_since, earlier))
            if changed:
                path, keys = changed
                raise ParamsChangedError(
                    f"{path} changed after stage '{earlier['stage']}' of this run read it "
                    f"({_shown(keys)}): this stage would run on other values. " + ADVICE)
    record = records / (re.sub(r"[^\w@.-]", "_", stage) + ".json")
    tmp = record.with_name(f".{record.name}.{os.getpid()}")
    try:
        records.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"run": run, "stage": stage, "read": read}))
        os.replace(tmp, record)
    except OSError:  # unrecorded, the later stages only go unchecked against this one
        pass


def stop_watching() -> None:
    WATCHED.clear()


def check_params_unchanged() -> None:
    """Raise ParamsChangedError if a watched file holds other values than when it was watched
    (and still does SETTLE_SECONDS later)."""
    changed = _settled(changed_params)
    if changed:
        path, keys = next(iter(changed.items()))
        raise ParamsChangedError(f"{path} changed while this stage ran ({_shown(keys)}): "
                                 "dvc.lock would record values it did not run with. " + ADVICE)


def dvc_run() -> str | None:
    """The DVC process running this stage (pid and start time), or None outside DVC: the
    nearest ancestor process that is `dvc` (DVC runs each stage through a shell)."""
    if "DVC_STAGE" not in os.environ:
        return None
    import psutil

    try:
        for process in psutil.Process().parents():
            args = process.cmdline()
            if any(Path(a).name in ("dvc", "dvc.exe") for a in args[:2]) or \
                    args[1:3] == ["-m", "dvc"]:
                return f"{process.pid}-{process.create_time()}"
    except psutil.Error:
        pass
    return None


def records_dir() -> Path | None:
    """.dvc/tmp/textclf-params of the DVC project this stage runs in (from its working
    directory, the stage's wdir)."""
    here = Path.cwd()
    for directory in (here, *here.parents):
        if (directory / ".dvc").is_dir():
            return directory / ".dvc" / "tmp" / "textclf-params"
    return None


def _records_of(run: str, records: Path) -> list[dict]:
    found = []
    for path in sorted(records.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("run") == run:
            found.append(record)
    return found


def _changed_since(earlier: dict) -> tuple[str, list[str]] | None:
    """The first file (and its keys) that holds other values than an earlier stage read."""
    for path, key, value in earlier["read"]:
        now = _as_json(_read(path, key)[1])
        if now != value:
            return os.path.relpath(path), _differing_keys(value, now, key)
    return None


def _settled(find_changes):
    """What `find_changes()` finds, once it has found it for SETTLE_SECONDS (a change undone
    meanwhile is none)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        changed = find_changes()
        if not changed or time.monotonic() >= deadline:
            return changed
        time.sleep(0.25)


def changed_params() -> dict[str, list[str]]:
    """params file -> the dotted keys whose values differ from the watched ones."""
    changed: dict[str, list[str]] = {}
    for watched in WATCHED:
        raw, value = _read(watched.path, watched.key, skip_if=watched.raw)
        if raw == watched.raw or value == watched.value:
            continue
        keys = _differing_keys(watched.value, value, watched.key)
        changed.setdefault(watched.path, []).extend(keys)
    return changed


def _read(path: str, key: str, skip_if: bytes | None = None) -> tuple[bytes | None, Any]:
    """The file's bytes and the value at `key` (not parsed when the bytes are `skip_if`)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None, UNREADABLE
    if skip_if is not None and raw == skip_if:
        return raw, None
    try:
        node = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw, UNREADABLE
    for part in filter(None, key.split(".")):
        if not isinstance(node, dict) or part not in node:
            return raw, UNREADABLE
        node = node[part]
    return raw, node


def _as_json(value: Any) -> Any:
    """`value` as a JSON record holds it (YAML dates become strings), to compare with one."""
    return None if value is UNREADABLE else json.loads(json.dumps(value, default=str))


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")


def _differing_keys(before: Any, after: Any, key: str) -> list[str]:
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [key or "the whole file"]
    prefix = f"{key}." if key else ""
    old, new = flat_params(before, prefix), flat_params(after, prefix)
    keys = [k for k in dict.fromkeys([*old, *new])
            if old.get(k, UNREADABLE) != new.get(k, UNREADABLE)]
    return keys or [key or "the whole file"]  # e.g. a section emptied: no leaf differs
