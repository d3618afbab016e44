"""int8 predict against full precision: the accuracy program's trained model (the fast side)
scores the test split three ways, one after the other in one process, each timed:

- as_evaluated: in the run's precision (train.mixed_precision; auto = bf16 autocast on a CPU
  with native bf16), as the evaluate stage and `textclf predict` score by default;
- fp32: the same model in fp32;
- int8: a copy with the blocks' linear layers dynamically quantized (textclf.quantize), as
  `textclf predict --quantize int8` scores, fp32 around the int8 products.

Reported: texts/s and the int8 speed-up over each of the other two; test accuracy of each; the
share of texts whose int8 label equals the other's; the largest probability difference; and the
paired accuracy difference with the noise rule of parity.py. Tokenization is done once before
and is not timed (the three ways share it).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from textclf.core.families import Family
from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator
from textclf.modeling.inference import predict_logits, softmax
from textclf.quantize import quantize_int8

WAYS = ("as_evaluated", "fp32", "int8")


def int8_against_full_precision(model, family: Family, test: TokenizedSplit, collator: Collator,
                                batch_size: int, precision: str) -> dict:
    """bench's flat `int8.` keys: each way's speed and accuracy, and int8 against the others.
    `precision`: the run's train.mixed_precision."""
    from parity import paired_difference

    models = {"as_evaluated": model, "fp32": model,
              "int8": quantize_int8(copy.deepcopy(model).cpu(), family)}
    precisions = {"as_evaluated": precision, "fp32": "fp32", "int8": "fp32"}
    out, probs = {}, {}
    for way in WAYS:
        accelerator = make_accelerator(precisions[way], "cpu")
        warm = TokenizedSplit(test.ids[:batch_size], test.labels[:batch_size],
                              test.full_lengths[:batch_size])
        predict_logits(models[way], warm, collator, batch_size, accelerator)  # untimed
        started = time.perf_counter()
        probs[way] = softmax(predict_logits(models[way], test, collator, batch_size,
                                            accelerator))
        seconds = time.perf_counter() - started
        correct = probs[way].argmax(1) == test.labels
        out.update({f"int8.{way}.precision": accelerator.precision, f"int8.{way}.seconds":
                    round(seconds, 4), f"int8.{way}.texts_per_s": round(len(test) / seconds, 2),
                    f"int8.{way}.test_accuracy": round(float(correct.mean()), 6)})
    for other in ("as_evaluated", "fp32"):
        key = f"int8.vs_{other}"
        out[f"{key}.speedup"] = round(out[f"int8.{other}.seconds"] / out["int8.int8.seconds"], 3)
        out[f"{key}.label_agreement"] = round(float(
            (probs["int8"].argmax(1) == probs[other].argmax(1)).mean()), 6)
        out[f"{key}.max_prob_diff"] = round(float(np.abs(probs["int8"] - probs[other]).max()), 6)
        out.update({f"{key}.{k}": v for k, v in paired_difference(
            probs["int8"].argmax(1) == test.labels,
            probs[other].argmax(1) == test.labels).items()})
    return out


def format_int8(results: dict) -> list[str]:
    """The printed lines of int8_against_full_precision's figures (none if it did not run)."""
    if "int8.int8.seconds" not in results:
        return []
    lines = ["", f"{'scoring':<13} {'precision':>9} {'texts/s':>8} {'test acc':>9}"]
    for way in WAYS:
        lines.append(f"{way:<13} {results[f'int8.{way}.precision']:>9} "
                     f"{results[f'int8.{way}.texts_per_s']:>8.1f} "
                     f"{results[f'int8.{way}.test_accuracy']:>9.4f}")
    for other in ("as_evaluated", "fp32"):
        key = f"int8.vs_{other}"
        lines.append(f"int8 against {other}: {results[f'{key}.speedup']:.2f}x the texts/s, "
                     f"labels {100 * results[f'{key}.label_agreement']:.1f}% the same, "
                     f"probabilities at most {results[f'{key}.max_prob_diff']:.4f} apart, "
                     f"accuracy {100 * results[f'{key}.difference']:+.2f} points (paired "
                     f"standard error {100 * results[f'{key}.standard_error']:.2f})")
    return lines
