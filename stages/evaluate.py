"""Evaluate: score the test split with the trained model; write metrics, plots, predictions.

    python stages/evaluate.py               # what `dvc repro evaluate` runs

Reads params: seed (bootstrap), eval, train.mixed_precision.
Writes: metrics/eval.json (accuracy, precision, recall, f1, roc_auc, loss, n, confusion counts,
95% bootstrap intervals), metrics/length_bins.json (per review length), metrics/plots/*.csv
(confusion, ROC, precision-recall, accuracy by length), metrics/errors.md (most confident
errors) and outputs/predictions.jsonl (one line per test text).
"""

import time
from pathlib import Path

from textclf import paths
from textclf.batching import Collator, pad_multiple_for
from textclf.cli import log, params_from_args, run_stage, stage_parser
from textclf.data import DataError
from textclf.inference import predict_logits, softmax
from textclf.metrics import bootstrap_ci, classification_metrics, length_bins
from textclf.models import load_model
from textclf.outputs import write_json, write_text
from textclf.plots import plot_files
from textclf.prepared import load_prepared
from textclf.reports import errors_markdown, prediction_lines
from textclf.tokenization import InputFormat
from textclf.training import device_name, make_accelerator


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    parser.add_argument("--metrics-dir", type=Path, default=paths.METRICS)
    parser.add_argument("--predictions", type=Path, default=paths.PREDICTIONS)
    args = parser.parse_args()
    params = params_from_args(args)

    # Load the test split and the trained model
    prepared = load_prepared(args.prepared, with_train=False)
    model, info = load_model(args.model_dir)
    names = prepared.label_names
    if info["label_names"] != names:
        raise DataError(f"{args.model_dir} was trained for classes {info['label_names']}, the "
                         f"prepared data has {names}: run the pipeline again (dvc repro)")
    accelerator = make_accelerator(params.train.mixed_precision)
    model = model.to(accelerator.device)
    collator = Collator(InputFormat(tuple(info["input_prefix"]), tuple(info["input_suffix"])),
                        info["pad_id"], pad_multiple_for(accelerator.device))

    # Score
    started = time.perf_counter()
    logits = predict_logits(model, prepared.test, collator, params.eval.batch_size, accelerator)
    seconds = time.perf_counter() - started
    if not accelerator.is_main_process:
        return
    probs, labels = softmax(logits), prepared.test.labels
    preds = probs.argmax(axis=1)

    # Metrics, per-length table, plots, errors, predictions
    metrics = classification_metrics(labels, probs)
    metrics.update(bootstrap_ci(labels, preds, len(names), params.eval.bootstrap, params.seed))
    metrics["eval_seconds"] = round(seconds, 2)
    metrics["device"] = device_name(accelerator.device)
    bins = length_bins(labels, preds, prepared.test_lengths, len(names))
    metrics_dir = args.metrics_dir
    write_json(metrics_dir / "eval.json", metrics)
    write_json(metrics_dir / "length_bins.json",
               {"length_unit": prepared.meta["length_unit"], **bins})
    for name, text in plot_files(labels, probs, names, bins).items():
        write_text(metrics_dir / "plots" / name, text)
    write_text(metrics_dir / "errors.md",
               errors_markdown(prepared.test_texts, labels, probs, names, params.eval.errors))
    write_text(args.predictions, prediction_lines(labels, probs, names))
    log(f"test: accuracy {metrics['accuracy']:.4f}, f1 {metrics['f1']:.4f}, "
        f"roc_auc {metrics['roc_auc']}, n {metrics['n']} ({len(labels) / seconds:.0f} texts/s)")


if __name__ == "__main__":
    run_stage(main)
