"""The attention head's export, for every family: textclf's own class
(textclf.export.hf_model), which stock transformers refuses, that pipeline() loads after
`import textclf.export` with the trained model's probabilities; and one tiny 20-class run (the
20 Newsgroups reference's setting) through prepare, train, evaluate, export and predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny
from support.tensors import run_params

import textclf.export  # noqa: F401  registers textclf's exported classes
from textclf.cli.predict import main
from textclf.core.families import FAMILIES
from textclf.core.tokenization import classifier_format, load_tokenizer
from textclf.export.hf_export import check_export, export_model
from textclf.export.hf_model import AUTO_MAP, MODEL_TYPE, MODULE
from textclf.modeling.classifier import build_classifier, load_model, save_model
from textclf.modeling.model_info import TrainedModelInfo
from textclf.predictor import load_predictor

TEXTS = ["Great film.", "Dull, dull, dull.", "The acting is superb and the story kept me hooked "
         "until the very last scene, but the ending was far too long for what it is."]
LABELS = ["a", "b", "c"]


def attention_export(base: Path, data_dir: Path, out: Path, family: str, method: str):
    """models/ of an attention-head run (weights moved off their start at random) and its export."""
    params = run_params(base, data_dir, method=method, data={"max_tokens": 16},
                        train={"head": "attention", "attention_heads": 2})
    tokenizer = load_tokenizer(params.model, FAMILIES[family])
    torch.manual_seed(0)
    model = build_classifier(params, FAMILIES[family], len(LABELS))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    fmt = classifier_format(tokenizer)
    info = TrainedModelInfo(base_model=params.model, base_revision=None, family=family,
                            method=method, label_names=LABELS, tokenizer=tokenizer.name,
                            input_prefix=list(fmt.prefix), input_suffix=list(fmt.suffix),
                            pad_id=tokenizer.pad_id, max_tokens=16, truncation="left",
                            head_tokens=4, attention_heads=2)
    save_model(model, out / "models", info)
    loaded, info = load_model(out / "models")
    notes = export_model(loaded, info, out / "export")
    return out / "models", out / "export", notes, check_export(out / "export", loaded, info, TEXTS)


def pipeline_probabilities(export_dir: Path, texts: list[str]) -> np.ndarray:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(export_dir), truncation=True,
                        top_k=None, device="cpu")
    names = [classify.model.config.id2label[i] for i in range(classify.model.config.num_labels)]
    rows = classify(texts, batch_size=2)
    return np.array([[{r["label"]: r["score"] for r in row}[n] for n in names] for row in rows])


@pytest.mark.parametrize("family, method", [("gpt2", "finetune"), ("bert", "finetune"),
                                            ("gpt_neox", "lora")])
def test_attention_export_is_our_class_with_evaluate_probabilities(tiny_dirs, data_dir, tmp_path,
                                                                   family, method):
    models, export_dir, notes, check = attention_export(tiny_dirs[family], data_dir, tmp_path,
                                                        family, method)
    config = json.loads((export_dir / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE and config["auto_map"] == AUTO_MAP
    assert config["attention_heads"] == 2 and config["base_config"]["model_type"] == family
    assert notes.architecture == "TextclfForSequenceClassification" and notes.remote_code
    assert notes.bias_folded_into is None and (export_dir / f"{MODULE}.py").is_file()
    assert check.max_diff < 1e-4
    evaluate = load_predictor(models, "cpu", "fp32").probabilities(TEXTS, batch_size=8)
    np.testing.assert_allclose(pipeline_probabilities(export_dir, TEXTS), evaluate, rtol=0,
                               atol=1e-4)


# A user's process without textclf: stock transformers must refuse the export, and
# trust_remote_code must load it from the copied modelling file (hf_model.py)
STOCK_LOAD = """
import sys
from transformers import AutoModelForSequenceClassification
try:
    AutoModelForSequenceClassification.from_pretrained(sys.argv[1])
except Exception as e:
    print("refused:", type(e).__name__)
    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True)
    print("remote:", type(model).__name__)
else:
    print("loaded")
"""


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "bert", "gpt_neox"])
def test_attention_export_needs_textclf_or_remote_code(tiny_dirs, data_dir, tmp_path, family):
    _, export_dir, _, _ = attention_export(tiny_dirs[family], data_dir, tmp_path, family,
                                           "finetune")
    env = {**tiny.ENV, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", STOCK_LOAD, str(export_dir)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout
    assert "remote: TextclfForSequenceClassification" in result.stdout


def twenty_class_data(directory: Path) -> Path:
    """The fixture reviews relabelled into 20 classes: 4 training texts and 1 test text each."""
    texts = [r["text"] for r in tiny.fixture_reviews()]
    directory.mkdir(parents=True, exist_ok=True)
    for split, per_class, offset in (("train", 4, 0), ("test", 1, 80)):
        rows = [{"text": f"{texts[(offset + label * per_class + i) % len(texts)]} ({split} {i})",
                 "label": label} for label in range(20) for i in range(per_class)]
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


@pytest.mark.slow
def test_twenty_classes_with_the_attention_head_through_every_stage(tiny_dirs, tmp_path, capsys):
    """prepare, train, evaluate and export in this process, head attention with the reference's
    2 heads and dropout 0.2; the export's pipeline and `textclf predict` on models/ and on the
    export give evaluate's probabilities."""
    data = twenty_class_data(tmp_path / "data")
    params = tiny.tiny_params(tiny_dirs["gpt2"], data, data={"max_tokens": 32},
                              train={"epochs": 1, "mixed_precision": "fp32", "head": "attention",
                                     "attention_heads": 2, "attention_dropout": 0.2})
    run = tiny.run_stages(tmp_path / "run", params,
                          stages=("prepare", "train", "evaluate", "export"), in_process=True)
    info = json.loads((run / "models/textclf.json").read_text())
    assert info["attention_heads"] == 2 and len(info["label_names"]) == 20
    rows = [json.loads(line) for line in (run / "data/prepared/test_texts.jsonl")
            .read_text().splitlines()]
    predictions = [json.loads(line) for line in (run / "outputs/evaluate/predictions.jsonl")
                   .read_text().splitlines()]
    texts = [r["text"] for r in rows]
    evaluate = np.array([p["probs"] for p in predictions])
    assert evaluate.shape == (20, 20)
    np.testing.assert_allclose(pipeline_probabilities(run / "export", texts), evaluate, rtol=0,
                               atol=1e-4)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    capsys.readouterr()
    for source in (run / "models", run / "export"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model-dir", str(source), "--file", str(tmp_path / "texts.txt"),
                  "--batch-size", "8", "--device", "cpu", "--mixed-precision", "fp32"])
        assert exit_info.value.code == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        np.testing.assert_allclose([list(r["probs"].values()) for r in records], evaluate,
                                   rtol=0, atol=1e-4)
