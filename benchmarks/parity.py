"""Accuracy parity: does the fast engine learn as well as the plain recipe?

On real labelled reviews and a real pretrained model, the same recipe (the last 2 blocks, the
final norm if any and a head trained; the learning rate, schedule, weight decay, epochs and batch
size of params.yaml) is trained three ways, and each is scored on the same held-out texts:

- fast: `textclf.train.loop.train_classifier` with length-grouped batches and the frozen-block
  cache, and the params file's `train.mixed_precision` (by default bf16 autocast where the GPU
  or CPU computes bf16 natively, fp32 otherwise): the engine's speed-ups, all on;
- no_speedups: the same loop with them off: shuffled batches, every step through the whole
  model, fp32;
- trainer: `transformers.Trainer` on `AutoModelForSequenceClassification` (the model's own
  pooling and head: [CLS] and the pooler for BERT, the last token for GPT-2) with the same blocks
  trainable, `DataCollatorWithPadding` and the same learning rate, warmup, weight decay, epochs
  and batch size.

Our two sides keep the epoch with the best accuracy on a validation split, as the train stage
does; the Trainer keeps its last epoch. The figure compared is accuracy on a separate test split.
A difference is "within noise" when it is at most twice its paired standard error (the standard
deviation of the per-text difference in correctness over sqrt(n)): the same texts are scored by
every side, so only the texts they disagree on count.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textclf.core.data import clean_text, read_table, stratified_sample
from textclf.core.families import checked_config_and_family
from textclf.core.params import Params, load_params
from textclf.core.tokenization import (
    TokenizedSplit,
    classifier_format,
    load_tokenizer,
    tokenize_split,
)
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator, pad_multiple_for
from textclf.modeling.classifier import build_classifier
from textclf.modeling.device import device_name
from textclf.modeling.inference import predict_logits
from textclf.train.loop import Recipe, train_classifier

SIDES = ("fast", "no_speedups", "trainer")
TRAINABLE_BLOCKS = 2  # the reference recipe: the last 2 blocks (+ final norm) and a head
# train.schedule -> the Trainer's lr_scheduler_type (ours always warms up first)
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclasses.dataclass
class Splits:
    train: TokenizedSplit
    val: TokenizedSplit
    test: TokenizedSplit


def read_labelled(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts and integer labels of a data file with text and label columns (.jsonl, .jsonl.gz,
    .csv or .parquet)."""
    rows, _ = read_table(path)
    return [r["text"] for r in rows], np.asarray([int(r["label"]) for r in rows], dtype=np.int64)


def make_splits(texts: list[str], labels: np.ndarray, sizes: tuple[int, int, int],
                params: Params, tokenizer) -> Splits:
    """Seeded, stratified, disjoint train / val / test samples, tokenized as prepare does."""
    rng = np.random.default_rng(params.seed)
    picked = stratified_sample(labels, sum(sizes), rng)
    picked = picked[rng.permutation(len(picked))]
    out, start = [], 0
    for size in sizes:
        index = np.sort(picked[start:start + size])
        start += size
        out.append(tokenize_split(tokenizer, [clean_text(texts[i]) for i in index],
                                  labels[index], params.data.max_tokens, params.data.truncation,
                                  params.data.head_tokens))
    return Splits(*out)


def side_params(params_path: Path, model: str, side: str, overrides: dict) -> Params:
    fast = side == "fast"
    return load_params(params_path, overrides={
        **overrides, "model": model, "method": "finetune",
        "finetune": {"trainable_blocks": TRAINABLE_BLOCKS},
        # fast keeps the params file's train.mixed_precision (auto: bf16 on a GPU that supports
        # it or a CPU with native bf16; bf16: on any CPU); no_speedups is always fp32
        "train": {**overrides.get("train", {}), "cache_frozen": fast, "group_by_length": fast,
                  **({} if fast else {"mixed_precision": "fp32"})},
    })


def run_engine(params: Params, splits: Splits, pad_id: int, fmt, num_labels: int,
               log: Callable[[str], None], int8: bool = False) -> tuple[np.ndarray, dict]:
    """Our loop on `params`; the test split's logits and what the run did (`int8`: with the
    trained model's int8 predict against full precision, quantized.py)."""
    _, family = checked_config_and_family(params)
    accelerator = make_accelerator(params.train.mixed_precision)
    torch.manual_seed(params.seed)
    model = build_classifier(params, family, num_labels)
    collator = Collator(fmt, pad_id, pad_multiple_for(accelerator.device))
    started = time.perf_counter()
    result = train_classifier(model, splits.train, splits.val, collator,
                              Recipe.from_params(params), accelerator, checkpointer=None,
                              live=None, log=log)
    seconds = time.perf_counter() - started
    logits = predict_logits(model, splits.test, collator, params.eval.batch_size, accelerator)
    t = params.train
    extra = {}
    if int8:
        from quantized import int8_against_full_precision

        extra = int8_against_full_precision(model, family, splits.test, collator,
                                            params.eval.batch_size, t.mixed_precision)
    return logits, {**extra, "train_seconds": round(seconds, 1), "best_epoch": result.best_epoch,
                    "best_val_accuracy": round(result.best_val_accuracy, 6),
                    "recipe": (f"textclf.train.loop.train_classifier, group_by_length "
                               f"{str(t.group_by_length).lower()}, cache_frozen "
                               f"{str(t.cache_frozen).lower()}, "
                               + ("bf16 autocast" if accelerator.mixed_precision == "bf16"
                                  else "fp32"))}


def run_trainer(params: Params, splits: Splits, pad_id: int, fmt, num_labels: int
                ) -> tuple[np.ndarray, dict]:
    """transformers.Trainer on AutoModelForSequenceClassification, the same blocks trainable."""
    from cases import Case
    from plain_trainer import plain_classifier, plain_rows, plain_tokenizer
    from transformers import (
        AutoConfig,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    _, family = checked_config_and_family(params)
    case = Case(model=family.name, method="last2", model_dir=Path(params.model),
                config=AutoConfig.from_pretrained(params.model), params=params,
                train=splits.train, val=splits.val, test=splits.test, fmt=fmt, pad_id=pad_id,
                answer_ids=[])
    torch.manual_seed(params.seed)
    model = plain_classifier(case, family)
    if num_labels != model.config.num_labels:
        raise ValueError(f"the parity check is binary; the data has {num_labels} classes")
    tok = plain_tokenizer(pad_id)
    t = params.train
    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=params.eval.batch_size, num_train_epochs=t.epochs,
            learning_rate=params.learning_rate, weight_decay=t.weight_decay,
            warmup_steps=t.warmup_ratio,  # a float below 1 is a share of the steps
            lr_scheduler_type=SCHEDULES[t.schedule],
            max_grad_norm=t.grad_clip, seed=params.seed, report_to="none", save_strategy="no",
            eval_strategy="no", disable_tqdm=True,
            dataloader_pin_memory=torch.cuda.is_available())  # pinning means nothing on a CPU
        trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok),
                          processing_class=tok, train_dataset=plain_rows(splits.train, fmt))
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        logits = trainer.predict(plain_rows(splits.test, fmt)).predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    return np.asarray(logits, dtype=np.float32), {
        "train_seconds": round(seconds, 1), "best_epoch": t.epochs,
        "recipe": "transformers.Trainer, AutoModelForSequenceClassification, "
                  "DataCollatorWithPadding, the last epoch"}


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Accuracy difference a - b on the same texts, its paired standard error, and whether it is
    within noise (at most twice that)."""
    d = correct_a.astype(float) - correct_b.astype(float)
    diff = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    return {"difference": round(diff, 6), "standard_error": round(se, 6),
            "disagreements": int((d != 0).sum()), "within_noise": abs(diff) <= 2 * se}


def run_parity(params_path: Path, model: str, data: Path, sizes: tuple[int, int, int],
               overrides: dict, sides=SIDES, log: Callable[[str], None] = print,
               int8: bool = False) -> dict[str, Any]:
    """Every side on the same splits; returns parity.json's flat mapping. `int8`: the fast
    side's model also scores with int8 products (quantized.py)."""
    from inputs import describe_path
    from meter import fresh_globals, global_snapshot

    params = side_params(params_path, model, "fast", overrides)
    _, family = checked_config_and_family(params)
    tokenizer = load_tokenizer(model, family)
    texts, labels = read_labelled(data)
    if sum(sizes) > len(texts):
        raise ValueError(f"{data} holds {len(texts)} texts, fewer than the {sum(sizes)} asked "
                         f"for (train + val + test = {' + '.join(map(str, sizes))})")
    splits = make_splits(texts, labels, sizes, params, tokenizer)
    num_labels = int(labels.max()) + 1
    fmt = classifier_format(tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict[str, Any] = {
        "device": device_name(device), "model": describe_path(model), "data": describe_path(data),
        "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
        "max_tokens": params.data.max_tokens, "epochs": params.train.epochs,
        "batch_size": params.train.batch_size, "lr": params.learning_rate,
    }
    correct = {}
    snapshot = global_snapshot()
    for side in sides:
        log(f"{side}: training on {len(splits.train)} texts ...")
        p = side_params(params_path, model, side, overrides)
        with fresh_globals(snapshot):
            if side == "trainer":
                logits, info = run_trainer(p, splits, tokenizer.pad_id, fmt, num_labels)
            else:
                logits, info = run_engine(p, splits, tokenizer.pad_id, fmt, num_labels,
                                          lambda *a, **k: None, int8 and side == "fast")
        correct[side] = logits.argmax(axis=1) == splits.test.labels
        accuracy = float(correct[side].mean())
        out.update({f"{side}.test_accuracy": round(accuracy, 6),
                    **{(k if k.startswith("int8.") else f"{side}.{k}"): v
                       for k, v in info.items()}})
        log(f"{side}: test accuracy {accuracy:.4f} in {info['train_seconds']} s of training")
    for side in sides:
        if side != "fast" and "fast" in correct:
            out.update({f"fast_vs_{side}.{k}": v for k, v in
                        paired_difference(correct["fast"], correct[side]).items()})
    return out


def format_table(results: dict, sides=SIDES) -> str:
    lines = [f"device: {results['device']}; model {results['model']}",
             f"{results['train']} train / {results['val']} val / {results['test']} test texts "
             f"of {results['data']}; max_tokens {results['max_tokens']}, {results['epochs']} "
             f"epochs, batch {results['batch_size']}, lr {results['lr']:g}", "",
             f"{'side':<13} {'test acc':>9} {'train s':>8}  recipe"]
    for side in sides:
        if f"{side}.test_accuracy" in results:
            lines.append(f"{side:<13} {results[f'{side}.test_accuracy']:>9.4f} "
                         f"{results[f'{side}.train_seconds']:>8.1f}  {results[f'{side}.recipe']}")
    lines.append("")
    for side in sides:
        key = f"fast_vs_{side}"
        if f"{key}.difference" in results:
            lines.append(f"fast - {side}: {100 * results[f'{key}.difference']:+.2f} points, "
                         f"paired standard error {100 * results[f'{key}.standard_error']:.2f} "
                         f"({results[f'{key}.disagreements']} texts disagree): "
                         + verdict(results[f"{key}.difference"], results[f"{key}.within_noise"]))
    from quantized import format_int8

    return "\n".join(lines + format_int8(results))


def verdict(difference: float, within_noise: bool) -> str:
    if within_noise:
        return "within noise"
    return "fast is better, beyond noise" if difference > 0 else "fast is WORSE, beyond noise"
