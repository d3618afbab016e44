"""Train: build the model for (model, method), train it, keep the best epoch on validation.

    python stages/train.py                                  # what `dvc repro train` runs
    dvc exp run -S train.processes=2                        # data-parallel: 2 GPUs or CPU processes

Reads params: seed, model, model_revision, model_dtype, method, data.max_tokens/truncation/
head_tokens (checked against the prepared data, as the model's commit or content hash is),
zero_shot, finetune, lora, train, eval.batch_size.
Writes: models/ (only what was trained: head, trained blocks or LoRA adapter, and textclf.json to
rebuild it on the base model), metrics/train.json (parameter counts, best epoch and validation
accuracy), metrics/train_log/ (dvclive: loss per step, validation accuracy per epoch; and
loss.png, the loss as an image that `dvc plots show` shows offline) and
outputs/train/run.json (steps, seconds, device, precision, where the frozen-block cache was kept
and why, per-epoch history).
Resumes from checkpoints/last.pt when an earlier run with the same params was interrupted.
"""

import sys
from pathlib import Path

import this_checkout  # noqa: F401  (first: this checkout's src/ on the import path)
from accelerate.utils import set_seed

from textclf.core import paths
from textclf.core.errors import ParamsError
from textclf.core.families import checked_config_and_family
from textclf.core.outputs import staged_dir, write_json
from textclf.core.prepared_data import (
    load_prepared,
    model_input_problems,
    prepared_format_problems,
)
from textclf.core.provenance import model_provenance
from textclf.core.runner import log, params_from_args, run_stage, stage_parser
from textclf.core.tokenization import classifier_format, load_tokenizer
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator, pad_multiple_for
from textclf.modeling.classifier import build_classifier, parameter_counts, save_model
from textclf.train.launch import launched, relaunch
from textclf.train.loop import Recipe, train_classifier
from textclf.train.loss_figure import write_loss_figure
from textclf.train.records import run_fingerprint, run_info, train_metrics, trained_model_info
from textclf.train.train_log import CheckpointsWithLog, empty_log, step_logger
from textclf.train.zero_shot import prompt_tokens, zero_shot_classifier


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--out", type=Path, default=paths.MODEL_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS / "train.json")
    parser.add_argument("--log-dir", type=Path, default=paths.TRAIN_LOG)
    parser.add_argument("--outputs", type=Path, default=paths.TRAIN_OUTPUTS)
    parser.add_argument("--checkpoints", type=Path, default=paths.CHECKPOINTS)
    args = parser.parse_args()
    params = params_from_args(args)
    if params.train.processes > 1 and not launched():
        log(f"train.processes is {params.train.processes}: running under accelerate launch")
        raise SystemExit(relaunch(params.train.processes, sys.argv))

    # Check params against the model and the prepared data before loading any weights
    _, family = checked_config_and_family(params)
    prepared = load_prepared(args.prepared)
    base = model_provenance(params.model, params.model_revision)
    problems = (prepared_format_problems(prepared.meta, params)
                + model_input_problems(prepared.meta, base))
    if problems:
        raise ParamsError(f"{args.prepared} does not match params.yaml ("
                          + "; ".join(problems) + "): run the prepare stage again (dvc repro)")
    labels = prepared.label_names
    tokenizer = load_tokenizer(params.model, family, params.model_revision)
    # the zero-shot prompt's tokens count against the model's input limit too
    checked_config_and_family(params, extra_tokens=prompt_tokens(params, tokenizer))
    accelerator = make_accelerator(params.train.mixed_precision)
    say = log if accelerator.is_main_process else (lambda *a, **k: None)

    # Build the model (seeded: the head's initial weights come from the RNG)
    set_seed(params.seed)
    calibration = result = None
    if params.method == "zero_shot":
        model, fmt, calibration = zero_shot_classifier(params, family, tokenizer, len(labels),
                                                       accelerator.device)
    else:
        model = build_classifier(params, family, len(labels))
        fmt = classifier_format(tokenizer)
    counts = parameter_counts(model)
    say(f"{params.model} {params.method}: {counts['trainable_params']:,} trainable of "
        f"{counts['total_params']:,} parameters "
        f"({100 * counts['trainable_params'] / counts['total_params']:.2f}%)")

    # Train (zero-shot has nothing to train); the checkpoints carry the training log, which a
    # resumed run writes back from there
    if params.method != "zero_shot":
        log_dir = args.log_dir if accelerator.is_main_process else None
        fingerprint = run_fingerprint(params, accelerator.num_processes, args.prepared, base)
        checkpointer = CheckpointsWithLog(args.checkpoints, fingerprint, log_dir,
                                          accelerator.is_main_process, say)
        collator = Collator(fmt, tokenizer.pad_id,
                            pad_multiple_for(accelerator.device, params.train.compile))
        live = step_logger(log_dir) if log_dir is not None else None
        result = train_classifier(model, prepared.train, prepared.val, collator,
                                  Recipe.from_params(params), accelerator, checkpointer, live,
                                  say)
        if live is not None:
            live.end()
        model = accelerator.unwrap_model(model, keep_torch_compile=False)

    # Save only what was trained, then the metrics; then forget the checkpoint
    if accelerator.is_main_process:
        with staged_dir(args.out) as tmp:
            save_model(model, tmp, trained_model_info(params, family, tokenizer, fmt,
                                                      prepared.meta, model))
        metrics = train_metrics(counts, result)
        run = run_info(params, accelerator, counts, result, calibration)
        if result is not None:
            checkpointer.clear()
        else:
            empty_log(args.log_dir)
        write_loss_figure(args.log_dir)
        with staged_dir(args.outputs) as tmp:
            write_json(tmp / paths.RUN_INFO, run)
        write_json(args.metrics, metrics)
        log(f"wrote {args.out}/, {args.outputs}/ and {args.metrics}")


if __name__ == "__main__":
    run_stage(main)
