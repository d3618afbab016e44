"""Where a training step of the trained part spends its time, operator by operator.

    python benchmarks/profile_step.py --size full --method finetune   # GPT-2 124M, last 2 blocks
    python benchmarks/profile_step.py --size full --method lora
    PYTHONPATH=../other-checkout/src python benchmarks/profile_step.py --size full
                                      # the same program on another version of textclf

One step as the train stage runs it with the frozen-block cache on: the classifier of
`build_classifier` (params.yaml plus --method), the frozen blocks skipped and the first trained
block fed their exact output (textclf.train.frozen_cache), cross-entropy, backward, gradient
clipping and an AdamW step, in --precision (auto: bf16 autocast where the CPU has native bf16,
as the train stage chooses). Random weights (speed does not depend on them); every text is
--max-tokens long, so two versions or two machines compare on the same shapes. Prints the
seconds per step (the mean of --steps timed steps after one warm-up), samples/s, the shares of
the profiled step spent in matrix products and in dropout, and the operators that took the most
time.
Not a pipeline stage, and not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import textclf
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from cases import MODELS, SIZE_OVERRIDES, SIZES  # noqa: E402
from random_models import save_random_model  # noqa: E402

import textclf  # noqa: E402
from textclf.core.families import checked_config_and_family  # noqa: E402
from textclf.core.params import load_params  # noqa: E402
from textclf.modeling.classifier import build_classifier  # noqa: E402
from textclf.modeling.device import device_name, resolved_precision  # noqa: E402
from textclf.train.frozen_cache import frozen_prefix, skipping_frozen_blocks  # noqa: E402
from textclf.train.loop import make_optimizer  # noqa: E402

# torch.profiler's names of the matrix products (what the matmul peak measures)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def is_dropout(op: str) -> bool:
    """torch.profiler's names of dropout's work: drawing the mask and applying it."""
    return "dropout" in op or "bernoulli" in op


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", default="gpt2", choices=MODELS)
    parser.add_argument("--size", default="full", choices=SIZES)
    parser.add_argument("--method", default="finetune", choices=["finetune", "lora"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--rows", type=int, default=15, help="operators listed")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="the step's precision; auto: train.mixed_precision's rule on this "
                             "machine (bf16 autocast with native bf16, fp32 without)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="textclf-profile-") as tmp:
        config = save_random_model(args.model, Path(tmp), 0, **SIZE_OVERRIDES[args.size])
        params = load_params(args.params, {"model": tmp, "method": args.method})
        _, family = checked_config_and_family(params)
        clf = build_classifier(params, family, 2)
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.max_tokens))
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (args.batch_size,))
    clf.eval()
    states = frozen_prefix(clf, ids, mask)  # what the cache holds for these texts
    clf.train()
    trained = [p for p in clf.parameters() if p.requires_grad]
    optimizer = make_optimizer(clf, params.learning_rate, params.train.weight_decay, False)

    precision = resolved_precision(args.precision, cuda=False)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with skipping_frozen_blocks(clf, states), autocast:
            logits = clf(ids, mask)
        F.cross_entropy(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(trained, params.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - started) / args.steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    dropout = sum(e.self_cpu_time_total for e in events if is_dropout(e.key))
    print(f"textclf from {Path(textclf.__file__).parent}")
    print(f"{device_name(torch.device('cpu'))}; {precision}")
    print(f"{args.model} ({args.size}) {args.method}, batch {args.batch_size} x "
          f"{args.max_tokens} tokens, {torch.get_num_threads()} threads: {seconds:.3f} s per "
          f"step, {args.batch_size / seconds:.2f} samples/s; matrix products "
          f"{matmul / total:.1%} of the profiled step, dropout (its random numbers and masks) "
          f"{dropout / total:.1%}")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
