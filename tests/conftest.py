"""Shared fixtures: tiny random models (GPT-2, BERT, GPT-NeoX) with real tokenizers saved as
local directories, and fixture review data, built once per test session."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run fastest on one thread, and stage subprocesses inherit this: on a small shared
# machine, several threads per process mostly wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import tiny  # noqa: E402

FAMILIES = ("gpt2", "bert", "gpt_neox")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: tiny.tiny_model_dir(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tiny.fixture_data_dir(tmp_path_factory.mktemp("fixture_data"))
