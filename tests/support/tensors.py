"""Helpers shared by the unit tests: typed params for a tiny model and forward passes (the
fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from support import tiny
from textclf.core.params import Params, parse_params
from textclf.modeling.batching import Collator

REPO = Path(__file__).resolve().parents[2]
PARAMS_YAML = REPO / "params.yaml"


def run_params(model_dir: Path, data_dir: Path, **overrides) -> Params:
    """The repository's params.yaml pointed at a tiny model and fixture data, validated."""
    return parse_params(tiny.tiny_params(model_dir, data_dir, **overrides))


def batch_of(collator: Collator, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """A right-padded batch of text ids, as the training and evaluation loaders build it."""
    return collator([(i, list(x), 0) for i, x in enumerate(ids)])


@torch.no_grad()
def logits_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["input_ids"], batch["attention_mask"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
