"""The speed targets the benchmark's figures are judged against, and the verdicts.

Every ratio target is ours against the tuned peer: the faster of the plain recipe in fp32 and
the plain recipe given bf16=True (speed.py's `ratio_tuned`), measured side by side in one run;
the plain fp32 recipe stays a second column (`ratio`). The targets are stated for a CPU with
native bf16 (where the tuned peer is usually the Trainer in bf16):

- a whole 3-epoch training run (train_run, the cache build and validation in the clock): 4x;
- per step, last2 and LoRA: 5x;
- evaluation (eval: a few batches; eval_run: a whole test split) against Trainer.predict: 1.6x,
  at equal numbers: where both sides compute the same function (GPT-2), every probability
  within the tolerance of the lower precision of the two (PROBABILITY_TOLERANCE); a ratio whose
  numbers differ more, or cannot be compared (BERT: the Trainer's model pools [CLS]), is not
  met;
- our trained part of last2 and LoRA: at least 60% of the measured matmul peak of its
  precision (benchmarks/peak.py);
- tokenization (ours, cleaning and truncation included) at least as fast as the plain fast
  tokenizer call (inputs.py).

In bench.json, per (model, method): `target.ratio` and `target.ratio_met`, and for the peak
share `target.peak_share` and `target.peak_share_met`; `tokenize.hf.target.ratio(_met)`.
"""

from __future__ import annotations

RATIO = {"last2": 5.0, "lora": 5.0, "train_run": 4.0, "eval": 1.6, "eval_run": 1.6}
AT_EQUAL_NUMBERS = ("eval", "eval_run")  # their ratio counts only with equal probabilities
PEAK_SHARE = 0.6  # our side's share of the matmul peak, for the methods below
PEAK_SHARE_METHODS = ("last2", "lora")
TOKENIZATION_RATIO = 1.0  # ours / the plain tokenizer call, reviews/s
# The largest difference of a class probability between two sides that compute the same
# function: fp32 rounding; bf16 autocast (8 bits of mantissa in every matrix product) on either
PROBABILITY_TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}


def judge(method: str, ours: dict, ratio_tuned: dict, agreement: dict | None = None) -> dict:
    """The targets of `method` and whether its figures meet them: flat keys of bench.json's
    `{model}.{method}.target.` (empty when the method has no target). `agreement`: speed.py's
    comparison of the sides' probabilities (None: not comparable)."""
    out: dict = {}
    if method in RATIO and ratio_tuned.get("samples_per_s") is not None:
        out["ratio"] = RATIO[method]
        out["ratio_met"] = ratio_tuned["samples_per_s"] >= RATIO[method]
        if method in AT_EQUAL_NUMBERS:
            out["equal_numbers"] = bool(agreement and agreement["equal"])
            out["ratio_met"] = out["ratio_met"] and out["equal_numbers"]
    if method in PEAK_SHARE_METHODS and "peak_share" in ours:
        out["peak_share"] = PEAK_SHARE
        out["peak_share_met"] = ours["peak_share"] >= PEAK_SHARE
    return out


def judge_tokenization(results: dict) -> dict:
    """The tokenization target's keys for the tokenization benchmark's `results`."""
    ratio = results.get("tokenize.hf.ratio.reviews_per_s")
    if ratio is None:
        return {}
    return {"tokenize.hf.target.ratio": TOKENIZATION_RATIO,
            "tokenize.hf.target.ratio_met": ratio >= TOKENIZATION_RATIO}


def verdict(target: float, figure: float, unit: str) -> str:
    """'>= 5x met' or '>= 5x NOT met (62% of it)'."""
    shown = f"{target:g}x" if unit == "x" else f"{100 * target:g}%"
    if figure >= target:
        return f">= {shown} met"
    return f">= {shown} NOT met ({100 * figure / target:.0f}% of it)"
