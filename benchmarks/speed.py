"""Speed benchmark: our engine against the plain transformers recipe, same model, data and device.

For each model (GPT-2 124M, BERT-base, or smaller variants of them for CPU runs, built from their
configs with random weights: speed does not depend on the weights) and each method, two sides run
in the same process, on the same saved model, the same token ids, batch size and number of steps:

- ours: the project's own code (our_runner.py): `train_classifier` and `predict_logits` with
  params.yaml's engine knobs;
- plain: what a user would otherwise write (plain_trainer.py): `transformers.Trainer` with
  default `TrainingArguments`, `DataCollatorWithPadding`, `Trainer.predict`; for zero-shot
  scoring the usual `no_grad` loop over `AutoModelForCausalLM` logits.

Methods: zero_shot (prompt scoring, GPT-2 only), last2 (last 2 blocks, the final norm and the
head trained), lora, full (everything trained), eval (the evaluation pass of a classifier), each
over a few timed steps (batches); and two whole runs timed from start to end: train_run (the
last2 recipe for `epochs` epochs on `run_texts` texts, validated each epoch; ours builds its
frozen-block cache inside the clock) and eval_run (a whole test split of `run_texts` texts).

Data: review lengths from real IMDb reviews, tokenized (the tokenization benchmark), else from a
log-normal with IMDb's median and mean (inputs.py); random token ids of those lengths, cut to
`max_tokens` (cases.py).

Before measuring a model, untimed rounds of its first training method and its first scoring
method run every side: one-time costs of a process (CUDA kernels loaded on first use, the
allocator's pool growing, GEMM heuristics per batch shape) then fall on neither side.

Measures, per (model, method, side): samples/s, real tokens/s and peak memory (how they are
timed and read: meter.py), TFLOP/s (model FLOPs on real tokens, the formula: flops.py), its share
of the device's matmul peak measured in the same run (peak.py), and the ratios ours/plain; then
judges them against the targets (targets.py).

Imports only torch, numpy, transformers, peft, accelerate (tiktoken optional) and textclf modules
that import nothing else, so it runs where the pipeline's data tools are not installed.
"""

from __future__ import annotations

import dataclasses
import datetime
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cases import (
    METHODS,
    MODELS,
    PROBABILITIES,
    SIZE_OVERRIDES,
    TRAINING_METHODS,
    WARMUP_STAND_IN,
    Case,
    Settings,
    make_case,
    same_function,
)
from flops import model_flops, real_tokens, whole_run_flops
from inputs import (
    SYNTHETIC_MEDIAN,
    SYNTHETIC_REVIEWS,
    SYNTHETIC_SIGMA,
    describe_path,
    read_reviews,
    synthetic_lengths,
    tokenization_benchmark,
)
from meter import free_memory, fresh_globals, global_snapshot, significant
from our_runner import run_ours
from peak import matmul_peak, peak_share, precision_of
from plain_trainer import run_plain
from random_models import save_random_model
from targets import PROBABILITY_TOLERANCE, judge, judge_tokenization, verdict

from textclf.core.families import FAMILIES
from textclf.core.params import load_params
from textclf.core.tokenization import tiktoken_gpt2
from textclf.modeling.device import device_name, resolved_precision


def run_benchmark(settings: Settings, params_path: Path, data_path: Path | None,
                  tokenizer_dir: str | None, log: Callable[[str], None] = print) -> dict:
    """Run every (model, method, side); returns bench.json's flat mapping."""
    problems = settings.problems()
    if problems:
        raise ValueError("invalid benchmark settings:\n  - " + "\n  - ".join(problems))
    import accelerate
    import peft
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_params(params_path)
    snapshot = global_snapshot()
    out: dict[str, Any] = {
        "device": device_name(device),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "accelerate": accelerate.__version__,
        **{f"settings.{k}": (",".join(v) if isinstance(v, tuple) else v)
           for k, v in vars(settings).items()},
        "settings.params": describe_path(params_path),
        "settings.lengths": "",
    }

    # Review lengths: real IMDb reviews tokenized (the tokenization benchmark), else synthetic
    lengths: dict[str, np.ndarray] = {}
    if data_path is not None and Path(data_path).is_file():
        texts = read_reviews(Path(data_path))
        if tokenizer_dir is not None or tiktoken_gpt2() is not None:
            tokenize_results, lengths = tokenization_benchmark(texts, tokenizer_dir, base, log=log)
            out.update(tokenize_results)
            out.update(judge_tokenization(tokenize_results))
            out["settings.lengths"] = (f"{len(texts)} reviews of {describe_path(data_path)}, "
                                       "tokenized")
        else:
            log("no tokenizer (give --tokenizer): review lengths are synthetic")
    elif data_path is not None:
        log(f"{data_path} not found: review lengths are synthetic")
    if not lengths:
        synthetic = synthetic_lengths(SYNTHETIC_REVIEWS, settings.seed)
        lengths = {"gpt2": synthetic, "bert": synthetic}
        out["settings.lengths"] = (f"synthetic log-normal (median {SYNTHETIC_MEDIAN:g}, sigma "
                                   f"{SYNTHETIC_SIGMA:g} tokens)")

    # The device's matmul peak in each precision a side computes in, before the sides run and
    # after them: the faster counts (on a shared machine, others' work slows either down)
    precisions = {"fp32", resolved_precision(base.train.mixed_precision, device.type == "cuda")}
    precisions = sorted(precisions | ({"bf16"} if settings.plain_bf16 else set()))
    peaks = {p: measure_peak(device, p, {}, log) for p in precisions}
    measured: dict[tuple[str, str], dict] = {}

    rng = np.random.default_rng(settings.seed)
    with tempfile.TemporaryDirectory(prefix="textclf-bench-") as tmp:
        for model in settings.models:
            model_dir = Path(tmp) / model
            config = save_random_model(model, model_dir, settings.seed,
                                       **SIZE_OVERRIDES[settings.size])
            log(f"{model} ({settings.size}): {config.num_hidden_layers} blocks, width "
                f"{config.hidden_size}, vocabulary {config.vocab_size}, saved to {model_dir}")
            methods = [m for m in settings.methods
                       if m != "zero_shot" or FAMILIES[config.model_type].causal]
            if len(methods) < len(settings.methods):
                log(f"{model} zero_shot: skipped (encoders have no next-token scoring)")
            if methods:
                # Untimed rounds first: the first training run in a process pays one-time costs
                # (CUDA kernels loaded on first use, the allocator's pool growing, GEMM
                # heuristics per batch shape) that would slow whichever method came first
                for warm in warmup_methods(methods):
                    # standing in for a whole run only: one warm-up and one step are enough
                    warm_settings = (settings if warm in methods else
                                     dataclasses.replace(settings, warmup=1, steps=1))
                    log(f"{model} {warm}: warm-up round (untimed)")
                    run_case(make_case(model, warm, model_dir, config, lengths[model],
                                       params_path, warm_settings, rng),
                             warm_settings, device, snapshot)
            for method in methods:
                case = make_case(model, method, model_dir, config, lengths[model], params_path,
                                 settings, rng)
                sides = measured[model, method] = run_case(case, settings, device, snapshot)
                log(f"{model} {method}: " + ", ".join(
                    f"{side} {values['samples_per_s']:,.1f}" for side, values in sides.items()
                    if "seconds" in values) + " samples/s")
            free_memory(device)

    peaks = {p: measure_peak(device, p, peaks[p], log) for p in precisions}
    for p, peak in peaks.items():
        out.update({f"peak.{p}.{k}": v for k, v in peak.items()})
    for (model, method), sides in measured.items():
        for values in sides.values():
            if "tflops" in values and "dtype" in values:
                values["peak_share"] = peak_share(
                    values["tflops"], peaks[precision_of(values["dtype"])]["tflops"])
        sides["target"] = judge(method, sides["ours"], sides["ratio_tuned"],
                                sides.get("agreement"))
        for side, values in sides.items():
            out.update({f"{model}.{method}.{side}.{k}": v for k, v in values.items()})
    return out


def measure_peak(device: torch.device, precision: str, before: dict,
                 log: Callable[[str], None]) -> dict:
    """The matmul peak now, or `before` (an earlier measurement) if that was faster."""
    peak = matmul_peak(device, precision)
    log(f"matmul peak ({precision}, {peak['size']}^3): {peak['tflops']:g} TFLOP/s")
    return before if before and before["tflops"] >= peak["tflops"] else peak


def warmup_methods(methods: list[str]) -> list[str]:
    """One training and one scoring method, so both the training and the inference shapes are
    warm (a scoring round does not warm training, nor training the larger scoring batches); a
    whole run is warmed by its per-step stand-in (WARMUP_STAND_IN)."""
    methods = list(dict.fromkeys(WARMUP_STAND_IN.get(m, m) for m in methods))
    training = [m for m in methods if m in TRAINING_METHODS][:1]
    scoring = [m for m in methods if m not in TRAINING_METHODS][:1]
    return training + scoring


def run_case(case: Case, settings: Settings, device: torch.device, snapshot: dict
             ) -> dict[str, dict]:
    """Each side's figures, one after the other from the same initial state; the ratios
    ours/plain ("ratio"), ours/plain-in-bf16 ("ratio_bf16", where that side ran) and ours/the
    tuned peer ("ratio_tuned": the faster of plain and plain_bf16, named by "tuned.side");
    for a scoring method, how far each side's probabilities are from ours ("agreement")."""
    runs = {"ours": lambda: run_ours(case, settings, device, lambda *a, **k: None),
            "plain": lambda: run_plain(case, settings, device)}
    if settings.plain_bf16:
        runs["plain_bf16"] = lambda: run_plain(case, settings, device, bf16=True)
    sides, probabilities = {}, {}
    for side, run in runs.items():
        with fresh_globals(snapshot):
            sides[side] = run()
        probabilities[side] = sides[side].pop(PROBABILITIES, None)
        free_memory(device)
    ours = sides["ours"]
    plain_sides = [s for s in sides if s != "ours"]
    for side in plain_sides:
        plain = sides[side]
        # What plain executes per real token: the same model and trained parameters as ours,
        # with every block run forward (plain has no frozen-block cache)
        plain["flops_per_token"] = model_flops(ours["n_model"], ours["n_through"],
                                               ours["n_trained"])
        plain["tflops"] = significant(plain["flops_per_token"] * plain["tokens"] /
                                      plain["seconds"] / 1e12)
        if case.method == "train_run":  # and its validation passes, every block forward too
            plain["flops"] = whole_run_flops(ours, real_tokens(case.train, case.fmt),
                                             real_tokens(case.val, case.fmt),
                                             case.params.train.epochs, cached=False,
                                             ours=False)
            plain["tflops"] = significant(plain["flops"] / plain["seconds"] / 1e12)
        sides[side.replace("plain", "ratio")] = ratios(ours, plain)
    tuned = max(plain_sides, key=lambda s: sides[s]["samples_per_s"])
    sides["tuned"] = {"side": tuned, "dtype": sides[tuned]["dtype"]}
    sides["ratio_tuned"] = ratios(ours, sides[tuned])
    if same_function(case):
        sides["agreement"] = agreement(probabilities, sides)
    return sides


def ratios(ours: dict, plain: dict) -> dict:
    return {key: round(ours[key] / plain[key], 3) if plain[key] else None
            for key in ("samples_per_s", "tokens_per_s", "tflops", "peak_memory_mib")}


def agreement(probabilities: dict[str, np.ndarray], sides: dict[str, dict]) -> dict:
    """How far each plain side's probabilities are from ours, text by text (the largest
    difference of a class probability), against the tolerance of the lower of the two sides'
    precisions (targets.PROBABILITY_TOLERANCE); `equal` when every plain side is within it."""
    out, equal = {}, True
    ours = probabilities["ours"]
    for side in [s for s in probabilities if s != "ours"]:
        diff = float(np.abs(probabilities[side] - ours).max())
        precision = "bf16" if "bf16" in (precision_of(sides["ours"]["dtype"]),
                                         precision_of(sides[side]["dtype"])) else "fp32"
        tolerance = PROBABILITY_TOLERANCE[precision]
        out[f"{side}.max_diff"] = significant(diff, 3)
        out[f"{side}.tolerance"] = tolerance
        equal = equal and diff <= tolerance
    out["equal"] = equal
    return out


# ---------------------------------------------------------------------------------------------
# Printing

def format_table(results: dict) -> str:
    """A fixed-width table of bench.json's figures with the targets' verdicts, then what each
    side ran."""
    head = (f"{'model':<6} {'method':<9} {'side':<11} {'seconds':>8} {'samples/s':>10} "
            f"{'tokens/s':>11} {'TFLOP/s':>9} {'peak %':>7} {'peak MiB':>9} {'pad %':>6}  "
            "dtype / target")
    peaks = sorted({k.split(".")[1] for k in results if k.startswith("peak.")})
    lines = [f"device: {results['device']}; torch {results['torch']}, transformers "
             f"{results['transformers']}, peft {results['peft']}",
             f"size {results['settings.size']}; batch {results['settings.batch_size']} "
             f"(training), {results['settings.eval_batch_size']} (scoring, evaluation); "
             f"{results['settings.warmup']} warm-up + {results['settings.steps']} timed steps; "
             f"max_tokens {results['settings.max_tokens']}",
             f"whole runs: train_run {results['settings.run_texts']} texts x "
             f"{results['settings.epochs']} epochs, validation each epoch; eval_run "
             f"{results['settings.run_texts']} texts",
             f"review lengths: {results['settings.lengths']}",
             "matmul peak: " + ", ".join(
                 f"{p} {results[f'peak.{p}.tflops']:g} TFLOP/s ({results[f'peak.{p}.size']}^3 "
                 f"matmul, best of {results[f'peak.{p}.repeats']})" for p in peaks),
             "", head, "-" * len(head)]
    recipes = []
    for model in MODELS:
        for method in METHODS:
            rows, ran = method_rows(results, model, method)
            lines += rows
            recipes += ran
    tokenize = [(k, v) for k, v in results.items()
                if k.startswith("tokenize.") and k.endswith("reviews_per_s")]
    if tokenize:
        lines += ["", "tokenization, reviews/s: " + ", ".join(
            f"{k.removeprefix('tokenize.').removesuffix('.reviews_per_s')} {v:,}"
            for k, v in tokenize)]
        if "tokenize.hf.target.ratio" in results:
            lines[-1] += "; ours / plain " + verdict(results["tokenize.hf.target.ratio"],
                                                     results["tokenize.hf.ratio.reviews_per_s"],
                                                     "x")
    memory = sorted({v for k, v in results.items() if k.endswith(".memory")})
    lines += ["", f"peak memory: {', '.join(memory)}. TFLOP/s: model FLOPs executed on real "
                  "tokens, the frozen-block cache's one-time build excluded, but for train_run, "
                  "whose clock holds the build and every validation pass (benchmarks/flops.py). "
                  "peak % = TFLOP/s / the matmul peak of the side's precision (peak.py). "
                  "ratio = ours / plain (fp32), ratio_bf16 = ours / plain given bf16=True, "
                  "ratio_tuned = ours / the tuned peer (the faster of the two, named): the "
                  "targets judge it (benchmarks/targets.py).", "what each side ran:",
              *recipes]
    return "\n".join(lines)


def side_figures(results: dict, key: str, side: str) -> dict:
    return {k.rsplit(".", 1)[1]: v for k, v in results.items() if k.startswith(f"{key}.{side}.")}


def times(v) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def method_rows(results: dict, model: str, method: str) -> tuple[list[str], list[str]]:
    """The table's rows of one (model, method), and what each of its sides ran."""
    key = f"{model}.{method}"
    target = side_figures(results, key, "target")
    tuned = results.get(f"{key}.tuned.side")
    lines, recipes = [], []
    for side in ("ours", "plain", "ratio", "plain_bf16", "ratio_bf16", "ratio_tuned"):
        r = side_figures(results, key, side)
        if not r:
            continue
        if side.startswith("ratio"):
            judged = ""
            if side == "ratio_tuned":
                judged = f"vs {tuned}"
                if "ratio" in target:
                    judged += "; " + verdict(target["ratio"], r["samples_per_s"], "x")
                    if "equal_numbers" in target:
                        judged += ", " + equal_numbers(results, key)
            lines.append(f"{'':<6} {'':<9} {side:<11} {'':>8} {times(r['samples_per_s']):>10} "
                         f"{times(r['tokens_per_s']):>11} {times(r['tflops']):>9} {'':>7} "
                         f"{times(r['peak_memory_mib']):>9} {'':>6}  {judged}")
            continue
        share = f"{100 * r['peak_share']:.1f}" if "peak_share" in r else "-"
        judged = (f"; peak share {verdict(target['peak_share'], r['peak_share'], '%')}"
                  if side == "ours" and "peak_share" in target else "")
        lines.append(f"{model:<6} {method:<9} {side:<11} {r['seconds']:>8,.2f} "
                     f"{r['samples_per_s']:>10,.1f} {r['tokens_per_s']:>11,.0f} "
                     f"{r['tflops']:>9.3g} {share:>7} {r['peak_memory_mib']:>9,.0f} "
                     f"{100 * r['padding_fraction']:>6.1f}  {r['dtype']}{judged}")
        recipes.append(f"  {model} {method} {side}: {r['recipe']}; {r['padding']}")
    return lines, recipes


def equal_numbers(results: dict, key: str) -> str:
    """'equal numbers (plain_bf16 max |p diff| 0.0021 <= 0.02, ...)' or why not."""
    agreement = side_figures(results, key, "agreement")
    if not agreement:
        return "numbers not comparable (the Trainer's model pools otherwise)"
    compared = [(side, results[f"{key}.agreement.{side}.max_diff"],
                 results[f"{key}.agreement.{side}.tolerance"])
                for side in ("plain", "plain_bf16")
                if f"{key}.agreement.{side}.max_diff" in results]
    diffs = ", ".join(f"{side} max |p diff| {diff:g} {'<=' if diff <= tol else '>'} {tol:g}"
                      for side, diff, tol in compared)
    return f"{'equal' if agreement['equal'] else 'UNEQUAL'} numbers ({diffs})"
