"""Tiny random models of the families beyond GPT-2, BERT and GPT-NeoX, each with a small
vocabulary trained on the fixture texts and saved by the tokenizer class its hub models ship
with (Llama-2-style SentencePiece BPE, Qwen2's and RoBERTa's byte-level BPE, Gemma's BPE with no
dummy prefix, XLM-R's and DeBERTa-v3's Unigram, DistilBERT's WordPiece, ModernBERT's generic
fast tokenizer), offline, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

from support.tiny import _wordpiece_tokenizer, corpus_texts, with_cls_and_sep

# family -> the hub tokenizer class (its reference models: meta-llama/Llama-2-7b-hf,
# Qwen/Qwen2.5-0.5B, mistralai/Mistral-7B-v0.1, google/gemma-3-1b-pt,
# microsoft/Phi-3-mini-4k-instruct, FacebookAI/roberta-base, FacebookAI/xlm-roberta-base,
# distilbert/distilbert-base-uncased, microsoft/deberta-v3-base, answerdotai/ModernBERT-base)
TOKENIZER_CLASS = {
    "llama": "LlamaTokenizer", "qwen2": "Qwen2Tokenizer", "mistral": "LlamaTokenizer",
    "gemma3_text": "GemmaTokenizer", "phi3": "LlamaTokenizer", "roberta": "RobertaTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer", "distilbert": "DistilBertTokenizer",
    "deberta-v2": "DebertaV2Tokenizer", "modernbert": "PreTrainedTokenizerFast",
}
NEW_FAMILIES = list(TOKENIZER_CLASS)
DECODERS = ["llama", "qwen2", "mistral", "gemma3_text", "phi3"]
ENCODERS = [name for name in NEW_FAMILIES if name not in DECODERS]

SPECIALS = {  # in vocabulary order, as the hub vocabularies have them
    "sentencepiece": ["<unk>", "<s>", "</s>"],
    "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
    "qwen": ["<|endoftext|>"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
}


def _trained(model, pre_tokenizer, trainer, normalizer=None) -> dict:
    """The model part of tokenizer.json of a tokenizer trained on the fixture texts."""
    from tokenizers import Tokenizer

    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(corpus_texts(), trainer)
    return json.loads(tok.to_str())["model"]


def bpe_vocabulary(specials: list[str], byte_level: bool, size: int = 600):
    """(vocab, merges) of a BPE trained on the fixture texts: byte-level (GPT-2's "Ġ") or with
    SentencePiece's "▁" for spaces."""
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    if byte_level:
        pre, normalizer = pre_tokenizers.ByteLevel(add_prefix_space=False), None
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        normalizer, alphabet = normalizers.Replace(" ", "▁"), []
    model = _trained(models.BPE(), pre, trainers.BpeTrainer(
        vocab_size=size, special_tokens=specials, initial_alphabet=alphabet), normalizer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def unigram_vocabulary(specials: list[str], unk: str, size: int = 600) -> list[tuple[str, float]]:
    from tokenizers import models, pre_tokenizers, trainers

    model = _trained(models.Unigram(), pre_tokenizers.Metaspace(), trainers.UnigramTrainer(
        vocab_size=size, special_tokens=specials, unk_token=unk))
    return [tuple(piece) for piece in model["vocab"]]


def family_tokenizer(family: str):
    """A small tokenizer of the class `family`'s hub models ship with."""
    import transformers

    cls = getattr(transformers, TOKENIZER_CLASS[family])
    if family in ("llama", "mistral", "phi3"):
        vocab, merges = bpe_vocabulary(SPECIALS["sentencepiece"], byte_level=False)
        return cls(vocab=vocab, merges=merges, add_bos_token=family != "phi3")
    if family == "gemma3_text":
        vocab, merges = bpe_vocabulary(SPECIALS["gemma"], byte_level=False)
        return cls(vocab=vocab, merges=merges)
    if family == "qwen2":
        return cls(*bpe_vocabulary(SPECIALS["qwen"], byte_level=True))
    if family == "roberta":
        return cls(*bpe_vocabulary(SPECIALS["roberta"], byte_level=True))
    if family == "xlm-roberta":
        return cls(vocab=unigram_vocabulary(SPECIALS["roberta"], "<unk>"))
    if family == "deberta-v2":
        return cls(vocab=unigram_vocabulary(SPECIALS["bert"], "[UNK]"))
    if family == "distilbert":
        return cls(vocab=_wordpiece_tokenizer().get_vocab(), do_lower_case=True)
    if family == "modernbert":
        return _modernbert_tokenizer()
    raise ValueError(f"no tiny tokenizer for family {family!r}")


def _modernbert_tokenizer():
    """ModernBERT's kind: a byte-level BPE with [CLS] text [SEP], as a generic fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = bpe_vocabulary(SPECIALS["bert"], byte_level=True)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return with_cls_and_sep(tok)


def family_model_dir(family: str, directory: Path, layers: int = 4, dropout: float = 0.1,
                     seed: int = 0) -> Path:
    """A randomly initialised `layers`-block, 32-wide model of `family` with its tokenizer, saved
    as a local Hugging Face directory (benchmarks/random_models.py builds the model)."""
    from random_models import save_random_model

    directory = Path(directory)
    tok = family_tokenizer(family)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos  # (Phi-3's config needs one)
    save_random_model(family, directory, seed, layers=layers, width=32, heads=2, vocab=len(tok),
                      intermediate=64, positions=512, dropout=dropout, eos_id=eos, pad_id=pad)
    tok.save_pretrained(directory)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if family == "modernbert":  # transformers saves the generic class as TokenizersBackend
        config["tokenizer_class"] = TOKENIZER_CLASS[family]  # the name the hub's file has
        config_file.write_text(json.dumps(config, indent=2))
    assert config["tokenizer_class"] == TOKENIZER_CLASS[family], config["tokenizer_class"]
    return directory


# The families every default test run covers (one of each kind: GPT-2's Conv1D, BERT, GPT-NeoX, a
# Llama-style decoder, ModernBERT); tests parametrised with by_family run the other families
# with --runslow (CI runs both)
QUICK_FAMILIES = ("gpt2", "bert", "gpt_neox", "llama", "modernbert")


def by_family(cases) -> list:
    """pytest params of `cases` (tuples whose first item is a family, or family names): those of
    QUICK_FAMILIES in the default run, the others marked slow."""
    import pytest

    cases = [case if isinstance(case, tuple) else (case,) for case in cases]
    return [pytest.param(*case, marks=() if case[0] in QUICK_FAMILIES else pytest.mark.slow)
            for case in cases]
