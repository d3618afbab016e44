"""What the train stage records of a run (textclf.train.records): the fingerprint its checkpoints
resume by, the trained model's description, run.json and metrics/train.json."""

from types import SimpleNamespace

import pytest
import torch
from support.tensors import run_params

from textclf.core import paths
from textclf.core.families import FAMILIES
from textclf.core.tokenization import classifier_format, load_tokenizer
from textclf.modeling.classifier import build_classifier
from textclf.modeling.model_info import TrainedModelInfo
from textclf.train.loop import TrainResult
from textclf.train.records import run_fingerprint, run_info, train_metrics, trained_model_info

COUNTS = {"trainable_params": 1200, "trainable_backbone_params": 1000, "total_params": 50000}


@pytest.fixture()
def prepared(tmp_path):
    """A prepared-data directory: the fingerprint reads the training and validation files."""
    for split in ("train", "val", "test"):
        (tmp_path / paths.SPLIT_FILE.format(split=split)).write_bytes(split.encode() * 10)
    return tmp_path


def test_the_fingerprint_follows_what_the_trained_weights_depend_on(tiny_dirs, data_dir,
                                                                   prepared):
    def fingerprint(processes: int = 1, **overrides) -> str:
        return run_fingerprint(run_params(tiny_dirs["gpt2"], data_dir, **overrides), processes,
                               prepared)

    same = fingerprint()
    assert fingerprint() == same
    # resuming with gradient checkpointing switched on (to save memory) is the same run
    assert fingerprint(train={"gradient_checkpointing": True}) == same
    assert fingerprint(train={"lr": 1e-3}) != same
    assert fingerprint(lora={"r": 4}) != same  # the whole lora section, whatever the method
    assert fingerprint(seed=1) != same
    assert fingerprint(processes=2) != same
    (prepared / paths.SPLIT_FILE.format(split="test")).write_bytes(b"other")
    assert fingerprint() == same  # the test split is not trained on
    (prepared / paths.SPLIT_FILE.format(split="val")).write_bytes(b"other")
    assert fingerprint() != same


@pytest.mark.parametrize("head", ["linear", "attention"])
def test_the_model_info_is_the_models_and_its_datas(tiny_dirs, data_dir, tmp_path, head):
    params = run_params(tiny_dirs["gpt2"], data_dir, train={"head": head})
    family = FAMILIES["gpt2"]
    tokenizer = load_tokenizer(params.model, family)
    model = build_classifier(params, family, 2)
    meta = {"label_names": ["neg", "pos"], "max_tokens": 48, "truncation": "head_tail",
            "head_tokens": 8}  # the prepared data's, whatever params say now
    info = trained_model_info(params, family, tokenizer, classifier_format(tokenizer), meta,
                              model)
    assert info == TrainedModelInfo(
        base_model=str(tiny_dirs["gpt2"]), base_revision=None,  # a local directory
        family="gpt2", method="finetune", label_names=["neg", "pos"], tokenizer=tokenizer.name,
        input_prefix=[], input_suffix=[], pad_id=tokenizer.pad_id, max_tokens=48,
        truncation="head_tail", head_tokens=8,
        attention_heads=params.train.attention_heads if head == "attention" else None,
        model_dtype="fp32")
    info.save(tmp_path)
    assert TrainedModelInfo.load(tmp_path) == info


def test_metrics_and_run_info_of_a_trained_run(tiny_dirs, data_dir):
    params = run_params(tiny_dirs["gpt2"], data_dir)
    result = TrainResult(best_val_accuracy=0.83333333, best_epoch=2, steps=12,
                         history=[{"epoch": 1, "train_loss": 0.71234567, "val_loss": 0.6,
                                   "val_accuracy": 0.5},
                                  {"epoch": 2, "train_loss": 0.4, "val_loss": 0.41234567,
                                   "val_accuracy": 0.83333333}],
                         resumed_at_step=6, train_seconds=3.14159, frozen_cache="device",
                         frozen_cache_reason="train.cache_frozen is true")
    assert train_metrics(COUNTS, result) == {"trainable_params": 1200, "total_params": 50000,
                                             "best_epoch": 2, "best_val_accuracy": 0.833333}
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=2,
                                  mixed_precision="bf16")
    run = run_info(params, accelerator, COUNTS, result, calibration=None)
    assert run["device"].startswith("cpu: ") and run["processes"] == 2
    assert {k: v for k, v in run.items() if k != "device"} == {
        "model": str(tiny_dirs["gpt2"]), "method": "finetune", "processes": 2,
        "precision": "bf16 autocast", "model_dtype": "fp32", "gradient_checkpointing": False,
        "trainable_backbone_params": 1000, "steps": 12, "train_seconds": 3.1,
        "resumed_at_step": 6, "frozen_cache": "device",
        "frozen_cache_reason": "train.cache_frozen is true",
        "epochs": [{"epoch": 1, "train_loss": 0.712346, "val_loss": 0.6, "val_accuracy": 0.5},
                   {"epoch": 2, "train_loss": 0.4, "val_loss": 0.412346,
                    "val_accuracy": 0.833333}]}


def test_metrics_and_run_info_of_a_zero_shot_run(tiny_dirs, data_dir, accelerator):
    params = run_params(tiny_dirs["gpt2"], data_dir, method="zero_shot",
                        zero_shot={"calibrate": True})
    assert train_metrics(COUNTS, None) == {"trainable_params": 1200, "total_params": 50000}
    run = run_info(params, accelerator, COUNTS, None, calibration=[0.61234567, 0.38765433])
    assert run["precision"] == "fp32" and run["processes"] == 1 and "steps" not in run
    assert run["content_free_probs"] == dict(zip(params.zero_shot.answers, [0.612346, 0.387654]))
