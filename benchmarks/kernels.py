"""The kernels outside the matrix products, one by one, at GPT-2's shapes: dropout's masks,
attention, and the MLP's activation beside the product it follows.

    python benchmarks/kernels.py                       # bf16, GPT-2 124M's shapes, batch 32 x 256
    python benchmarks/kernels.py --precision fp32
    python benchmarks/kernels.py --texts 2 --tokens 16 --width 32 --heads 2 --repeats 1  # seconds

What it prints (milliseconds per call, the fastest of --repeats after one untimed call):

- dropout: the mask F.dropout draws for one block's attention probabilities (texts x heads x
  tokens x tokens), with 1 thread and with all of them; whether that mask is exactly
  `float64 uniform_() < 1 - p` from the same generator (so the same masks cost one 64-bit uniform
  draw per element, drawn in sequence); a float32 uniform_() (one 32-bit draw: other masks) for
  comparison; and F.dropout itself.
- attention: torch's scaled_dot_product_attention over (texts, heads, tokens, head width) with
  is_causal, with a boolean causal mask and with no mask.
- MLP: the first product (width -> 4 x width) followed by GELU (tanh), as GPT-2's MLP runs it,
  against oneDNN's fused product-and-GELU (`torch.ops.mkldnn._linear_pointwise`, the operator
  torch.compile's freezing emits on a CPU), and the largest difference between the two.
Not a pipeline stage, and not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import textclf  # noqa: F401
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from textclf.modeling.device import device_name  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DROPOUT = 0.1  # GPT-2's attn_pdrop and resid_pdrop


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--precision", default="bf16", choices=list(DTYPES),
                        help="the dtype of the activations (bf16: as under bf16 autocast)")
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--width", type=int, default=768, help="hidden size (GPT-2 124M: 768)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per kernel")
    return parser.parse_args(argv)


def fastest_ms(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of `fn`, in milliseconds, after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def same_masks_as_float64_uniform(shape: tuple[int, ...], keep: float) -> bool:
    """Whether F.dropout's mask equals `uniform_() < keep` in float64 from the same seed."""
    torch.manual_seed(0)
    kept = F.dropout(torch.ones(shape), 1 - keep, training=True) != 0
    torch.manual_seed(0)
    return bool(torch.equal(kept, torch.empty(shape, dtype=torch.float64).uniform_() < keep))


def dropout_lines(args, dtype: torch.dtype) -> list[str]:
    shape = (args.texts, args.heads, args.tokens, args.tokens)
    probabilities = torch.rand(shape).to(dtype)
    mask = torch.empty(shape, dtype=dtype)
    threads = torch.get_num_threads()
    per_thread = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        per_thread[n] = fastest_ms(lambda: mask.bernoulli_(1 - DROPOUT), args.repeats)
    torch.set_num_threads(threads)
    uniform32 = torch.empty(shape, dtype=torch.float32)
    elements = probabilities.numel()
    same = same_masks_as_float64_uniform(shape, 1 - DROPOUT)
    return [
        f"dropout p={DROPOUT} on {'x'.join(map(str, shape))} attention probabilities "
        f"({elements / 1e6:.1f}M elements):",
        "  the mask, bernoulli_: " + ", ".join(
            f"{ms:.1f} ms with {n} thread{'s' if n > 1 else ''}"
            for n, ms in per_thread.items())
        + f" ({1e6 * per_thread[threads] / elements:.2f} ns per element)",
        f"  the same mask as float64 uniform_() < {1 - DROPOUT:g} from the same seed: "
        f"{'yes' if same else 'no'}",
        f"  float32 uniform_() (one 32-bit draw, other masks): "
        f"{fastest_ms(uniform32.uniform_, args.repeats):.1f} ms",
        f"  F.dropout (mask and scaling): "
        f"{fastest_ms(lambda: F.dropout(probabilities, DROPOUT, True), args.repeats):.1f} ms",
    ]


def attention_lines(args, dtype: torch.dtype) -> list[str]:
    head_width = args.width // args.heads
    q, k, v = (torch.randn(args.texts, args.heads, args.tokens, head_width).to(dtype)
               for _ in range(3))
    causal = torch.ones(args.tokens, args.tokens, dtype=torch.bool).tril()
    sdpa = F.scaled_dot_product_attention
    timed = {
        "is_causal": lambda: sdpa(q, k, v, is_causal=True),
        "a boolean causal mask": lambda: sdpa(q, k, v, attn_mask=causal),
        "no mask": lambda: sdpa(q, k, v),
    }
    return [f"attention, {args.texts}x{args.heads}x{args.tokens}x{head_width}: " + ", ".join(
        f"{name} {fastest_ms(fn, args.repeats):.1f} ms" for name, fn in timed.items())]


def mlp_lines(args, dtype: torch.dtype) -> list[str]:
    rows, inner = args.texts * args.tokens, 4 * args.width
    x = torch.randn(rows, args.width).to(dtype)
    weight = (0.02 * torch.randn(inner, args.width)).to(dtype)  # (out, in), as nn.Linear holds
    bias = torch.zeros(inner).to(dtype)
    weight_t = weight.t()  # GPT-2's Conv1D holds (in, out)

    def unfused():
        return F.gelu(torch.addmm(bias, x, weight_t), approximate="tanh")

    def fused():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "tanh")

    lines = [f"MLP's first product and GELU (tanh), {rows}x{args.width} -> {inner}: "
             f"product {fastest_ms(lambda: torch.addmm(bias, x, weight_t), args.repeats):.1f} "
             f"ms, then GELU, together {fastest_ms(unfused, args.repeats):.1f} ms"]
    try:
        difference = (fused().float() - unfused().float()).abs().max().item()
        lines.append(f"  fused by oneDNN: {fastest_ms(fused, args.repeats):.1f} ms, largest "
                     f"difference {difference:.2g}")
    except (AttributeError, RuntimeError) as e:  # a torch built without oneDNN
        lines.append(f"  fused by oneDNN: not available ({str(e).splitlines()[0]})")
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    dtype = DTYPES[args.precision]
    torch.manual_seed(0)
    print(f"{device_name(torch.device('cpu'))}; {args.precision}")
    with torch.inference_mode():
        for line in [*dropout_lines(args, dtype), *attention_lines(args, dtype),
                     *mlp_lines(args, dtype)]:
            print(line)


if __name__ == "__main__":
    main()
