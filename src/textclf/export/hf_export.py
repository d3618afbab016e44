"""Export a trained model as a standard Hugging Face model directory, and load one back.

models/ holds only what was trained, to be rebuilt on the base model (textclf.json). An export
stands alone: config.json with the class names (id2label), the full weights (LoRA merged, so no
peft), the tokenizer files set up to cut and pad texts as training did, and (written by the
stage) a model card, so that

    pipeline("text-classification", model="export", truncation=True, top_k=None)

gives the evaluate stage's probabilities. What is exported:

- GPT-2 and GPT-NeoX with a linear head: the stock GPT2/GPTNeoXForSequenceClassification, which
  pool the rightmost token that is not the pad token: with right padding, the last real token.
  Their `score` head has no bias and ours has one: the bias is folded into the final layer norm's
  bias (see fold_head_bias), which is exact because that norm feeds nothing but the head. So
  these load with no remote code, in any tool that knows the stock classes.
- every other family, and the attention head (train.head: attention) of any family: textclf's
  own class (textclf.export.hf_model), the base model under a model_type of its own. No stock
  class is exact for them: the encoders pool by masked mean, and the decoders' final RMSNorm has
  no bias to hold the head's (LlamaForSequenceClassification's head has none). Stock
  transformers refuses that model_type (rather than load another model and score other
  numbers); it loads in a process that ran `import textclf.export` (which registers the class,
  see hf_loading.register_exported_classes), or with trust_remote_code=True, from hf_model.py,
  copied into the directory and named by config.json's auto_map.

The tokenizer is the base model's, with: truncation side and model_max_length of training (the
text budget plus special tokens or prompt), right padding with the pad id training used, a
leading space before the text where training put one (a Prepend normalizer: GPT-2, Qwen2,
Gemma), special-token strings inside a text read as plain text (split_special_tokens, as
training encoded them), and for zero-shot runs the prompt around the text (a TemplateProcessing
post-processor). Tokenizers cut one side only: head_tail truncation is approximated (see
ExportNotes.exact_truncation).

config.json also carries `textclf`: the TrainedModelInfo of the run and the base tokenizer's own
special tokens, from which `textclf predict --model-dir export` rebuilds training's exact input
pipeline (head_tail included): see hf_loading.load_export.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from textclf.core.errors import ExportError
from textclf.core.families import Family, family_for
from textclf.core.model_loading import pretrained
from textclf.core.tokenization import TextTokenizer, load_tokenizer, tokenize_split
from textclf.export.hf_loading import META_KEY, check_export_dir
from textclf.modeling.batching import Collator
from textclf.modeling.classifier import Classifier, base_model
from textclf.modeling.model_info import TrainedModelInfo

TOLERANCE = 1e-4  # largest difference of a probability allowed between export and trained model
# tokenizer_config.json's tokenizer_class: the class that loads tokenizer.json as it is
GENERIC_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


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
    leading_space: bool  # the tokenizer adds a space before the text (GPT-2, Qwen2, Gemma)
    prompt: bool  # the tokenizer puts the zero-shot prompt around the text


@dataclass(frozen=True)
class ExportCheck:
    """The export beside the trained model on a few texts, both in float32."""

    n_texts: int
    n_cut: int  # texts longer than the text budget (truncated)
    max_diff: float  # largest |probability difference| over the texts cut exactly
    max_diff_head_tail: float | None  # the same over texts head_tail cut (not exact), if any
    # the export's (N, K) probabilities of the texts, in their order
    probabilities: np.ndarray = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class EvaluateAgreement:
    """The export (float32) beside the evaluate stage's own predictions of the same test texts,
    which it computed in `precision` (bf16 autocast where the hardware computes bf16)."""

    precision: str  # the evaluate stage's: "bf16 autocast" or "fp32"
    n_texts: int
    labels_agree: int  # texts whose predicted class is the same
    max_diff: float  # largest |probability difference|

    def shown(self, n_checked: int) -> str:
        """One clause for the log: how the export's labels and probabilities compare with
        evaluate's on the `n_checked` texts the export was checked on."""
        if self.n_texts == 0:
            return (f"beside evaluate's predictions ({self.precision}): none of the {n_checked} "
                    "checked texts compares (all over the limit, which evaluate scored whole)")
        skipped = ("" if self.n_texts == n_checked else
                   f" ({n_checked - self.n_texts} of the {n_checked} texts over the limit, "
                   "which evaluate scored whole, left out)")
        return (f"beside evaluate's predictions ({self.precision}): labels agree on "
                f"{self.labels_agree} of {self.n_texts}, probabilities within "
                f"{self.max_diff:.1e}{skipped}")


def agreement_with_evaluate(exported: np.ndarray, evaluated: np.ndarray,
                            precision: str) -> EvaluateAgreement:
    """How far the export's probabilities (ExportCheck.probabilities) are from the evaluate
    stage's (predictions.jsonl) for the same texts, in the same order."""
    exported, evaluated = np.asarray(exported), np.asarray(evaluated)
    if exported.shape != evaluated.shape:
        raise ExportError(f"the export scores {exported.shape} probabilities, the evaluate "
                          f"stage's predictions hold {evaluated.shape}: run the pipeline again "
                          "(dvc repro)")
    agree = int((exported.argmax(1) == evaluated.argmax(1)).sum())
    diff = float(np.abs(exported - evaluated).max(initial=0.0))
    return EvaluateAgreement(precision, len(exported), agree, diff)


# ---------------------------------------------------------------------------------------------
# Build and save the export

def export_model(clf: Classifier, info: TrainedModelInfo, out_dir: Path,
                 base_revision: str | None = None) -> ExportNotes:
    """Write the Hugging Face model directory of a loaded model (models.load_model, LoRA merged)
    into `out_dir`: config, weights, tokenizer files and, for textclf's own class, its
    modelling file.
    `base_revision` (see provenance.hub_commit) pins the tokenizer files and is recorded when
    the train stage could not record it."""
    base_revision = base_revision or info.base_revision
    info = dataclasses.replace(info, base_revision=base_revision)
    family = family_for(info.family)
    # training's, to compare with
    text_tokenizer = load_tokenizer(info.base_model, family, base_revision)
    model, remote_code, folded = hf_classifier(clf, info, family, text_tokenizer)
    tokenizer, notes = hf_tokenizer(info, text_tokenizer, base_revision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _set_generic_tokenizer_class(out_dir / "tokenizer_config.json")
    if remote_code:
        from textclf.export import hf_model

        shutil.copyfile(hf_model.__file__, out_dir / f"{hf_model.MODULE}.py")  # not its mode
    return ExportNotes(architecture=type(model).__name__, remote_code=remote_code,
                       bias_folded_into=folded, base_revision=base_revision, **notes)


def hf_classifier(clf: Classifier, info: TrainedModelInfo, family: Family,
                  text_tokenizer: TextTokenizer) -> tuple[nn.Module, bool, str | None]:
    """The transformers model computing `clf`: (model, needs remote code, folded bias name).
    A stock class where one is exact (a linear head on the last real token, with a final norm
    whose bias can hold the head's: GPT-2, GPT-NeoX), textclf's own class otherwise."""
    backbone = base_model(clf)
    names = info.label_names
    labels = {"id2label": dict(enumerate(names)),
              "label2id": {name: i for i, name in enumerate(names)},
              "problem_type": "single_label_classification"}
    meta = {**dataclasses.asdict(info), "text_prefix": text_tokenizer.special_prefix,
            "text_suffix": text_tokenizer.special_suffix}
    dtype = next(backbone.parameters()).dtype
    if clf.attention is None and can_fold_head_bias(backbone, family):
        model = stock_classifier(clf, backbone, family, labels, info.pad_id).to(dtype).eval()
        setattr(model.config, META_KEY, meta)
        return model, False, fold_head_bias(clf.head, model.base_model, family)
    model = own_classifier(clf, backbone, family, labels).to(dtype).eval()
    setattr(model.config, META_KEY, meta)
    return model, True, None


def can_fold_head_bias(backbone: nn.Module, family: Family) -> bool:
    """Whether the stock class of the family computes the classifier, the head's bias folded
    into the final norm's: pooling the last real token, and a final norm with a bias."""
    if family.pooling != "last" or family.final_norm is None:
        return False
    return getattr(backbone.get_submodule(family.final_norm), "bias", None) is not None


def stock_classifier(clf: Classifier, backbone: nn.Module, family: Family, labels: dict,
                     pad_id: int) -> nn.Module:
    """The stock <Family>ForSequenceClassification with the trained weights, its `score` head
    (no bias) holding the head's weight; the bias is left to fold_head_bias."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(backbone.config)
    for key, value in labels.items():
        setattr(config, key, value)
    config.pad_token_id = pad_id  # the stock classes pool the last token that is not it
    model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    model.base_model.load_state_dict(backbone.state_dict(), strict=True)
    with torch.no_grad():
        model.score.weight.copy_(clf.head.weight)
    return model


def own_classifier(clf: Classifier, backbone: nn.Module, family: Family, labels: dict):
    """textclf's own class (textclf.export.hf_model) holding `clf`'s weights, with auto_map
    naming the copied modelling file's classes."""
    from textclf.export.hf_model import (
        AUTO_MAP,
        TextclfClassifierConfig,
        TextclfForSequenceClassification,
    )

    attention = clf.attention
    config = TextclfClassifierConfig(
        base_config=copy.deepcopy(backbone.config), pooling=family.pooling,
        attention_heads=None if attention is None else attention.num_heads,
        attention_dropout_rate=0.0 if attention is None else attention.dropout,
        head_dropout=clf.dropout.p, base_kwargs=dict(family.base_kwargs), **labels)
    config.auto_map = dict(AUTO_MAP)
    model = TextclfForSequenceClassification(config)
    model.backbone.load_state_dict(backbone.state_dict(), strict=True)
    if attention is not None:
        model.attention.load_state_dict(attention.state_dict())
    model.classifier.load_state_dict(clf.head.state_dict())
    return model


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
    tokenizer = pretrained(
        AutoTokenizer, source, what="the tokenizer of model", revision=base_revision,
        model_max_length=budget + len(prefix) + len(suffix), truncation_side=side,
        padding_side="right",  # the stock classes pool the last non-pad token: pad on the right
        split_special_tokens=True)  # "<|endoftext|>" in a review is text, as in training
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(info.pad_id)
    if text_tokenizer.leading_space:
        _prepend_space(tokenizer)
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
    pre-tokenizer. PreTrainedTokenizerFast is the generic class under transformers 4 and 5.
    The settings from which the generic class would rebuild a part are dropped too:
    add_bos_token / add_eos_token (its post-processor: Llama's <s>, or the zero-shot prompt)
    and add_prefix_space (the leading space is the normalizer's, see _prepend_space)."""
    data = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    data["tokenizer_class"] = GENERIC_TOKENIZER_CLASS
    for key in ("add_bos_token", "add_eos_token", "add_prefix_space"):
        data.pop(key, None)
    tokenizer_config.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n",
                                encoding="utf-8")


def _prepend_space(tokenizer) -> None:
    """Put a space before every text, first thing, as training encoded " " + text: a Prepend
    normalizer ahead of the tokenizer's own normalizers (Gemma's turns spaces into "▁" after
    it). Exact for any tokenizer, where turning on a ByteLevel pre-tokenizer's
    add_prefix_space is not: behind Qwen2's Split it would put a space before every piece.
    (Strings the tokenizer reads as added tokens that are not special split a text into pieces
    normalized one by one: a space would go before each; check_export would report it.)"""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    own = backend.normalizer
    backend.normalizer = (normalizers.Prepend(" ") if own is None
                          else normalizers.Sequence([normalizers.Prepend(" "), own]))


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
    text_tokenizer = load_tokenizer(info.base_model, family, info.base_revision)
    split = tokenize_split(text_tokenizer, texts, np.zeros(len(texts), dtype=np.int64),
                           info.max_tokens, info.truncation, info.head_tokens)
    ours = [info.input_format.apply(ids.tolist()) for ids in split.ids]
    cut = split.full_lengths > split.lengths
    exact = ~cut if info.truncation == "head_tail" else np.ones(len(texts), dtype=bool)

    check_export_dir(export_dir)
    tokenizer = pretrained(AutoTokenizer, export_dir, what="the exported tokenizer")
    model = pretrained(AutoModelForSequenceClassification, export_dir, dtype=torch.float32,
                       use_safetensors=True).eval()
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
                        max_diff_head_tail=float(diff[~exact].max()) if (~exact).any() else None,
                        probabilities=torch.cat(exported).numpy())
    if check.max_diff > tolerance:
        worst = int(np.argmax(np.where(exact, diff, -1.0)))
        raise ExportError(f"the export's probabilities differ from the trained model's by "
                          f"{check.max_diff:.2e} (> {tolerance:g}) on text {worst + 1} "
                          f"({texts[worst][:60]!r}...)")
    return check
