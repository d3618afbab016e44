"""Helpers shared by the unit tests: typed params for a tiny model, forward passes, and two
module fixtures a test module opts into by importing them (one torch thread, the accelerator)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest
import torch

import tiny
from textclf.batching import Collator
from textclf.params import Params, parse_params
from textclf.training import make_accelerator

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: more threads only wait on each other, and on
    whatever else the machine runs (50x slower steps seen on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def accelerator():
    """The CPU accelerator the stages build here (fp32, one process)."""
    return make_accelerator("no")
