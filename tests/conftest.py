"""Shared fixtures: tiny random models of every supported family with tokenizers of their hub
models' classes, saved as local directories, and fixture review data, built once per test
session."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support/
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))  # speed.py, parity.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run fastest on one thread, and stage subprocesses inherit this: on a small shared
# machine, several threads per process mostly wait on each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from support import tiny  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")
    parser.addoption("--native-bf16", choices=("yes", "no"),
                     help="force the hardware's bf16 answer (TEXTCLF_NATIVE_BF16) in the tests "
                          "and the stages they run: yes takes the branches of a CPU with native "
                          "bf16 or a recent GPU (auto = bf16), no those of one without")


def pytest_configure(config):
    # before the workers and the stage subprocesses start: they inherit it
    forced = config.getoption("--native-bf16")
    if forced:
        os.environ["TEXTCLF_NATIVE_BF16"] = "1" if forced == "yes" else "0"


def pytest_report_header(config):
    from textclf.modeling.device import NATIVE_BF16_ENV, native_bf16_cpu

    how = (f"forced by {NATIVE_BF16_ENV}={os.environ[NATIVE_BF16_ENV]}"
           if os.environ.get(NATIVE_BF16_ENV) else "probed")
    return (f"native bf16: {'yes' if native_bf16_cpu() else 'no'} ({how}): "
            f"mixed_precision auto is {'bf16' if native_bf16_cpu() else 'fp32'} on the CPU")


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        no_gpu = pytest.mark.skip(reason="gpu: needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(no_gpu)
    if config.getoption("--runslow"):
        # Files with slow tests first: the workers (one file at a time, --dist loadfile) start
        # the minutes-long ones early and fill the end with quick files, instead of one worker
        # finishing a long file alone while the other has nothing left to do.
        slow_files = {item.path for item in items if "slow" in item.keywords}
        items.sort(key=lambda item: item.path not in slow_files)  # stable: files stay together
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: more threads only wait on each other, and on
    whatever else the machine runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def accelerator():
    """The CPU accelerator the stages build here (fp32, one process)."""
    from textclf.modeling.accelerator import make_accelerator

    return make_accelerator("fp32")


class TinyModelDirs(dict):
    """family -> its tiny model directory, built on first use (a test session that touches
    only GPT-2 builds only GPT-2)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        from transformers.utils import logging as hf_logging

        # built inside whichever test asks first: its progress bar must not reach that test's
        # captured stderr
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self[family] = tiny.tiny_model_dir(family, self.root / family)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
        return self[family]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models of every family in textclf.core.families.FAMILIES."""
    return TinyModelDirs(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tiny.fixture_data_dir(tmp_path_factory.mktemp("fixture_data"))


@pytest.fixture(scope="session")
def offline_cache(tmp_path_factory, tiny_dirs):
    """A Hugging Face cache and a tiktoken cache with tiny models and small datasets under the
    hub ids of the defaults and the compare configurations (tests/support/hub_cache.py). Skips when
    GPT-2's BPE files (tiktoken's gpt2 encoding) are not beside the repository."""
    from support import hub_cache

    if not hub_cache.GPT2_BPE.is_dir():
        pytest.skip(f"GPT-2's BPE files are not at {hub_cache.GPT2_BPE}")
    return hub_cache.build(tmp_path_factory.mktemp("offline_cache"), tiny_dirs)


@pytest.fixture()
def offline_hub(offline_cache, monkeypatch):
    """The libraries in this test's process read `offline_cache` (hub ids resolve offline)."""
    from support import hub_cache

    yield from hub_cache.use_offline_cache(offline_cache, monkeypatch)
