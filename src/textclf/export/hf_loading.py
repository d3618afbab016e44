"""Load an export: textclf's own classes registered with transformers, the rule that no code
from a model directory runs, and the export behind the Classifier interface for
`textclf predict --model-dir export`.

textclf loads every model directory without trust_remote_code. An export of textclf's own class
(BERT with masked mean pooling, textclf.export.hf_pooling; the attention head of any family,
textclf.export.hf_attention) has a model_type stock transformers
does not know; register_exported_classes (run by `import textclf.export`) maps it to the class in
this package, so no code is read from the directory. A directory whose config.json or
tokenizer_config.json names any other code (`auto_map`) is refused (check_no_foreign_code).
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
from textclf.modeling.model_info import INFO_FILE, TrainedModelInfo

META_KEY = "textclf"  # config.json key: the run's TrainedModelInfo and the base tokenizer's specials


def register_exported_classes() -> None:
    """Make AutoConfig and AutoModelForSequenceClassification (and so pipeline()) load the
    exports of textclf's own classes from this process's textclf, with no remote code.
    `import textclf.export` calls it."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from textclf.export.hf_attention import CLASSES
    from textclf.export.hf_pooling import BertForMeanPooledClassification, BertMeanPooledConfig

    for config, model in [(BertMeanPooledConfig, BertForMeanPooledClassification),
                          *CLASSES.values()]:
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoModelForSequenceClassification.register(config, model, exist_ok=True)


def own_auto_maps() -> dict[str, dict[str, str]]:
    """model_type -> the auto_map of textclf's own exported classes (hf_pooling, hf_attention)."""
    from textclf.export.hf_attention import AUTO_MAPS
    from textclf.export.hf_pooling import AUTO_MAP, MODEL_TYPE

    return {MODEL_TYPE: AUTO_MAP, **AUTO_MAPS}


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
    textclf's own classes (`auto_map`). textclf never runs code from a model directory: it loads
    without trust_remote_code, its own classes registered in this process
    (register_exported_classes), so a directory that needs other code cannot load as intended."""
    own = own_auto_maps()
    model_dir = Path(model_dir)
    for name, allowed_maps in (("config.json", list(own.values())), ("tokenizer_config.json", [])):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path} is not valid JSON ({e})") from None
        auto_map = (data.get("auto_map") if isinstance(data, dict) else None) or {}
        if not isinstance(auto_map, dict):  # tokenizer_config.json's older form: a list
            auto_map = {"AutoTokenizer": auto_map}
        for key, ref in auto_map.items():
            if not any(allowed.get(key) == ref for allowed in allowed_maps):
                raise ModelLoadError(
                    f"{path} names code that is not textclf's (auto_map {key}: {ref}); textclf "
                    "never runs code from a model directory. Load it with transformers and "
                    "trust_remote_code=True only if you trust that code")
        if auto_map and name == "config.json" and own.get(data.get("model_type")) != auto_map:
            expected = next(t for t, m in own.items() if m.get(key) == ref)
            raise ModelLoadError(
                f"{path} names textclf's class but has model_type {data.get('model_type')!r}, "
                f"not {expected!r}: it was exported by an older textclf, which stock "
                "transformers would load as another model. Export it again (dvc repro export)")


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
    return ExportedClassifier(model).eval().requires_grad_(False), info, tokenizer
