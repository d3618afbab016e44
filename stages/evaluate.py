"""Evaluate: score the test split with the trained model; write metrics, plots, predictions.

    python stages/evaluate.py               # what `dvc repro evaluate` runs

Reads params: seed (bootstrap), eval, train.mixed_precision. With eval.long_texts windows, a
text over data.max_tokens is scored whole, as overlapping windows (textclf.modeling.windows);
the others score exactly as truncated.
Writes: metrics/eval.json (accuracy, precision, recall, f1, roc_auc, loss, n and 95% bootstrap
intervals), metrics/plots/*.csv (confusion, ROC, precision-recall, accuracy by length, per-class
precision, recall, F1 and support, the pairs of classes most confused: drawn by `dvc plots show`
with Vega), the confusion, ROC, precision-recall, length and per-class figures as *.png images
(shown offline, and in the model card) and outputs/evaluate/ (predictions.jsonl: one line per
test text; errors.md: the most confident errors; length_bins.json: the per-length table and the
texts over the limit, with their accuracy truncated beside it when scored whole; run.json:
seconds, device, precision, how long texts were read, confusion counts).
"""

import time
from pathlib import Path

import this_checkout  # noqa: F401  (first: this checkout's src/ on the import path)

from textclf.core import paths
from textclf.core.errors import DataError
from textclf.core.outputs import staged_dir, write_bytes, write_json, write_text
from textclf.core.prepared_data import OVER_LIMIT, load_prepared
from textclf.core.runner import log, params_from_args, run_stage, stage_parser
from textclf.evaluate.figures import figure_files
from textclf.evaluate.metrics import headline_metrics, length_bins, over_limit_row
from textclf.evaluate.plots import plot_files
from textclf.evaluate.reports import errors_markdown, prediction_lines
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator, pad_multiple_for
from textclf.modeling.classifier import load_model
from textclf.modeling.device import device_name, precision_name
from textclf.modeling.inference import compiled_scorer, predict_logits, softmax
from textclf.modeling.windows import Windows, whole_split_logits


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--model-dir", type=Path, default=paths.MODEL_DIR)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS / "eval.json")
    parser.add_argument("--plots-dir", type=Path, default=paths.PLOTS)
    parser.add_argument("--outputs", type=Path, default=paths.EVAL_OUTPUTS)
    args = parser.parse_args()
    params = params_from_args(args)

    # Load the test split and the trained model
    prepared = load_prepared(args.prepared, with_train=False)
    model, info = load_model(args.model_dir)
    names = prepared.label_names
    if info.label_names != names:
        raise DataError(f"{args.model_dir} was trained for classes {info.label_names}, the "
                         f"prepared data has {names}: run the pipeline again (dvc repro)")
    accelerator = make_accelerator(params.train.mixed_precision)
    model = model.to(accelerator.device)
    compiled = params.eval.compile
    # widths as they come: the compiled scorer takes any width after its second compilation
    collator = Collator(info.input_format, info.pad_id, pad_multiple_for(accelerator.device))
    forward = compiled_scorer(model) if compiled else None

    # Score: the truncated texts; with eval.long_texts windows, those over the limit whole
    started = time.perf_counter()
    logits = predict_logits(model, prepared.test, collator, params.eval.batch_size, accelerator,
                            forward, desc="evaluate")
    truncated_preds, windows_run = None, {}
    windows = Windows(params.eval.window_overlap, params.eval.window_combine)
    if params.eval.long_texts == "windows":
        scores = whole_split_logits(model, info, args.model_dir, prepared.test_texts,
                                    prepared.test, logits, windows, collator,
                                    params.eval.batch_size, accelerator, forward)
        truncated_preds, logits = logits.argmax(axis=1), scores.logits
        windows_run = {"windows_scored": scores.scored, "most_windows": int(scores.windows.max())}
    seconds = time.perf_counter() - started
    if not accelerator.is_main_process:
        return
    probs, labels = softmax(logits), prepared.test.labels
    preds = probs.argmax(axis=1)

    # Metrics, per-length table, plots and figures, errors, predictions
    metrics, counts = headline_metrics(labels, probs, params.eval.bootstrap, params.seed)
    bins = length_bins(labels, preds, prepared.test_lengths, len(names),
                       truncated_preds=truncated_preds)
    over = over_limit_row(labels, preds, prepared.test.full_lengths > prepared.test.lengths,
                          truncated_preds)
    with staged_dir(args.outputs) as tmp:
        write_text(tmp / paths.PREDICTIONS, prediction_lines(labels, probs, names))
        write_text(tmp / "errors.md", errors_markdown(prepared.test_texts, labels, probs, names,
                                                      params.eval.errors))
        write_json(tmp / "length_bins.json", {"length_unit": prepared.meta["length_unit"], **bins,
                                              OVER_LIMIT: {"max_tokens": info.max_tokens, **over}})
        write_json(tmp / paths.RUN_INFO, {"eval_seconds": round(seconds, 2),
                                          "device": device_name(accelerator.device),
                                          "precision": precision_name(accelerator),
                                          "compiled": compiled,
                                          "long_texts": params.eval.long_texts, **windows_run,
                                          **counts})
    for name, text in plot_files(labels, probs, names, bins).items():
        write_text(args.plots_dir / name, text)
    for name, png in figure_files(labels, probs, names, bins,
                                  prepared.meta["length_unit"]).items():
        write_bytes(args.plots_dir / name, png)
    write_json(args.metrics, metrics)
    log(f"test: accuracy {metrics['accuracy']:.4f}, f1 {metrics['f1']:.4f}, "
        f"roc_auc {metrics['roc_auc']}, n {metrics['n']} ({len(labels) / seconds:.0f} texts/s)")
    if truncated_preds is not None and over["n"]:
        log(f"{over['n']} texts over the limit scored whole ({windows_run['windows_scored']} "
            f"windows besides the truncated texts): accuracy on them {over['accuracy']}, "
            f"{over['accuracy_truncated']} truncated")


if __name__ == "__main__":
    run_stage(main)
