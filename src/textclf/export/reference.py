"""The published reference a run is compared with: the compare run (compare/params.yaml) with
the same model, method and data, and how this run's params differ from it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from textclf.compare import run_params
from textclf.core.params import Params, flat_params

# Keys that define which published configuration a run reproduces; the others (seed, epochs,
# learning rate, ...) are listed as differences from it
IDENTITY_KEYS = ("model", "method", "data.source", "data.hub_config", "data.test_split",
                 "train.head")  # an attention-head run is not compared with a linear one
# Keys that only describe the export (license, language): never a difference in results
DESCRIPTIVE_PREFIXES = ("export.",)
# Sections no model depends on (the baseline stage's knobs): neither read nor compared here
OTHER_STAGES = ("baseline",)


@dataclass(frozen=True)
class Reference:
    """The compare run whose configuration this run matches, and its published figures."""

    run: str  # name in compare/params.yaml
    figures: dict[str, float]  # accuracy, precision, ...
    differences: list[tuple[str, object, object]]  # (dotted key, this run's value, the run's)


def find_reference(params: Params, compare_config: dict, base_params: Path) -> Reference | None:
    """The compare run with a published reference and the same model, method and data as
    `params` (the one differing in the fewest other params), or None."""
    ours = model_params(params)
    best = None
    for name, run in compare_config.get("runs", {}).items():
        if not run.get("reference"):
            continue
        theirs = model_params(run_params(base_params, compare_config, name))
        if any(ours.get(key) != theirs.get(key) for key in IDENTITY_KEYS):
            continue
        differences = [(key, ours.get(key), theirs.get(key))
                       for key in sorted(set(ours) | set(theirs))
                       if ours.get(key) != theirs.get(key)
                       and not key.startswith(DESCRIPTIVE_PREFIXES)]
        if best is None or len(differences) < len(best.differences):
            best = Reference(name, dict(run["reference"]), differences)
    return best


def model_params(params: Params) -> dict:
    """Every params key (dotted) and its value, but those of OTHER_STAGES."""
    def plain(value):
        return value.to_dict() if hasattr(value, "to_dict") else value

    return flat_params({f.name: plain(getattr(params, f.name)) for f in dataclasses.fields(Params)
                        if f.name not in OTHER_STAGES})
