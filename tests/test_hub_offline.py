"""The hub code path, offline: the defaults (`model: gpt2`, `data.source: imdb`) and every
compare configuration load their models by hub id, their datasets with `load_dataset` and GPT-2's
tokenization with tiktoken, here from a pre-populated cache (tests/support/hub_cache.py) holding
tiny random models, small datasets of the real ones' shape and GPT-2's real BPE."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support import tiny
from support.hub_cache import GPT2_BPE, NEWSGROUPS
from support.tensors import PARAMS_YAML, REPO, batch_of, logits_of

from textclf.core import paths
from textclf.core.data import load_corpus
from textclf.core.families import FAMILIES, checked_config_and_family
from textclf.core.params import deep_merge, load_params
from textclf.core.runner import read_overlay
from textclf.core.tokenization import (
    TIKTOKEN_GPT2,
    classifier_format,
    length_in_gpt2_tokens,
    load_tokenizer,
    tokenize_split,
)
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import build_classifier
from textclf.train.zero_shot import zero_shot_classifier

COMPARE = yaml.safe_load((REPO / "compare" / "params.yaml").read_text())
# Small sizes for the hub datasets of tests/support/hub_cache.py (IMDb: 28 train, 12 test texts)
SMALL = {"data": {"train_size": 20, "test_size": 8},
         "train": {"epochs": 1, "batch_size": 8, "log_every": 1},
         "eval": {"batch_size": 8, "bootstrap": 50, "errors": 3}}


@pytest.fixture()
def gpt2_vocab(offline_hub) -> dict[str, int]:
    """GPT-2's token -> id table, read from its published file (encoder.json)."""
    return json.loads((GPT2_BPE / "encoder.json").read_text())


# ---------------------------------------------------------------------------------------------
# GPT-2's real tokenization, through tiktoken

def test_gpt2_by_hub_id_is_tokenized_by_tiktoken(offline_hub, gpt2_vocab):
    _, family = checked_config_and_family(load_params(PARAMS_YAML))  # model: gpt2, the default
    tokenizer = load_tokenizer("gpt2", family)
    assert tokenizer.name == TIKTOKEN_GPT2
    assert tokenizer.single_token(" Positive") == gpt2_vocab["ĠPositive"]
    assert tokenizer.single_token(" Negative") == gpt2_vocab["ĠNegative"]
    # Each word of this sentence is one GPT-2 token (Ġ marks a leading space)
    words = ["ĠThe", "Ġfilm", "Ġwas", "Ġboring", ",", "Ġbut", "Ġthe", "Ġending", "Ġsaved",
             "Ġit", "!"]
    split = tokenize_split(tokenizer, ["The film was boring, but the ending saved it!",
                                       "Hello world"], np.array([0, 1]), 256, "left", 0)
    assert split.ids[0].tolist() == [gpt2_vocab[w] for w in words]
    assert split.ids[1].tolist() == [gpt2_vocab["ĠHello"], gpt2_vocab["Ġworld"]]
    assert split.full_lengths.tolist() == [11, 2]
    assert tokenizer.pad_id == gpt2_vocab["<|endoftext|>"] and tokenizer.n_special == 0


def test_length_bins_count_gpt2_tokens_for_other_tokenizers(offline_hub):
    bert = load_tokenizer("bert-base-uncased", FAMILIES["bert"])
    texts = ["The film was boring, but the ending saved it!", "Hello world"]
    own = tokenize_split(bert, texts, np.array([0, 1]), 64, "left", 0).full_lengths
    lengths, unit = length_in_gpt2_tokens(bert, texts, own)
    assert unit == "gpt2_tokens" and lengths.tolist() == [11, 2]


# ---------------------------------------------------------------------------------------------
# Every compare configuration: its data through prepare's calls, its model built

def compare_overlay(key: str) -> dict:
    """An entry of compare/params.yaml (dotted key), read as the stages' --overlay reads it."""
    return read_overlay(f"{REPO / 'compare' / 'params.yaml'}:{key}")


def dataset_params(key: str, **overrides):
    """params.yaml with the compare dataset `key` overlaid, as compare/dvc.yaml's prepare runs."""
    overlay = deep_merge(compare_overlay(f"datasets.{key}"), SMALL)
    return load_params(PARAMS_YAML, deep_merge(overlay, overrides))


EXPECTED_DATA = {  # model's tokenizer, class names
    "gpt2_imdb": (TIKTOKEN_GPT2, ["neg", "pos"]),
    "bert_imdb": ("bert-base-uncased", ["neg", "pos"]),
    "pythia_sst2": ("EleutherAI/pythia-70m", ["negative", "positive"]),
    "gpt2_20newsgroups": (TIKTOKEN_GPT2, NEWSGROUPS),
    "gpt2_20newsgroups_512": (TIKTOKEN_GPT2, NEWSGROUPS),
    "qwen25_imdb": ("Qwen/Qwen2.5-0.5B", ["neg", "pos"]),
    "modernbert_imdb": ("answerdotai/ModernBERT-base", ["neg", "pos"]),
}


def test_expected_data_covers_the_compare_datasets():
    assert set(EXPECTED_DATA) == set(COMPARE["datasets"])


@pytest.mark.parametrize("key", sorted(COMPARE["datasets"]))
def test_compare_dataset_prepares_from_the_hub(offline_hub, key):
    # every training text: 20 newsgroups need more than 20 for a validation split of 20
    params = dataset_params(key, data={"train_size": None})
    _, family = checked_config_and_family(params)
    tokenizer = load_tokenizer(params.model, family)
    corpus = load_corpus(params.data, params.seed)
    name, label_names = EXPECTED_DATA[key]
    assert tokenizer.name == name and corpus.label_names == label_names
    assert len(corpus.test) == SMALL["data"]["test_size"]
    for split in (corpus.train, corpus.val, corpus.test):
        tokenized = tokenize_split(tokenizer, split.texts, split.labels, params.data.max_tokens,
                                   params.data.truncation, params.data.head_tokens)
        assert len(tokenized) == len(split) and min(tokenized.lengths) > 0
        assert max(tokenized.lengths) + tokenizer.n_special <= params.data.max_tokens


@pytest.mark.parametrize("key", sorted(COMPARE["runs"]))
def test_compare_run_model_builds(offline_hub, key):
    run = COMPARE["runs"][key]
    # As compare/dvc.yaml's train: the dataset's overlay, then the run's
    overlay = deep_merge(compare_overlay(f"datasets.{run['dataset']}"),
                         compare_overlay(f"runs.{key}.params"))
    params = load_params(PARAMS_YAML, deep_merge(overlay, SMALL))
    _, family = checked_config_and_family(params)
    tokenizer = load_tokenizer(params.model, family)
    num_labels = len(EXPECTED_DATA[run["dataset"]][1])
    if params.method == "zero_shot":
        model, fmt, _ = zero_shot_classifier(params, family, tokenizer, num_labels)
    else:
        model, fmt = build_classifier(params, family, num_labels), classifier_format(tokenizer)
    ids = tokenizer.encode(["A wonderful film.", "Dull and far too long."])
    logits = logits_of(model.eval(), batch_of(Collator(fmt, tokenizer.pad_id), ids))
    assert logits.shape == (2, num_labels) and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------
# Stages in subprocesses, with the caches in their environment

def run(cwd: Path, env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


def default_params(**overrides) -> dict:
    """The repository's params.yaml (model gpt2, data imdb), sized for seconds."""
    return deep_merge(deep_merge(yaml.safe_load(PARAMS_YAML.read_text()), SMALL), overrides)


@pytest.mark.slow
def test_default_pipeline_runs_from_the_hub(offline_cache, tmp_path):
    project = tiny.dvc_project(tmp_path / "project", default_params())
    result = run(project, offline_cache.env(tiny.ENV), "dvc", "repro")
    assert result.returncode == 0, result.stdout + result.stderr
    prepared = project / paths.PREPARED
    meta = json.loads((prepared / paths.META).read_text())
    assert meta["model"] == "gpt2" and meta["tokenizer"] == TIKTOKEN_GPT2
    assert meta["label_names"] == ["neg", "pos"] and meta["length_unit"] == "gpt2_tokens"
    # 20 of IMDb's 28 training texts, 2 of them (val_fraction 0.1) held out; 8 of 12 test texts
    assert json.loads((prepared / paths.REPORT).read_text())["sizes"] == {
        "train": 18, "val": 2, "test": 8}
    assert json.loads((project / paths.METRICS / "eval.json").read_text())["n"] == 8


@pytest.mark.slow  # a fresh process or a data pass: seconds
def test_missing_tiktoken_encoding_is_one_error_line(offline_cache, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    empty = tmp_path / "tiktoken"
    empty.mkdir()
    # No network either: tiktoken's download goes to a proxy port where nothing listens
    env = {k: v for k, v in offline_cache.env(tiny.ENV).items()
           if k.lower() not in ("no_proxy", "https_proxy", "http_proxy", "all_proxy")}
    env.update(TIKTOKEN_CACHE_DIR=str(empty), HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9")
    result = run(tmp_path, env, sys.executable, str(REPO / "stages" / "prepare.py"),
                 "--params", "params.yaml")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "tiktoken's 'gpt2' encoding could not be loaded" in errors[0]
    assert "TIKTOKEN_CACHE_DIR" in errors[0]
    assert not (tmp_path / "data").exists()
