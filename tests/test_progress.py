"""Progress bars (training, validation and scoring, the frozen-block cache) show to a person at a
terminal, and stay out of logs and CI output."""

import io
import sys

import numpy as np
import pytest
from support.tensors import run_params

from textclf.core.families import FAMILIES
from textclf.core.progress import progress_bar, show_progress
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import build_classifier
from textclf.train.loop import Recipe, train_classifier

TEXTS = ["A wonderful film.", "Terrible, boring and far too long.", "Great.", "Dull.",
         "The acting is superb.", "I hated every minute of it."]
LABELS = [1, 0, 1, 0, 1, 0]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, and keeps what is written to it."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("ci, stream, shown", [
    (None, Terminal(), True),
    ("true", Terminal(), False),  # GitHub Actions, GitLab CI and most services set CI=true
    ("1", Terminal(), False),
    ("false", Terminal(), True),
    (None, io.StringIO(), False),  # a log file or a pipe
])
def test_bars_show_at_a_terminal_only_and_never_under_ci(monkeypatch, ci, stream, shown):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(sys, "stderr", stream)
    assert show_progress() is shown
    with progress_bar(range(3), desc="counting", unit="step") as bar:
        assert list(bar) == [0, 1, 2]
    assert ("counting" in stream.getvalue()) is shown
    with progress_bar(range(3), desc="elsewhere", unit="step", enabled=False) as bar:
        list(bar)  # another process than the main one: never a bar
    assert "elsewhere" not in stream.getvalue()


@pytest.mark.parametrize("ci", [None, "true"])
def test_training_validation_and_the_cache_show_progress(tiny_dirs, data_dir, accelerator,
                                                         monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    params = run_params(tiny_dirs["gpt2"], data_dir, train={"epochs": 1, "cache_frozen": True})
    tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
    train = tokenize_split(tok, TEXTS, np.array(LABELS), 64, "left", 0)
    val = tokenize_split(tok, TEXTS[:4], np.array(LABELS[:4]), 64, "left", 0)
    clf = build_classifier(params, FAMILIES["gpt2"], 2)
    train_classifier(clf, train, val, Collator(classifier_format(tok), tok.pad_id),
                     Recipe(params.train, params.learning_rate, 4, params.seed), accelerator,
                     log=lambda *a: None)
    shown = terminal.getvalue()
    for bar in ("train", "cache train", "cache val", "validate"):
        assert (f"{bar}:" in shown) is (ci is None), bar
