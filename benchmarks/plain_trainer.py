"""The plain side of the benchmark: what a user would otherwise write, on the same case.

`AutoModelForSequenceClassification` with the same parameters frozen (or peft's `get_peft_model`
with the same LoRA config), `transformers.Trainer` with default `TrainingArguments` apart from the
batch size, `max_steps` and quiet/no-save options, `DataCollatorWithPadding`, and
`Trainer.predict` for evaluation (at the same batch size as ours).

A whole training run (train_run) is `trainer.train()` for `num_train_epochs` (no max_steps) with
`eval_strategy="epoch"` on the same validation texts and an accuracy `compute_metrics`: what a
user sets up to pick an epoch, as our loop validates each epoch. No checkpoints are saved
(`save_strategy="no"`, so no `load_best_model_at_end`): our loop keeps its best epoch's weights in
memory, and writing 3 checkpoints would only slow the plain side down. A whole evaluation
(eval_run) is one `Trainer.predict` over the test split, without a warm-up batch. Zero-shot
scoring has no Trainer recipe (`Trainer.predict` on a causal LM would gather (texts, tokens,
vocabulary) logits), so its plain side is the usual loop: `AutoModelForCausalLM`,
`DataCollatorWithPadding`, `torch.no_grad()`, and the answer words' logits at the last real
token. The accuracy-parity program (parity.py) reuses the model, rows
and tokenizer built here for its Trainer side.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from cases import (
    LAST_BLOCKS,
    NUM_LABELS,
    PROBABILITIES,
    TRAINING_METHODS,
    WHOLE_RUNS,
    Case,
    Settings,
)
from flops import trainable_params
from meter import CountingCollator, Meter, measured_figures, reset_peak_memory

from textclf.core.families import Family, checked_config_and_family
from textclf.core.tokenization import InputFormat, TokenizedSplit
from textclf.modeling.classifier import blocks_of, lora_config
from textclf.modeling.inference import softmax


def plain_tokenizer(pad_id: int):
    """A tokenizer object that DataCollatorWithPadding can pad with: only its pad id matters,
    since the texts are already token ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": pad_id}, unk_token="<pad>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                   model_input_names=["input_ids", "attention_mask"])


def plain_rows(split: TokenizedSplit, fmt: InputFormat) -> list[dict]:
    return [{"input_ids": fmt.apply(ids.tolist()), "label": int(label)}
            for ids, label in zip(split.ids, split.labels)]


def plain_classifier(case: Case, family: Family):
    """AutoModelForSequenceClassification as a user sets it up for the case's method."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(case.model_dir),
                                                               num_labels=NUM_LABELS)
    model.config.pad_token_id = case.pad_id  # GPT-2 finds each text's last token by it
    total = int(case.config.num_hidden_layers)
    if case.method in ("last2", "train_run"):  # train_run: the last-2 recipe, trained whole
        base = model.base_model
        base.requires_grad_(False)
        blocks_of(base, family)[total - LAST_BLOCKS:].requires_grad_(True)
        if family.final_norm:
            base.get_submodule(family.final_norm).requires_grad_(True)
        # the head (GPT-2 `score`; BERT `classifier` and its [CLS] `pooler`) stays trainable
        if getattr(base, "pooler", None) is not None:
            base.pooler.requires_grad_(True)
    elif case.method == "lora":
        import dataclasses

        from peft import get_peft_model

        lora = case.params.lora
        first = 0 if lora.trainable_blocks == "all" else total - lora.trainable_blocks
        # SEQ_CLS: peft also trains the classification head, as ours does
        config = dataclasses.replace(lora_config(family, lora, first, total), task_type="SEQ_CLS")
        model = get_peft_model(model, config)
    if case.head is not None:  # the head both sides score with (cases.Case.head)
        with torch.no_grad():
            model.get_submodule(family_head(family)).weight.copy_(torch.from_numpy(case.head))
    return model


def family_head(family: Family) -> str:
    """The classification head of AutoModelForSequenceClassification: GPT-2's `score` (no
    bias), BERT's `classifier` (after its [CLS] pooler)."""
    return "score" if family.causal else "classifier"


def plain_training_args(case: Case, settings: Settings, output_dir: str, bf16: bool):
    from transformers import TrainingArguments

    cpu = not torch.cuda.is_available()
    # a whole run: every epoch, validated at each epoch's end; else warm-up + timed steps
    length = ({"num_train_epochs": settings.epochs, "eval_strategy": "epoch"}
              if case.method == "train_run" else
              {"max_steps": settings.warmup + settings.steps, "eval_strategy": "no"})
    return TrainingArguments(
        bf16=bf16, use_cpu=bf16 and cpu,  # the Trainer allows bf16 on a CPU only if told so
        output_dir=output_dir,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        seed=case.params.seed,
        report_to="none", save_strategy="no", disable_tqdm=True, **length,
    )


def accuracy(prediction) -> dict:
    """The validation figure a user asks the Trainer for (compute_metrics)."""
    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def epoch_flag():
    """A Trainer callback whose `training` is true from an epoch's start to its end: the batches
    built then are training batches, those built after it (the epoch's evaluation) are not."""
    from transformers import TrainerCallback

    class EpochFlag(TrainerCallback):
        training = False

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.training = True

        def on_epoch_end(self, args, state, control, **kwargs):
            self.training = False

    return EpochFlag()


def run_plain(case: Case, settings: Settings, device: torch.device, bf16: bool = False) -> dict:
    """The recipe a user would otherwise pick, on the same case."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    _, family = checked_config_and_family(case.params)
    tok = plain_tokenizer(case.pad_id)
    memory_kind = reset_peak_memory(device)
    training = case.method in TRAINING_METHODS
    if case.method == "zero_shot":
        return _plain_zero_shot(case, settings, device, tok, bf16, memory_kind)
    model = plain_classifier(case, family)
    whole = case.method in WHOLE_RUNS
    # Training batches are those built inside an epoch (a whole run also evaluates after each)
    flag = epoch_flag()
    collator = CountingCollator(DataCollatorWithPadding(tok), lambda: flag.training)
    meter = Meter(device, collator)
    with tempfile.TemporaryDirectory() as output_dir:
        args = plain_training_args(case, settings, output_dir, bf16)
        validated = case.method == "train_run"
        trainer = Trainer(model=model, args=args, data_collator=collator, processing_class=tok,
                          train_dataset=plain_rows(case.train, case.fmt),
                          eval_dataset=plain_rows(case.val, case.fmt) if validated else None,
                          compute_metrics=accuracy if validated else None, callbacks=[flag])
        trainer.remove_callback(PrinterCallback)  # quiet: no metrics dict printed at the end
        but = " but bf16=True" if bf16 else ""
        if training:
            window = (meter.timed(training_only=True) if whole else
                      meter.training(settings.warmup, settings.steps))
            with window:
                trainer.train()
            length = (f"num_train_epochs {args.num_train_epochs:g}, eval_strategy epoch on "
                      f"{len(case.val)} texts with accuracy, save_strategy no" if validated
                      else f"max_steps {args.max_steps}")
            what = (f"transformers.Trainer.train, default TrainingArguments{but} (optim "
                    f"{getattr(args.optim, 'value', args.optim)}, lr {args.learning_rate:g}, "
                    f"max_grad_norm {args.max_grad_norm:g}, {length})")
            if case.method == "lora":
                what += ", peft get_peft_model (task_type SEQ_CLS)"
            padding = "DataCollatorWithPadding: random batches padded to their longest"
        else:
            rows = plain_rows(case.test, case.fmt)
            if not whole:
                trainer.predict(rows[:settings.eval_batch_size])  # warm-up batch
            with meter.timed():
                predicted = trainer.predict(rows)
            what = f"transformers.Trainer.predict, default TrainingArguments{but}"
            padding = "DataCollatorWithPadding: batches in data order padded to their longest"
    out = {**measured_figures(meter, device, None, memory_kind, training and not whole),
           "recipe": what,
           "dtype": plain_dtype(device, bf16), "padding": padding,
           "trainable_params": trainable_params(model) if training else 0}
    if case.head is not None:
        logits = predicted.predictions
        out[PROBABILITIES] = softmax(logits[0] if isinstance(logits, tuple) else logits)
    return out


def _plain_zero_shot(case: Case, settings: Settings, device: torch.device, tok, bf16: bool,
                     memory_kind: str) -> dict:
    """The loop a user writes: full LM logits, the answer words' at the last real token."""
    from transformers import AutoModelForCausalLM, DataCollatorWithPadding

    model = AutoModelForCausalLM.from_pretrained(str(case.model_dir)).to(device).eval()
    collator = CountingCollator(DataCollatorWithPadding(tok), lambda: False)
    meter = Meter(device, collator)
    rows = [{"input_ids": r["input_ids"]} for r in plain_rows(case.test, case.fmt)]

    def score(rows: list[dict]) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(rows, batch_size=settings.eval_batch_size,
                                             collate_fn=collator)
        out = []
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = model(**batch).logits
                last = batch["attention_mask"].sum(dim=1) - 1
                index = torch.arange(logits.size(0), device=device)
                out.append(logits[index, last][:, case.answer_ids].float().cpu())
        return torch.cat(out)

    score(rows[:settings.eval_batch_size])  # warm-up batch
    with meter.timed():
        score(rows)
    return {**measured_figures(meter, device, None, memory_kind, False),
            "recipe": "AutoModelForCausalLM, DataLoader + DataCollatorWithPadding, "
                      "torch.no_grad()" + (", torch.autocast bf16" if bf16 else "") +
                      ", answer logits at the last real token",
            "dtype": plain_dtype(device, bf16), "trainable_params": 0,
            "padding": "DataCollatorWithPadding: batches in data order padded to their longest"}


def plain_dtype(device: torch.device, bf16: bool) -> str:
    if bf16:
        return "bf16 autocast, fp32 weights"
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return "fp32 (TF32 matmuls)" if tf32 else "fp32"
