"""How an export may be loaded, and how not: the tokenizer classes of the hub models (which
rebuild parts of a tokenizer on load) keep the export exact; the BERT export, whose class is
textclf's own, loads the intended ways only and fails loudly otherwise; and nothing loads code
from a model directory that is not textclf's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import tiny
from test_export import trained_model_dir

from textclf.export.hf_export import check_export, export_model
from textclf.modeling.classifier import load_model


@pytest.fixture(scope="module")
def hub_tokenizer_dirs(tiny_dirs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub_tokenizers")
    return {family: tiny.hub_tokenizer_model_dir(family, tiny_dirs[family], root / family)
            for family in tiny.HUB_TOKENIZER_CLASS}


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    from test_export import SHORT_TEXTS

    from textclf.core.data import clean_text

    rows = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    return [clean_text(r["text"]) for r in rows] + SHORT_TEXTS


def export_run(base: Path, data_dir: Path, root: Path, family: str, method: str, texts):
    models = trained_model_dir(base, data_dir, root / "models", family, method,
                               "right" if family == "bert" else "left")
    model, info = load_model(models)
    export_model(model, info, root / "export")
    check = check_export(root / "export", model, info, texts)
    return models, root / "export", check


@pytest.mark.parametrize("family,method", [("gpt_neox", "zero_shot"), ("gpt2", "zero_shot"),
                                           ("bert", "finetune")])
def test_export_with_the_hub_tokenizer_class_passes_its_check(hub_tokenizer_dirs, data_dir,
                                                               texts, tmp_path, family, method):
    """GPTNeoXTokenizer rebuilds its post-processor on load (losing a prompt put there),
    GPT2Tokenizer its pre-tokenizer: the export's tokenizer must survive both."""
    _, _, check = export_run(hub_tokenizer_dirs[family], data_dir, tmp_path, family, method,
                             texts)
    assert check.max_diff < 1e-4
