"""Train: build the model for (model, method), train it, keep the best epoch on validation.

    python stages/train.py                                  # what `dvc repro train` runs
    accelerate launch --num_processes 2 stages/train.py     # several GPUs (or CPU processes)

Reads params: seed, model, method, data.max_tokens/truncation/head_tokens, zero_shot, finetune,
lora, train, eval.batch_size.
Writes: models/ (only what was trained: head, trained blocks or LoRA adapter, and textclf.json to
rebuild it on the base model), metrics/train.json, metrics/train_log/ (dvclive per-step loss).
Resumes from checkpoints/last.pt when an earlier run with the same params was interrupted.
"""

from pathlib import Path

from accelerate.utils import set_seed

from textclf import paths
from textclf.batching import Collator, pad_multiple_for
from textclf.cli import log, params_from_args, run_stage, stage_parser
from textclf.models import build_classifier, checked_model, parameter_counts, save_model
from textclf.outputs import staged_dir, write_json
from textclf.params import ParamsError
from textclf.prepared import load_prepared
from textclf.tokenization import classifier_format, load_tokenizer
from textclf.training import Checkpointer, fingerprint, make_accelerator, train_classifier
from textclf.zero_shot import zero_shot_classifier


def step_logger(log_dir: Path, resume: bool):
    """dvclive's per-step log (plots declared in dvc.yaml by hand), if dvclive is installed."""
    try:
        from dvclive import Live
    except ImportError:
        log("dvclive is not installed: the per-step loss is not logged")
        return None
    return Live(str(log_dir), resume=resume, dvcyaml=False, save_dvc_exp=False)


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--out", type=Path, default=paths.MODEL_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS / "train.json")
    parser.add_argument("--log-dir", type=Path, default=paths.METRICS / "train_log")
    parser.add_argument("--checkpoints", type=Path, default=paths.CHECKPOINTS)
    args = parser.parse_args()
    params = params_from_args(args)

    # Check params against the model and the prepared data before loading any weights
    _, family = checked_model(params)
    prepared = load_prepared(args.prepared)
    if prepared.meta["model"] != params.model:
        raise ParamsError(f"{args.prepared} was tokenized for {prepared.meta['model']!r}, not "
                          f"{params.model!r}: run the prepare stage again (dvc repro)")
    labels = prepared.label_names
    tokenizer = load_tokenizer(params.model, family)
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

    # Train (zero-shot has nothing to train)
    if params.method != "zero_shot":
        run_id = fingerprint(params.to_dict(), accelerator.num_processes, files=(
            args.prepared / paths.SPLIT_FILE.format(split="train"),
            args.prepared / paths.SPLIT_FILE.format(split="val")))
        checkpointer = Checkpointer(args.checkpoints, run_id, accelerator.is_main_process, say)
        collator = Collator(fmt, tokenizer.pad_id,
                            pad_multiple_for(accelerator.device, params.train.compile))
        live = step_logger(args.log_dir, resume=checkpointer.path.exists()) \
            if accelerator.is_main_process else None
        result = train_classifier(model, prepared.train, prepared.val, collator, params.train,
                                  params.learning_rate, params.eval.batch_size, params.seed,
                                  accelerator, checkpointer, live, say)
        if live is not None:
            live.end()
        model = accelerator.unwrap_model(model, keep_torch_compile=False)

    # Save only what was trained, then the metrics; then forget the checkpoint
    if accelerator.is_main_process:
        info = {
            "base_model": params.model, "family": family.name, "method": params.method,
            "label_names": labels, "tokenizer": tokenizer.name,
            "input_prefix": list(fmt.prefix), "input_suffix": list(fmt.suffix),
            "pad_id": tokenizer.pad_id, "max_tokens": params.data.max_tokens,
            "truncation": params.data.truncation, "head_tokens": params.data.head_tokens,
        }
        with staged_dir(args.out) as tmp:
            save_model(model, tmp, info)
        metrics = {"model": params.model, "method": params.method, **counts}
        if result is not None:
            metrics.update(best_epoch=result.best_epoch,
                           best_val_accuracy=round(result.best_val_accuracy, 6),
                           steps=result.steps, train_seconds=round(result.train_seconds, 1),
                           resumed_at_step=result.resumed_at_step)
            metrics["epochs"] = {str(row["epoch"]): {k: round(v, 6) for k, v in row.items()
                                                     if k != "epoch"} for row in result.history}
            checkpointer.clear()
        if calibration is not None:
            metrics["content_free_probs"] = dict(zip(params.zero_shot.answers,
                                                     [round(p, 6) for p in calibration]))
        write_json(args.metrics, metrics)
        args.log_dir.mkdir(parents=True, exist_ok=True)  # declared outputs, even for zero-shot
        args.checkpoints.mkdir(parents=True, exist_ok=True)
        log(f"wrote {args.out}/ and {args.metrics}")


if __name__ == "__main__":
    run_stage(main)
