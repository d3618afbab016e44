"""Load an export: textclf's own classes registered with transformers, what an export may say,
and the export behind the Classifier interface for `textclf predict --model-dir export`.

textclf loads every model directory with trust_remote_code=False (textclf.core.model_loading).
An export of textclf's own class (textclf.export.hf_model: every family but GPT-2's and
GPT-NeoX's linear head) has a model_type stock transformers does not know;
register_exported_classes (run by `import textclf.export`) maps it to the class in this package,
so no code is read from the directory. Before anything of an export loads, check_export_dir
refuses what would not load as textclf wrote it, in one line: code named that is not textclf's
class, a model_type of no family, textclf's class without the base model's config or with one
of no family, pickled or damaged weights, and the classes of older textclf versions (their
modelling files hf_pooling.py and hf_attention.py are gone): those are exported again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from textclf.core.errors import ModelLoadError
from textclf.core.families import family_for
from textclf.core.model_loading import (
    CONFIG_FILE,
    check_model_dir,
    pretrained,
    read_json_object,
    refuse_code,
)
from textclf.core.tokenization import TextTokenizer, load_tokenizer
from textclf.modeling.classifier import fuse_gelu_tanh
from textclf.modeling.model_info import INFO_FILE, TrainedModelInfo

# config.json key: the run's TrainedModelInfo and the base tokenizer's specials
META_KEY = "textclf"
# The modelling files older textclf versions copied into an export and named in its auto_map
# (BERT's mean pooling, as stock BERT's model_type or its own; the attention head, a class per
# family): this textclf has neither
OLDER_MODULES = ("hf_pooling.", "hf_attention.")
EXPORT_AGAIN = "export it again (dvc repro export)"


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


def check_export_dir(model_dir: Path) -> dict:
    """config.json of an export, read before anything of it loads, after refusing what would not
    load as textclf wrote it: the classes of an older textclf; code named that is not
    textclf's own class (registered in this process, so never read from the directory), pickled
    or damaged weights (model_loading.check_model_dir); a model_type of no family; and for
    textclf's class, a base config (the base model's) that is missing or of no family."""
    from textclf.export.hf_model import AUTO_MAP, MODEL_TYPE

    model_dir = Path(model_dir)
    path = model_dir / CONFIG_FILE
    config = read_json_object(path)
    model_type = config.get("model_type")
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and any(str(ref).startswith(OLDER_MODULES)
                                          for ref in auto_map.values()):
        raise ModelLoadError(
            f"{path} was exported by an older textclf (model_type {model_type!r}, auto_map "
            f"{auto_map}), whose classes this textclf does not have and stock transformers "
            "would load as another model or not at all. Export it again (dvc repro export)")
    check_model_dir(model_dir, own_classes=AUTO_MAP if model_type == MODEL_TYPE else None)
    if model_type != MODEL_TYPE:
        family_for(model_type, str(path))
        return config
    base = config.get("base_config")
    where = f"{path} (base_config)"
    if not isinstance(base, dict) or "model_type" not in base:
        raise ModelLoadError(f"{path} has no base_config with a model_type (the config of the "
                             f"base model, which textclf's class {MODEL_TYPE} holds): "
                             f"{EXPORT_AGAIN}")
    family = family_for(base["model_type"], where)
    refuse_code(base, where, {})
    base_kwargs = config.get("base_kwargs") or {}  # left out of config.json when empty
    if base_kwargs != dict(family.base_kwargs):
        raise ModelLoadError(f"{path} passes base_kwargs {base_kwargs} to the base model, where "
                             f"textclf passes {dict(family.base_kwargs)} to {family.name}: "
                             f"{EXPORT_AGAIN}")
    return config


def load_export(model_dir: Path) -> tuple[ExportedClassifier, TrainedModelInfo, TextTokenizer]:
    """An export in eval mode, the run's description, and textclf's tokenizer on the export's
    tokenizer files with the base tokenizer's special tokens: with them, predict cuts texts
    exactly as training did (head_tail too), while the prompt comes from the TrainedModelInfo.
    What the export says is checked before anything loads (check_export_dir)."""
    from transformers import AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    meta = check_export_dir(model_dir).get(META_KEY)
    if not isinstance(meta, dict):
        raise FileNotFoundError(f"{model_dir}/config.json has no {META_KEY!r} entry: it is not "
                                "a model exported by textclf (stages/export.py)")
    where = f"{model_dir / CONFIG_FILE} ({META_KEY!r} entry)"
    info = TrainedModelInfo.from_dict(meta, where, EXPORT_AGAIN)
    specials = [meta.get("text_prefix"), meta.get("text_suffix")]
    if not all(isinstance(ids, list) and all(type(i) is int for i in ids) for ids in specials):
        raise ModelLoadError(f"{where} lacks the base tokenizer's special tokens (text_prefix, "
                             f"text_suffix: lists of token ids): {EXPORT_AGAIN}")
    tokenizer = dataclasses.replace(load_tokenizer(str(model_dir), family_for(info.family)),
                                    special_prefix=specials[0], special_suffix=specials[1])
    model = pretrained(AutoModelForSequenceClassification, model_dir, use_safetensors=True)
    fuse_gelu_tanh(model)  # the same function, faster (GPT-2's activation)
    return ExportedClassifier(model).eval().requires_grad_(False), info, tokenizer
