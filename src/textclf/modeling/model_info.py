"""What the train stage saves beside the weights, and what evaluate, predict and export read.

One typed description, written and read here only: `models/textclf.json`. It names the base model
(hub id or directory, and the commit read on the hub or the content hash of a directory's files),
the data it was trained on (likewise), the method, the class names, and the input format the
model was trained with (tokenizer, special tokens or prompt around the text, pad id, and the
truncation of the prepared data). Importing it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textclf.core.errors import ModelLoadError
from textclf.core.families import family_for
from textclf.core.provenance import Provenance
from textclf.core.schema import build
from textclf.core.tokenization import InputFormat, TextTokenizer, load_tokenizer

INFO_FILE = "textclf.json"
# The fields files of earlier versions lack, and what they meant: no revision, content hash or
# data recorded, a linear head, fp32 weights
EARLIER_DEFAULTS = {"base_revision": None, "attention_heads": None, "model_dtype": "fp32",
                    "base_sha256": None, "data_source": None, "data_commit": None,
                    "data_sha256": None}
RETRAIN = "run the train stage again (dvc repro train)"


@dataclass(frozen=True)
class TrainedModelInfo:
    base_model: str  # hub id or local directory the weights start from
    base_revision: str | None  # hub commit of base_model read; None for a local directory
    family: str  # row of textclf.core.families.FAMILIES
    method: Literal["zero_shot", "finetune", "lora"]
    label_names: list[str]  # class names in label order (the prepared data's)
    tokenizer: str  # TextTokenizer.name: "tiktoken:gpt2" or the tokenizer directory / hub id
    input_prefix: list[int]  # ids before the text: [CLS], or the zero-shot prompt's start
    input_suffix: list[int]  # ids after it: [SEP], or the prompt's end
    pad_id: int
    max_tokens: int  # model input length, special tokens included (the prepared data's)
    truncation: Literal["left", "right", "head_tail"]  # the prepared data's
    head_tokens: int  # tokens kept from the start by head_tail
    # train.head: attention: the heads of the self-attention layer before the pooling; None for
    # the linear head (and in files written before the attention head existed)
    attention_heads: int | None = None
    # model_dtype of the run: the dtype its frozen weights were kept in, so evaluate and predict
    # rebuild the model it trained (fp32 in files written before the knob existed)
    model_dtype: Literal["fp32", "bf16"] = "fp32"
    # A local base_model: sha256 of the config, tokenizer and weight files read
    # (core/provenance.py), which evaluate, predict and export check before loading it
    base_sha256: str | None = None
    # The data trained on, as prepare read it: hub dataset id and commit, or local directory and
    # the content hash of its data files
    data_source: str | None = None
    data_commit: str | None = None
    data_sha256: str | None = None

    @property
    def inputs(self) -> dict[str, Provenance]:
        """What the run read: the base model and the data (the requested revisions are
        params.yaml's)."""
        return {"model": Provenance(self.base_model, None, self.base_revision, self.base_sha256),
                "data": Provenance(self.data_source or "", None, self.data_commit,
                                   self.data_sha256)}

    @property
    def input_format(self) -> InputFormat:
        return InputFormat(tuple(self.input_prefix), tuple(self.input_suffix))

    def load_tokenizer(self, model_dir: Path) -> TextTokenizer:
        """The base model's tokenizer, checked to be the one training used."""
        tokenizer = load_tokenizer(self.base_model, family_for(self.family), self.base_revision)
        if tokenizer.name != self.tokenizer:
            # e.g. trained on a local GPT-2 directory's tokenizer, now resolved to tiktoken
            raise ModelLoadError(f"{model_dir} was trained with tokenizer {self.tokenizer!r}, "
                                 f"but {self.base_model!r} now loads {tokenizer.name!r}")
        return tokenizer

    def save(self, model_dir: Path) -> None:
        path = Path(model_dir) / INFO_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> TrainedModelInfo:
        path = Path(model_dir) / INFO_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir} holds no trained model ({INFO_FILE} is "
                                    "missing); run the train stage first (dvc repro train)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"{path} is not valid JSON ({e}): {RETRAIN}") from None
        return cls.from_dict(raw, str(path), RETRAIN)

    @classmethod
    def from_dict(cls, raw, where: str, remedy: str) -> TrainedModelInfo:
        """The description in its JSON form (`where` names it), every field checked: a missing
        or wrong-typed one is one ModelLoadError saying what is wrong and `remedy`. Keys it does
        not know are left out; the fields earlier versions did not write take their
        defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        if isinstance(raw, dict):
            raw = {**EARLIER_DEFAULTS, **{k: v for k, v in raw.items() if k in names}}
        errors: list[str] = []
        info = build(cls, raw, errors)
        if errors:
            raise ModelLoadError(f"{where} does not describe a trained model as this textclf "
                                 f"reads it ({'; '.join(errors)}): {remedy}")
        return info
