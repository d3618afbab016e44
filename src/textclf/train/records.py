"""What the train stage records of a run, from the params and what ran: the fingerprint its
checkpoints resume by, the trained model's description (models/textclf.json),
outputs/train/run.json and metrics/train.json."""

from __future__ import annotations

from pathlib import Path

from textclf.core import paths
from textclf.core.families import Family
from textclf.core.params import Params
from textclf.core.provenance import Provenance
from textclf.core.tokenization import InputFormat, TextTokenizer
from textclf.modeling.device import device_name, precision_name
from textclf.modeling.model_info import TrainedModelInfo
from textclf.train.checkpoints import fingerprint
from textclf.train.loop import TrainResult


def run_fingerprint(params: Params, processes: int, prepared: Path,
                    base: Provenance | None = None) -> str:
    """What the trained weights depend on: the params that shape training, the base model read
    (`base`: its hub commit or content hash), the number of processes and the prepared training
    and validation data. Not gradient checkpointing, so a run can resume with it switched on to
    save memory."""
    train_knobs = {k: v for k, v in params.train.to_dict().items()
                   if k != "gradient_checkpointing"}
    trained_by = {"seed": params.seed, "model": params.model, "model_dtype": params.model_dtype,
                  "method": params.method, "finetune": params.finetune.to_dict(),
                  "lora": params.lora.to_dict(), "train": train_knobs}
    if base is not None:
        trained_by["base"] = base.to_dict()
    return fingerprint(trained_by, processes, files=tuple(
        prepared / paths.SPLIT_FILE.format(split=split) for split in ("train", "val")))


def trained_model_info(params: Params, family: Family, tokenizer: TextTokenizer,
                       fmt: InputFormat, meta: dict, model) -> TrainedModelInfo:
    """The description saved beside the trained weights: the base model, the method, the class
    names and the input format, that of the data it was trained on (`meta`: the prepared
    data's), and what the run read of the model and the data (meta's inputs, which the stage
    checked against the model params load)."""
    inputs = meta.get("inputs") or {}
    base = Provenance.from_dict(inputs.get("model") or {})
    data = Provenance.from_dict(inputs.get("data") or {})
    return TrainedModelInfo(
        base_model=params.model, base_revision=base.commit, base_sha256=base.sha256,
        data_source=data.source, data_commit=data.commit, data_sha256=data.sha256,
        family=family.name, method=params.method, label_names=meta["label_names"],
        tokenizer=tokenizer.name, input_prefix=list(fmt.prefix), input_suffix=list(fmt.suffix),
        pad_id=tokenizer.pad_id, max_tokens=meta["max_tokens"], truncation=meta["truncation"],
        head_tokens=meta["head_tokens"],
        attention_heads=None if model.attention is None else model.attention.num_heads,
        model_dtype=params.model_dtype)


def train_metrics(counts: dict[str, int], result: TrainResult | None) -> dict:
    """metrics/train.json: parameter counts (`counts`: parameter_counts of the model), and the
    best epoch and its validation accuracy (`result` None: zero-shot, nothing trained)."""
    metrics = {"trainable_params": counts["trainable_params"],
               "total_params": counts["total_params"]}
    if result is not None:
        metrics.update(best_epoch=result.best_epoch,
                       best_val_accuracy=round(result.best_val_accuracy, 6))
    return metrics


def run_info(params: Params, accelerator, counts: dict[str, int], result: TrainResult | None,
             calibration: list[float] | None) -> dict:
    """outputs/train/run.json: what ran and where; for a trained model its steps, seconds, the
    frozen-block cache's place and the per-epoch history; for a calibrated zero-shot model the
    content-free probabilities of the answers (`calibration`)."""
    run = {"model": params.model, "method": params.method,
           "device": device_name(accelerator.device), "processes": accelerator.num_processes,
           "precision": precision_name(accelerator),
           "model_dtype": params.model_dtype,  # of the frozen weights
           "gradient_checkpointing": params.train.gradient_checkpointing,
           "trainable_backbone_params": counts["trainable_backbone_params"]}
    if result is not None:
        run.update(steps=result.steps, train_seconds=round(result.train_seconds, 1),
                   resumed_at_step=result.resumed_at_step, frozen_cache=result.frozen_cache,
                   frozen_cache_reason=result.frozen_cache_reason,
                   epochs=[{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
                           for row in result.history])
    if calibration is not None:
        run["content_free_probs"] = dict(zip(params.zero_shot.answers,
                                             [round(p, 6) for p in calibration]))
    return run
