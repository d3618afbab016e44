"""Export a trained model as a standard Hugging Face model directory, and load one back.

models/ holds only what was trained, to be rebuilt on the base model (textclf.json). An export
stands alone: config.json with the class names (id2label), the full weights (LoRA merged, so no
peft), the tokenizer files set up to cut and pad texts as training did, and (written by the
stage) a model card, so that

    pipeline("text-classification", model="export", truncation=True, top_k=None)

gives the evaluate stage's probabilities. What is exported depends on the family's pooling:

- last real token (GPT-2, GPT-NeoX): the stock GPT2/GPTNeoXForSequenceClassification, which
  pool the rightmost token that is not the pad token: with right padding, the last real token.
  Their `score` head has no bias and ours has one: the bias is folded into the final layer norm's
  bias (see fold_head_bias), which is exact because that norm feeds nothing but the head. So
  these load with no remote code, in any tool that knows the stock classes.
- the attention head (train.head: attention, any family): textclf.export.hf_attention's class
  of the family, with a model_type of its own, loaded as BERT's below (hf_attention.py copied).
- masked mean (BERT): no stock class pools so. The export has a model_type of its own, which
  stock transformers refuses to load (rather than load stock BERT with a random pooler), and
  loads one of two ways: in a process that ran `import textclf.export` (which registers the
  classes, see hf_loading.register_exported_classes), or with trust_remote_code=True, from
  textclf/export/hf_pooling.py, copied into the directory and named by config.json's auto_map.

The tokenizer is the base model's, with: truncation side and model_max_length of training (the
text budget plus special tokens or prompt), right padding with the pad id training used, a
leading space before the text for causal models (ByteLevel add_prefix_space), special-token
strings inside a text read as plain text (split_special_tokens, as training encoded them), and for
zero-shot runs the prompt around the text (a TemplateProcessing post-processor). Tokenizers cut
one side only: head_tail truncation is approximated (see ExportNotes.exact_truncation).

config.json also carries `textclf`: the TrainedModelInfo of the run and the base tokenizer's own special
tokens, from which `textclf predict --model-dir export` rebuilds training's exact input
pipeline (head_tail included): see hf_loading.load_export.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from textclf.core.errors import ExportError
from textclf.core.families import Family, family_for
from textclf.core.tokenization import TextTokenizer, load_tokenizer, tokenize_split
from textclf.export.hf_loading import META_KEY, check_no_foreign_code
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import Classifier, base_model
from textclf.modeling.model_info import TrainedModelInfo

TOLERANCE = 1e-4  # largest difference of a probability allowed between export and trained model
# The module an export of a mean-pooled family loads its class from (copied into the directory)
POOLING_MODULE = "hf_pooling"  # hf_pooling.AUTO_MAP names its classes under this name
# tokenizer_config.json's tokenizer_class: the class that loads tokenizer.json as it is
GENERIC_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# The head inside the exported class, per pooling: stock classes name it `score`
HEAD_MODULE = {"last": "score", "mean": "classifier"}


@dataclass(frozen=True)
class ExportNotes:
    """How the export computes what was trained: what the model card and the stage report."""

    architecture: str  # the class config.json names
    # textclf's own class: loads after `import textclf.export`, or with trust_remote_code=True
    # (the modelling file in the directory); stock transformers refuses it
    remote_code: bool
    bias_folded_into: str | None  # the final-norm bias holding the head's bias, if folded
    base_revision: str | None  # hub commit of the base model (weights and tokenizer files)
    max_length: int  # tokenizer model_max_length: text budget plus special tokens or prompt
    truncation_side: str  # left (keep the end) | right (keep the start)
    exact_truncation: bool  # False for head_tail, which a tokenizer cannot express
    leading_space: bool  # the tokenizer adds a space before the text (causal BPE)
    prompt: bool  # the tokenizer puts the zero-shot prompt around the text


@dataclass(frozen=True)
class ExportCheck:
    """The export beside the trained model on a few texts, in float32."""

    n_texts: int
    n_cut: int  # texts longer than the text budget (truncated)
    max_diff: float  # largest |probability difference| over the texts cut exactly
    max_diff_head_tail: float | None  # the same over texts head_tail cut (not exact), if any


# ---------------------------------------------------------------------------------------------
# Build and save the export

def export_model(clf: Classifier, info: TrainedModelInfo, out_dir: Path,
                 base_revision: str | None = None) -> ExportNotes:
    """Write the Hugging Face model directory of a loaded model (models.load_model, LoRA merged)
    into `out_dir`: config, weights, tokenizer files and, for BERT, the modelling file.
    `base_revision` (see hub_revision) pins the tokenizer files and is recorded when the train
    stage could not record it."""
    base_revision = base_revision or info.base_revision
    info = dataclasses.replace(info, base_revision=base_revision)
    family = family_for(info.family)
    text_tokenizer = load_tokenizer(info.base_model, family)  # training's, to compare with
    model, remote_code, folded = hf_classifier(clf, info, family, text_tokenizer)
    tokenizer, notes = hf_tokenizer(info, text_tokenizer, base_revision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _set_generic_tokenizer_class(out_dir / "tokenizer_config.json")
    if notes["leading_space"]:
        _set_add_prefix_space(out_dir / "tokenizer.json")
    if remote_code:
        from textclf.export import hf_attention, hf_pooling

        module = hf_attention if clf.attention is not None else hf_pooling
        shutil.copy(module.__file__, out_dir / Path(module.__file__).name)
    return ExportNotes(architecture=type(model).__name__, remote_code=remote_code,
                       bias_folded_into=folded, base_revision=base_revision, **notes)


def hf_classifier(clf: Classifier, info: TrainedModelInfo, family: Family,
                  text_tokenizer: TextTokenizer) -> tuple[nn.Module, bool, str | None]:
    """The transformers model computing `clf`: (model, needs remote code, folded bias name)."""
    from transformers import AutoModelForSequenceClassification

    backbone = base_model(clf)
    names = info.label_names
    config = copy.deepcopy(backbone.config)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    config.pad_token_id = info.pad_id  # the stock classes pool the last token that is not it
    config.problem_type = "single_label_classification"
    setattr(config, META_KEY, {**dataclasses.asdict(info),
                               "text_prefix": text_tokenizer.special_prefix,
                               "text_suffix": text_tokenizer.special_suffix})
    if clf.attention is not None:  # textclf's attention head: a class of our own, any family
        return attention_head_classifier(clf, config, family), True, None
    remote_code = family.pooling == "mean"
    if remote_code:
        from textclf.export.hf_pooling import BertForMeanPooledClassification

        if family.name != "bert":
            raise ExportError(f"no exported class pools the {family.name} family by masked mean "
                              f"(textclf/{POOLING_MODULE}.py has BERT's only)")
        config = own_config(config)
        model = BertForMeanPooledClassification(config)
    else:
        model = AutoModelForSequenceClassification.from_config(config)
    dtype = next(backbone.parameters()).dtype
    model = model.to(dtype).eval()
    model.base_model.load_state_dict(backbone.state_dict(), strict=True)
    head = model.get_submodule(HEAD_MODULE[family.pooling])
    folded = None
    with torch.no_grad():
        head.weight.copy_(clf.head.weight)
        if head.bias is not None:
            head.bias.copy_(clf.head.bias)
        else:
            folded = fold_head_bias(clf.head, model.base_model, family)
    return model, remote_code, folded


def attention_head_classifier(clf: Classifier, config, family: Family) -> nn.Module:
    """The family's class of textclf.export.hf_attention holding `clf`'s weights, under a
    model_type of its own (auto_map naming the copied modelling file's classes)."""
    from textclf.export.hf_attention import AUTO_MAPS, CLASSES

    config_class, model_class = CLASSES[family.name]
    values = config.to_dict()
    values.pop("model_type", None)
    own = config_class.from_dict(values)
    own.auto_map = dict(AUTO_MAPS[config_class.model_type])
    own.attention_heads = clf.attention.num_heads
    own.attention_dropout_rate = clf.attention.dropout
    own.head_dropout = clf.dropout.p
    backbone = base_model(clf)
    model = model_class(own).to(next(backbone.parameters()).dtype).eval()
    model.base_model.load_state_dict(backbone.state_dict(), strict=True)
    model.attention.load_state_dict(clf.attention.state_dict())
    model.classifier.load_state_dict(clf.head.state_dict())
    return model


def own_config(config):
    """BERT's config under the export's own model_type, with auto_map naming the classes of the
    copied modelling file."""
    from textclf.export.hf_pooling import AUTO_MAP, BertMeanPooledConfig

    values = config.to_dict()
    values.pop("model_type", None)
    own = BertMeanPooledConfig.from_dict(values)
    own.auto_map = dict(AUTO_MAP)
    return own


def fold_head_bias(head: nn.Linear, backbone: nn.Module, family: Family) -> str:
    """Move the head's bias b into the bias beta of the final layer norm, which feeds the head
    only: logits = W (g * x_hat + beta) + b = W (g * x_hat + beta + d) when W d = b. d is the
    least-norm solution, W^T (W W^T)^-1 b, computed in float64; it exists when the K rows of W
    are independent (K <= hidden size). Returns the name of the changed bias."""
    if family.final_norm is None:
        raise ExportError(f"the {family.name} family has no final layer norm to hold the head's "
                          "bias; its stock classification head has none")
    norm = backbone.get_submodule(family.final_norm)
    if getattr(norm, "bias", None) is None:
        raise ExportError(f"{family.final_norm} of the {family.name} family has no bias to "
                          "hold the head's bias")
    w = head.weight.detach().double().cpu()
    b = head.bias.detach().double().cpu()
    if int(torch.linalg.matrix_rank(w)) < w.shape[0]:
        raise ExportError("the head's rows are linearly dependent, so its bias cannot be folded "
                          "into the final layer norm exactly")
    shift = w.T @ torch.linalg.solve(w @ w.T, b)
    with torch.no_grad():
        norm.bias.copy_((norm.bias.double().cpu() + shift).to(norm.bias.dtype))
    return f"{family.final_norm}.bias"


def hf_tokenizer(info: TrainedModelInfo, text_tokenizer: TextTokenizer, base_revision: str | None):
    """The base model's tokenizer set up to produce training's input ids on its own, and the
    notes that describe it."""
    from transformers import AutoTokenizer

    budget = info.max_tokens - text_tokenizer.n_special  # text tokens, as tokenize_split
    prefix, suffix = list(info.input_prefix), list(info.input_suffix)
    if info.truncation == "head_tail":  # keep the side holding more of what training kept
        head = min(info.head_tokens, budget)
        side = "left" if budget - head >= head else "right"
    else:
        side = "left" if info.truncation == "left" else "right"
    source = info.base_model if info.tokenizer.startswith("tiktoken:") else info.tokenizer
    tokenizer = AutoTokenizer.from_pretrained(
        source, revision=base_revision,
        model_max_length=budget + len(prefix) + len(suffix), truncation_side=side,
        padding_side="right",  # the stock classes pool the last non-pad token: pad on the right
        split_special_tokens=True,  # "<|endoftext|>" in a review is text, as in training
        add_prefix_space=text_tokenizer.leading_space)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(info.pad_id)
    prompt = (prefix, suffix) != (text_tokenizer.special_prefix, text_tokenizer.special_suffix)
    if prompt:
        _put_prompt_around(tokenizer, prefix, suffix)
    return tokenizer, {"max_length": tokenizer.model_max_length, "truncation_side": side,
                       "exact_truncation": info.truncation != "head_tail",
                       "leading_space": text_tokenizer.leading_space, "prompt": prompt}


def _put_prompt_around(tokenizer, prefix: list[int], suffix: list[int]) -> None:
    """The tokenizer adds `prefix` before and `suffix` after every text, as it adds [CLS] and
    [SEP]: its truncation then keeps room for them, as training's did."""
    from tokenizers import processors

    def piece(name: str, ids: list[int]) -> dict:
        return {"id": name, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)}

    template, specials = ["$A"], []
    if prefix:
        template.insert(0, "<textclf_prompt_start>")
        specials.append(piece("<textclf_prompt_start>", prefix))
    if suffix:
        template.append("<textclf_prompt_end>")
        specials.append(piece("<textclf_prompt_end>", suffix))
    single = " ".join(template)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} $B:1", special_tokens=specials)


def _set_generic_tokenizer_class(tokenizer_config: Path) -> None:
    """Name the generic tokenizer class in a saved tokenizer_config.json, so that tokenizer.json
    (prompt included) is the tokenizer, loaded as written.

    The hub models' own classes rebuild parts of it on load from their settings:
    GPTNeoXTokenizer (Pythia) its post-processor, dropping the zero-shot prompt; GPT2Tokenizer its
    pre-tokenizer. PreTrainedTokenizerFast is the generic class under transformers 4 and 5."""
    data = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    data["tokenizer_class"] = GENERIC_TOKENIZER_CLASS
    tokenizer_config.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n",
                                encoding="utf-8")


def _set_add_prefix_space(tokenizer_json: Path) -> None:
    """Turn on add_prefix_space in every ByteLevel pre-tokenizer of a saved tokenizer.json.

    transformers keeps `add_prefix_space` in tokenizer_config.json and tokenizer classes with
    their own __init__ (GPT2Tokenizer) rebuild their pre-tokenizer from it, but a generic
    TokenizersBackend loads tokenizer.json as it is: both must say it."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    found = []

    def visit(node):
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and "add_prefix_space" in node:
                node["add_prefix_space"] = True
                found.append(node)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(data.get("pre_tokenizer"))
    if not found:
        raise ExportError(f"{tokenizer_json} has no ByteLevel pre-tokenizer: the leading space "
                          "training put before each text cannot be configured")
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n",
                              encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Check an export against the trained model

def check_export(export_dir: Path, clf: Classifier, info: TrainedModelInfo, texts: Sequence[str],
                 batch_size: int = 8, tolerance: float = TOLERANCE) -> ExportCheck:
    """Reload the export as a user does (AutoTokenizer, AutoModelForSequenceClassification,
    truncation=True) and score `texts` (cleaned) beside the trained model fed by textclf's own
    input pipeline, in float32. Raises ExportError when the token ids or the probabilities
    differ, except for the texts head_tail truncation cut (reported instead). The trained model
    is put in float32 (in place)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    family = family_for(info.family)
    text_tokenizer = load_tokenizer(info.base_model, family)
    split = tokenize_split(text_tokenizer, texts, np.zeros(len(texts), dtype=np.int64),
                           info.max_tokens, info.truncation, info.head_tokens)
    ours = [info.input_format.apply(ids.tolist()) for ids in split.ids]
    cut = split.full_lengths > split.lengths
    exact = ~cut if info.truncation == "head_tail" else np.ones(len(texts), dtype=bool)

    check_no_foreign_code(export_dir)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        export_dir, dtype=torch.float32).eval()
    theirs = tokenizer(list(texts), truncation=True)["input_ids"]
    for i in np.flatnonzero(exact):
        if theirs[i] != ours[i]:
            raise ExportError(
                f"the exported tokenizer gives other ids than training for text {i + 1} "
                f"({texts[i][:60]!r}...): {text_tokenizer.decode(theirs[i])[:80]!r} instead of "
                f"{text_tokenizer.decode(ours[i])[:80]!r}")

    collator = Collator(info.input_format, info.pad_id)
    reference, exported = [], []
    clf = clf.float().eval()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = range(start, min(start + batch_size, len(texts)))
            batch = collator([(i, split.ids[i], 0) for i in rows])
            reference.append(clf(batch["input_ids"], batch["attention_mask"]).softmax(-1))
            encoded = tokenizer([texts[i] for i in rows], truncation=True, padding=True,
                                return_tensors="pt")
            exported.append(model(**encoded).logits.softmax(-1))
    diff = (torch.cat(reference) - torch.cat(exported)).abs().amax(dim=1).numpy()
    check = ExportCheck(n_texts=len(texts), n_cut=int(cut.sum()),
                        max_diff=float(diff[exact].max(initial=0.0)),
                        max_diff_head_tail=float(diff[~exact].max()) if (~exact).any() else None)
    if check.max_diff > tolerance:
        worst = int(np.argmax(np.where(exact, diff, -1.0)))
        raise ExportError(f"the export's probabilities differ from the trained model's by "
                          f"{check.max_diff:.2e} (> {tolerance:g}) on text {worst + 1} "
                          f"({texts[worst][:60]!r}...)")
    return check
