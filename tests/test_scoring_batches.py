"""Scoring batches (textclf.modeling.batching.sorted_batches, predict_logits): texts sorted by
length, at most eval.batch_size a batch and, on a CPU, at most scoring_tokens tokens (texts times
the padded width); every text in one batch; the same logits as each text scored alone."""

import numpy as np
import pytest
import torch
from test_models import TEXTS, build, tokenizer_of

from textclf.core.tokenization import InputFormat, classifier_format, tokenize_split
from textclf.modeling import batching
from textclf.modeling.accelerator import make_accelerator
from textclf.modeling.batching import Collator, scoring_tokens, sorted_batches
from textclf.modeling.inference import predict_logits

LONGER = TEXTS + ["Fine.", "Not my kind of film, though the music was lovely and the cast tried.",
                  "Dull.", "An odd, slow, beautiful thing; I would watch it again tomorrow."]


def check_batches(batches, widths, batch_size, max_tokens):
    assert sorted(i for b in batches for i in b) == list(range(len(widths)))  # each text once
    in_order = [int(widths[i]) for b in batches for i in b]
    assert in_order == sorted(in_order, reverse=True)  # longest first
    for k, b in enumerate(batches):
        tokens = len(b) * int(widths[b[0]])
        assert len(b) <= batch_size
        assert tokens <= max_tokens or len(b) == 1
        if k + 1 < len(batches):  # full: the next text would not have fitted
            assert len(b) == batch_size or (len(b) + 1) * int(widths[b[0]]) > max_tokens


@pytest.mark.parametrize("max_tokens", [1, 50, 333, 4096])
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_sorted_batches_hold_at_most_the_texts_and_the_tokens(batch_size, max_tokens):
    widths = np.random.default_rng(batch_size + max_tokens).integers(1, 300, size=101)
    check_batches(sorted_batches(widths, batch_size, max_tokens), widths, batch_size,
                  max_tokens)


def test_without_a_token_bound_batches_are_of_batch_size_texts():
    widths = np.array([3, 9, 1, 9, 4, 7, 2])
    assert sorted_batches(widths, 3) == [[1, 3, 5], [4, 0, 6], [2]]


def test_a_text_longer_than_the_bound_is_a_batch_of_its_own():
    assert sorted_batches(np.array([10, 500, 20, 30]), 8, 64) == [[1], [3, 2], [0]]


@pytest.mark.parametrize("threads", [1, 2, 3, 64])
def test_the_bound_is_per_thread_on_a_cpu_and_none_on_gpus(monkeypatch, threads):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert scoring_tokens(torch.device("cpu")) == max(
        batching.CPU_SCORING_TOKENS_LEAST, threads * batching.CPU_SCORING_TOKENS_PER_THREAD)
    assert scoring_tokens(torch.device("cuda")) is None
    assert scoring_tokens(torch.device("mps")) is None


@pytest.mark.parametrize("pad_multiple", [1, 8])
def test_the_collator_says_the_width_it_pads_to(pad_multiple):
    collator = Collator(InputFormat((1, 2), (3,)), 0, pad_multiple)
    for longest in (1, 5, 13):
        items = [(0, list(range(10, 10 + longest)), 0), (1, [7], 1)]
        assert collator(items)["input_ids"].shape[1] == collator.width(longest)
    assert list(collator.width(np.array([1, 5]))) == [collator.width(1), collator.width(5)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_cpu_scores_in_batches_of_at_most_the_bound_with_the_same_logits(
        tiny_dirs, data_dir, monkeypatch, precision):
    """A bound of 24 tokens a thread: the 8 texts (5 to 21 GPT-2 tokens) in batches of at most
    24 x threads tokens, not one batch of 8, with the logits each text has scored alone."""
    clf = build(tiny_dirs, data_dir, "gpt2").eval()
    tok = tokenizer_of(tiny_dirs, "gpt2")
    split = tokenize_split(tok, LONGER, np.zeros(len(LONGER), dtype=np.int64), 64, "left", 0)
    collator = Collator(classifier_format(tok), tok.pad_id)
    accelerator = make_accelerator(precision, "cpu")
    alone = predict_logits(clf, split, collator, 1, accelerator)
    monkeypatch.setattr(batching, "CPU_SCORING_TOKENS_PER_THREAD", 24)
    monkeypatch.setattr(batching, "CPU_SCORING_TOKENS_LEAST", 0)
    bound = scoring_tokens(torch.device("cpu"))
    shapes = []

    def forward(batch):
        shapes.append(tuple(batch["input_ids"].shape))
        return clf(batch["input_ids"], batch["attention_mask"])

    logits = predict_logits(clf, split, collator, 8, accelerator, forward)
    widths = collator.width(split.lengths)
    assert sorted(n for n, _ in shapes) != [8] and sum(n for n, _ in shapes) == len(LONGER)
    check_batches(sorted_batches(widths, 8, bound), widths, 8, bound)
    assert shapes == [(len(b), int(widths[b[0]])) for b in sorted_batches(widths, 8, bound)]
    np.testing.assert_allclose(logits, alone, rtol=0, atol=1e-5 if precision == "fp32" else 2e-2)
