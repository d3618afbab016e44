"""Load an export: textclf's own classes registered with transformers, the rule that no code
from a model directory runs, and the export behind the Classifier interface for
`textclf predict --model-dir export`.

textclf loads every model directory without trust_remote_code. An export of textclf's own class
(textclf.export.hf_model: every family but GPT-2's and GPT-NeoX's linear head) has a model_type
stock transformers does not know; register_exported_classes (run by `import textclf.export`) maps
it to the class in this package, so no code is read from the directory. A directory whose
config.json or tokenizer_config.json names any other code (`auto_map`) is refused
(check_no_foreign_code), and so is an export of an older textclf's classes (one per family,
in hf_pooling.py and hf_attention.py): it must be exported again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from textclf.core.errors import ModelLoadError
from textclf.core.families import family_for
from textclf.core.tokenization import TextTokenizer, load_tokenizer
from textclf.modeling.classifier import fuse_gelu_tanh
from textclf.modeling.model_info import INFO_FILE, TrainedModelInfo

META_KEY = "textclf"  # config.json key: the run's TrainedModelInfo and the base tokenizer's specials
# What older textclf exports name: a class per family (BERT's mean pooling, the attention head)
OLDER_MODEL_TYPES = ("textclf-bert-mean-pooled", "textclf-gpt2-attention-head",
                     "textclf-bert-attention-head", "textclf-gpt-neox-attention-head")
OLDER_MODULES = ("hf_pooling.", "hf_attention.")  # the modelling files they were copied with


def register_exported_classes() -> None:
    """Make AutoConfig and AutoModelForSequenceClassification (and so pipeline()) load the
    exports of textclf's own classes from this process's textclf, with no remote code.
    `import textclf.export` calls it."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from textclf.export.hf_model import TextclfClassifierConfig, TextclfForSequenceClassification

    AutoConfig.register(TextclfClassifierConfig.model_type, TextclfClassifierConfig,
                        exist_ok=True)
    AutoModelForSequenceClassification.register(TextclfClassifierConfig,
                                                TextclfForSequenceClassification, exist_ok=True)


class ExportedClassifier(nn.Module):
    """An exported transformers model behind the Classifier interface: logits of a batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def is_export(model_dir: Path) -> bool:
    """A directory written by export_model (config.json, no textclf.json of a train stage)."""
    model_dir = Path(model_dir)
    return (model_dir / "config.json").is_file() and not (model_dir / INFO_FILE).is_file()


def check_no_foreign_code(model_dir: Path) -> None:
    """Refuse a model directory whose config.json or tokenizer_config.json names code other than
    textclf's own class (`auto_map`). textclf never runs code from a model directory: it loads
    without trust_remote_code, its own class registered in this process
    (register_exported_classes), so a directory that needs other code cannot load as intended.
    An export of an older textclf's classes is refused with the advice to export it again."""
    from textclf.export.hf_model import AUTO_MAP, MODEL_TYPE

    model_dir = Path(model_dir)
    for name in ("config.json", "tokenizer_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path} is not valid JSON ({e})") from None
        data = data if isinstance(data, dict) else {}
        auto_map = data.get("auto_map") or {}
        if not isinstance(auto_map, dict):  # tokenizer_config.json's older form: a list
            auto_map = {"AutoTokenizer": auto_map}
        model_type = data.get("model_type")
        older = str(model_type) in OLDER_MODEL_TYPES or any(
            str(ref).startswith(OLDER_MODULES) for ref in auto_map.values())
        ours = name == "config.json" and all(AUTO_MAP.get(k) == ref for k, ref in auto_map.items())
        if older or (auto_map and ours and model_type != MODEL_TYPE):
            raise ModelLoadError(
                f"{path} names a class of textclf's but not as this textclf writes it (model_type "
                f"{model_type!r}, auto_map {auto_map}): it was exported by an older textclf, "
                "which stock transformers would load as another model or not at all. Export it "
                "again (dvc repro export)")
        if auto_map and not ours:
            key, ref = next((k, r) for k, r in auto_map.items()
                            if name != "config.json" or AUTO_MAP.get(k) != r)
            raise ModelLoadError(
                f"{path} names code that is not textclf's (auto_map {key}: {ref}); textclf "
                "never runs code from a model directory. Load it with transformers and "
                "trust_remote_code=True only if you trust that code")


def load_export(model_dir: Path) -> tuple[ExportedClassifier, TrainedModelInfo, TextTokenizer]:
    """An export in eval mode, the run's description, and textclf's tokenizer on the export's
    tokenizer files with the base tokenizer's special tokens: with them, predict cuts texts
    exactly as training did (head_tail too), while the prompt comes from the TrainedModelInfo."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    check_no_foreign_code(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    meta = getattr(config, META_KEY, None)
    if not isinstance(meta, dict):
        raise FileNotFoundError(f"{model_dir}/config.json has no {META_KEY!r} entry: it is not "
                                "a model exported by textclf (stages/export.py)")
    fields = {f.name for f in dataclasses.fields(TrainedModelInfo)}
    info = TrainedModelInfo(**{k: v for k, v in meta.items() if k in fields})
    tokenizer = dataclasses.replace(load_tokenizer(str(model_dir), family_for(info.family)),
                                    special_prefix=list(meta["text_prefix"]),
                                    special_suffix=list(meta["text_suffix"]))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    fuse_gelu_tanh(model)  # the same function, faster (GPT-2's activation)
    return ExportedClassifier(model).eval().requires_grad_(False), info, tokenizer
