"""Baseline: TF-IDF of word n-grams and logistic regression on the texts prepare chose, C chosen
on the validation split, the test split scored with evaluate's metrics and intervals.

    python stages/baseline.py               # what `dvc repro baseline` runs (after prepare)

No model and no tokenizer: a first number for a dataset in seconds to a minute on a CPU, and the
yardstick of every run (`textclf pr-report` shows the model's accuracy beside it).
Reads params: seed (the bootstrap's resamples, the same as evaluate's), eval.bootstrap, baseline.
Reads: data/prepared/{train,val,test}_texts.jsonl (the same split and cleaning as the model's).
Writes: metrics/baseline.json (the keys of metrics/eval.json: accuracy, precision, recall, f1,
roc_auc, loss, n and 95% bootstrap intervals), outputs/baseline/run.json (the C kept, each C's
validation accuracy and loss, vocabulary size, split sizes, seconds, confusion counts).
"""

import time
from pathlib import Path

import this_checkout  # noqa: F401  (first: this checkout's src/ on the import path)

from textclf.baseline.tfidf import fit_baseline
from textclf.core import paths
from textclf.core.outputs import staged_dir, write_json
from textclf.core.prepared_texts import SPLITS, load_texts
from textclf.core.runner import log, params_from_args, run_stage, stage_parser
from textclf.evaluate.metrics import headline_metrics


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS / "baseline.json")
    parser.add_argument("--outputs", type=Path, default=paths.BASELINE_OUTPUTS)
    args = parser.parse_args()
    params = params_from_args(args)
    p = params.baseline

    # The texts prepare chose; class ids are 0..K-1 over the splits together
    splits = {name: load_texts(args.prepared, name) for name in SPLITS}
    train, val, test = (splits[name] for name in SPLITS)
    num_labels = int(max(split.labels.max() for split in splits.values())) + 1

    # Fit on train, choose C on validation, score test
    started = time.perf_counter()
    fit = fit_baseline(train, val, num_labels, p.c_grid, p.ngrams, p.min_df)
    probs = fit.predict_proba(test.texts)
    seconds = time.perf_counter() - started
    metrics, counts = headline_metrics(test.labels, probs, params.eval.bootstrap, params.seed)

    # Write
    with staged_dir(args.outputs) as tmp:
        write_json(tmp / paths.RUN_INFO, {
            "classifier": f"TF-IDF (word 1-{p.ngrams} grams) + logistic regression",
            "c": fit.c, "chosen_by": "validation accuracy (ties: validation loss)",
            "validation": fit.validation, "vocabulary_size": fit.vocabulary_size,
            "n": {name: len(split) for name, split in splits.items()},
            "seconds": round(seconds, 2), **counts})
    write_json(args.metrics, metrics)
    log(f"baseline: TF-IDF (word 1-{p.ngrams} grams, {fit.vocabulary_size} features) + logistic "
        f"regression, C {fit.c} (of {p.c_grid}, by validation accuracy): test accuracy "
        f"{metrics['accuracy']:.4f}, f1 {metrics['f1']:.4f}, n {metrics['n']} ({seconds:.1f} s)")


if __name__ == "__main__":
    run_stage(main)
