"""The PR report's inputs section: what each side's run read of its model and its data (the hub
commits or local content hashes the prepare stage records in metrics/inputs.json, and the compare
project in compare/inputs/<dataset>.json), flagged where the two sides differ. Read from the
rows of `dvc metrics diff`; standard library only.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath

from textclf.cli.pr_query import Row
from textclf.core import paths
from textclf.core.provenance import Provenance

INPUTS = ("model", "data")  # the records of an inputs file, in the order shown


def is_inputs_file(path: str) -> bool:
    """metrics/inputs.json, or a file under an inputs/ folder (compare/inputs/<dataset>.json)."""
    return path == paths.INPUTS.as_posix() or PurePosixPath(path).parent.name == "inputs"


def sides(rows: list[Row]) -> dict[tuple[str, str], tuple[Provenance | None, Provenance | None]]:
    """(file, input) -> what the base and the PR read (None: that side has no record). dvc
    flattens {"inputs": {"model": {"commit": ...}}} to the metric "inputs.model.commit" and
    leaves out a key that is null on both sides."""
    values: dict[tuple[str, str], dict[str, dict]] = defaultdict(lambda: {"old": {}, "new": {}})
    for row in rows:
        top, record, key = (row.name.split(".", 2) + ["", ""])[:3]
        if top == "inputs" and record in INPUTS and key:
            values[(row.file, record)]["old"][key] = row.old
            values[(row.file, record)]["new"][key] = row.new

    def read(fields: dict) -> Provenance | None:
        return Provenance.from_dict(fields) if fields.get("source") is not None else None

    return {where: (read(v["old"]), read(v["new"])) for where, v in values.items()}


def same_read(old: Provenance, new: Provenance) -> bool:
    """Whether both sides read the same bytes: the same source at the same commit or hash (the
    revision asked for may differ: a tag and the commit it names read the same)."""
    return (old.source, old.commit, old.sha256) == (new.source, new.commit, new.sha256)


def inputs_section(metric_rows: list[Row], base: str) -> str:
    """The inputs of the main pipeline on both sides, and of any other inputs file where they
    differ or one side has none; a warning naming what differs. Empty when no side records its
    inputs."""
    found = sides([r for r in metric_rows if is_inputs_file(r.file)])
    if not found:
        return ""
    main = paths.INPUTS.as_posix()
    differ = [where for where, (old, new) in found.items()
              if old is not None and new is not None and not same_read(old, new)]
    unknown = [where for where, (old, new) in found.items() if old is None or new is None]
    shown = sorted((where for where in found if where[0] == main or where in differ + unknown),
                   key=lambda where: (where[0] != main, where[0], INPUTS.index(where[1])))
    lines = ["### Inputs", "", f"| file | input | `{base}` | PR |", "|---|---|---|---|"]
    for file, record in shown:
        old, new = found[(file, record)]
        flag = " **(differs)**" if (file, record) in differ else ""
        lines.append(f"| `{file}` | {record} | {_shown(old)} | {_shown(new)}{flag} |")
    if differ:
        named = ", ".join(f"{record} (`{file}`)" for file, record in differ)
        lines += ["", "> [!WARNING]", f"> The two sides read different inputs: {named}. Their "
                  "metrics compare runs on other weights or other data, not only this change."]
    if unknown:
        lines += ["", "One side records no inputs where it says \"not recorded\" (a run made "
                  "before they were recorded, or none): whether both read the same is unknown."]
    if not differ and not unknown:
        lines += ["", "Both sides read the same model and data."]
    return "\n".join(lines)


def _shown(read: Provenance | None) -> str:
    if read is None:
        return "not recorded"
    asked = f" (revision `{read.revision}`)" if read.revision else ""
    return f"`{read.shown()}`{asked}"
