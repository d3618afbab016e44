"""The speed targets the benchmark's figures are judged against, and the verdicts.

- ours / plain samples/s, last2 and LoRA (a few timed steps): at least 3.5x where our side
  computes in fp32 (a CPU without native bf16), 6x where it runs bf16 autocast (native bf16);
- a whole 3-epoch training run (train_run): at least 4x;
- evaluation (eval: a few batches; eval_run: a whole test split) against Trainer.predict: 2x;
- our trained part of last2, LoRA and full fine-tuning: at least 50% of the measured matmul
  peak (benchmarks/peak.py).

In bench.json, per (model, method): `target.ratio` and `target.ratio_met`, and for the peak
share `target.peak_share` and `target.peak_share_met`.
"""

from __future__ import annotations

RATIO_FP32 = {"last2": 3.5, "lora": 3.5, "train_run": 4.0, "eval": 2.0, "eval_run": 2.0}
RATIO_BF16 = {**RATIO_FP32, "last2": 6.0, "lora": 6.0}  # our side in native bf16
PEAK_SHARE = 0.5  # our side's share of the matmul peak, for the methods below
PEAK_SHARE_METHODS = ("last2", "lora", "full")


def judge(method: str, ours: dict, ratio: dict) -> dict:
    """The targets of `method` and whether its figures meet them: flat keys of bench.json's
    `{model}.{method}.target.` (empty when the method has no target)."""
    out: dict = {}
    table = RATIO_BF16 if ours["dtype"].startswith("bf16") else RATIO_FP32
    if method in table and ratio.get("samples_per_s") is not None:
        out["ratio"] = table[method]
        out["ratio_met"] = ratio["samples_per_s"] >= table[method]
    if method in PEAK_SHARE_METHODS and "peak_share" in ours:
        out["peak_share"] = PEAK_SHARE
        out["peak_share_met"] = ours["peak_share"] >= PEAK_SHARE
    return out


def verdict(target: float, figure: float, unit: str) -> str:
    """'>= 3.5x met' or '>= 3.5x NOT met (62% of it)'."""
    shown = f"{target:g}x" if unit == "x" else f"{100 * target:g}%"
    if figure >= target:
        return f">= {shown} met"
    return f">= {shown} NOT met ({100 * figure / target:.0f}% of it)"
