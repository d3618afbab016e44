"""Our side of the benchmark: the project's own code on a case.

Training is `textclf.train.loop.train_classifier` on the model of
`textclf.modeling.classifier.build_classifier` (params.yaml plus overrides, so every engine knob it
sets is measured as configured); scoring and evaluation are
`textclf.modeling.inference.predict_logits`. Whole runs (train_run, eval_run) time the same calls
from start to end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from cases import NUM_LABELS, PROBABILITIES, TRAINING_METHODS, WHOLE_RUNS, Case, Settings, first
from flops import (
    cache_build_flops,
    flops_per_token,
    real_tokens,
    trainable_params,
    whole_run_flops,
)
from meter import CountingCollator, Meter, measured_figures, reset_peak_memory, significant

from textclf.core.families import checked_config_and_family
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator, pad_multiple_for, scoring_tokens
from textclf.modeling.classifier import build_classifier
from textclf.modeling.inference import compiled_scorer, predict_logits, softmax
from textclf.train.loop import Recipe, train_classifier
from textclf.train.zero_shot import build_zero_shot


def run_ours(case: Case, settings: Settings, device: torch.device, quiet: Callable) -> dict:
    """The project's code on the case, exactly as the train and evaluate stages call it."""
    params = case.params
    _, family = checked_config_and_family(params)
    accelerator = make_accelerator(params.train.mixed_precision)
    memory_kind = reset_peak_memory(device)
    training = case.method in TRAINING_METHODS
    whole = case.method in WHOLE_RUNS
    if case.method == "zero_shot":
        clf = build_zero_shot(str(case.model_dir), family, case.answer_ids)
    else:
        torch.manual_seed(params.seed)
        clf = build_classifier(params, family, NUM_LABELS)
    # train.compile compiles training; eval.compile the evaluate stage's scoring
    compiled = params.train.compile if training else params.eval.compile
    # Our loop trains in training mode and scores (validation, frozen-block cache) in eval mode
    collator = CountingCollator(
        Collator(case.fmt, case.pad_id, pad_multiple_for(device, training and compiled)),
        lambda: clf.training)
    meter = Meter(device, collator)
    cache = "off"  # where the loop kept the frozen-block cache (train.cache_frozen)
    if training:
        # a whole run: the call, start to end (the cache build and each epoch's validation in it)
        window = (meter.timed(training_only=True) if whole else
                  meter.training(settings.warmup, settings.steps))
        with window:
            result = train_classifier(clf, case.train, case.val, collator,
                                      Recipe.from_params(params), accelerator,
                                      checkpointer=None, live=None, log=quiet)
        cache = result.frozen_cache
        t = params.train
        adapted = (f"lora r {params.lora.r} on the last {params.lora.trainable_blocks} blocks"
                   if params.method == "lora" else
                   f"finetune trainable_blocks {params.finetune.trainable_blocks}")
        what = (f"textclf.train.loop.train_classifier, {adapted}, AdamW lr "
                f"{params.learning_rate:g}, grad clip {t.grad_clip:g}, compile "
                f"{str(t.compile).lower()}, cache_frozen {str(t.cache_frozen).lower()} "
                f"({'off' if cache == 'off' else 'on the ' + cache})")
        if whole:
            what += (f", {t.epochs} epochs, validation each epoch ({len(case.val)} texts, the "
                     "best epoch kept)")
        padding = (("length-grouped" if t.group_by_length else "shuffled") +
                   f" batches padded to their longest (multiple of {collator.pad_multiple})")
    else:
        clf = clf.to(device)
        if case.head is not None:  # the head both sides score with (cases.Case.head)
            with torch.no_grad():
                clf.head.weight.copy_(torch.from_numpy(case.head))
                clf.head.bias.zero_()
        forward = compiled_scorer(clf) if compiled else None  # as the evaluate stage
        if not whole:  # a whole evaluation runs as the evaluate stage runs it: no warm-up
            # warm-up: a batch; compiled, every batch (its second width compiles again)
            warmup = case.test if compiled else first(case.test, settings.eval_batch_size)
            predict_logits(clf, warmup, collator, settings.eval_batch_size, accelerator,
                           forward)
        with meter.timed():
            logits = predict_logits(clf, case.test, collator, settings.eval_batch_size,
                                    accelerator, forward)
        what = "textclf.modeling.inference.predict_logits" + (
            ", eval.compile true (inductor, weights frozen in)" if compiled else "") + (
            " on textclf.train.zero_shot.build_zero_shot (answer-word rows of the LM head)"
            if case.method == "zero_shot" else " on textclf.modeling.classifier.build_classifier")
        bound = scoring_tokens(device)
        padding = ("sorted by length, padded to the batch's longest (multiple of "
                   f"{collator.pad_multiple})" + (f", at most {bound} tokens a batch"
                                                   if bound is not None else ""))
    cached = cache != "off"
    flops = flops_per_token(clf, family, training, cached)
    if cached:
        flops["cache_build_flops"] = cache_build_flops(flops, [case.train, case.val], case.fmt)
    dtype = "bf16 autocast, fp32 weights" if accelerator.mixed_precision == "bf16" else "fp32"
    out = {**measured_figures(meter, device, flops["flops_per_token"], memory_kind,
                              training and not whole),
           "recipe": what, "dtype": dtype, "padding": padding, **flops,
           "trainable_params": trainable_params(clf) if training else 0}
    if case.head is not None:
        out[PROBABILITIES] = softmax(logits)
    if case.method == "train_run":  # every FLOP in the clock, not the training steps' alone
        out["flops"] = whole_run_flops(flops, real_tokens(case.train, case.fmt),
                                       real_tokens(case.val, case.fmt), params.train.epochs,
                                       cached, ours=True)
        out["tflops"] = significant(out["flops"] / meter.seconds / 1e12)
    return out
