"""Scoring on a CPU: the time per token against the tokens a batch holds (texts x tokens).

    python benchmarks/batch_tokens.py                              # GPT-2 124M, bf16 if native
    python benchmarks/batch_tokens.py --family bert --layers 6 --width 384   # MiniLM's shape
    python benchmarks/batch_tokens.py --threads 1
    python benchmarks/batch_tokens.py --layers 2 --width 32 --heads 2 --tokens 16 \\
        --texts 1,4 --repeats 1                                    # seconds: does it run?

A randomly initialised model of the family (full size unless sizes are given; the speed does not
depend on the weights) is built as the evaluate stage builds the trained one
(textclf.modeling.classifier.build_classifier, params.yaml's knobs), and each batch of
`--texts` texts of `--tokens` tokens each is scored by textclf.modeling.inference.predict_logits
as one batch (the CPU's token bound lifted, so that the batch is the one asked for). It prints,
for each batch, the fastest of `--repeats` calls after an untimed one, in milliseconds and in
microseconds per token, and the token bound the defaults take on this machine
(textclf.modeling.batching.scoring_tokens). Not a pipeline stage, and not a test: it prints
figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
try:
    import textclf  # noqa: F401
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from kernels import fastest_ms  # noqa: E402
from random_models import save_random_model  # noqa: E402

from textclf.core.families import FAMILIES  # noqa: E402
from textclf.core.params import load_params  # noqa: E402
from textclf.core.tokenization import InputFormat, TokenizedSplit  # noqa: E402
from textclf.modeling import batching  # noqa: E402
from textclf.modeling.accelerator import make_accelerator  # noqa: E402
from textclf.modeling.batching import Collator, scoring_tokens  # noqa: E402
from textclf.modeling.classifier import build_classifier  # noqa: E402
from textclf.modeling.device import device_name  # noqa: E402
from textclf.modeling.inference import predict_logits  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--family", default="gpt2", choices=["gpt2", "bert"])
    parser.add_argument("--layers", type=int, default=None, help="default: the full-size model")
    parser.add_argument("--width", type=int, default=None, help="hidden size")
    parser.add_argument("--heads", type=int, default=None)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="as train.mixed_precision (auto: bf16 where the CPU has it natively)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens of every text")
    parser.add_argument("--texts", default="1,2,4,8,16,32,64,128",
                        help="texts per batch, comma-separated: one batch of each")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per batch")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's threads (default: torch's own choice)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    accelerator = make_accelerator(args.precision, "cpu")
    bound = scoring_tokens(accelerator.device)
    sizes = {k: v for k, v in {"layers": args.layers, "width": args.width,
                               "heads": args.heads}.items() if v is not None}
    with tempfile.TemporaryDirectory() as directory:
        config = save_random_model(args.family, Path(directory), **sizes)
        params = load_params(args.params, overrides={"model": directory, "method": "finetune"})
        torch.manual_seed(0)
        clf = build_classifier(params, FAMILIES[args.family], 2).eval()
    batching.CPU_SCORING_TOKENS_PER_THREAD = 10**9  # each batch as asked for
    collator = Collator(InputFormat((), ()), 0)
    rng = np.random.default_rng(0)
    precision = "bf16 autocast" if accelerator.mixed_precision == "bf16" else "fp32"
    print(f"{device_name(accelerator.device)}; {args.family}, {config.num_hidden_layers} layers "
          f"of width {config.hidden_size}; {precision}; texts of {args.tokens} tokens")
    print(f"the defaults' token bound on this machine: {bound} tokens a scoring batch")
    for texts in (int(n) for n in args.texts.split(",")):
        ids = [rng.integers(1, config.vocab_size, args.tokens).astype(np.int32)
               for _ in range(texts)]
        split = TokenizedSplit(ids, np.zeros(texts, dtype=np.int64),
                               np.full(texts, args.tokens, dtype=np.int64))
        ms = fastest_ms(partial(predict_logits, clf, split, collator, texts, accelerator),
                        args.repeats)
        tokens = texts * args.tokens
        print(f"{texts:4d} texts = {tokens:6d} tokens: {ms:9.1f} ms, "
              f"{1000 * ms / tokens:7.1f} us per token")


if __name__ == "__main__":
    main()
