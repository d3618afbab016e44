"""Loading from a model directory, which may come from anyone, without running anything in it.

A model directory (a hub model or a local copy of one, models/ and its LoRA adapter, an export)
can name Python code for transformers to run (`auto_map` in config.json or
tokenizer_config.json: unless told trust_remote_code=False, transformers asks "Do you wish to run
the custom code? [y/N]" and runs it on "y") and can hold pickled weights (pytorch_model.bin,
adapter_model.bin), whose unpickling can run code too. textclf runs neither, whatever is typed:

- every config, tokenizer, model and adapter textclf loads goes through `pretrained`, which passes
  trust_remote_code=False: transformers neither asks nor runs code. Weights come from
  safetensors only (the model loads pass use_safetensors=True; peft prefers them itself).
- before anything of a directory loads, `check_model_dir` reads what it says and refuses, in one
  ModelLoadError line naming the file and what to do: code it names, weights it holds only
  pickled, a safetensors file that is truncated or damaged, a JSON file that is not valid.
  Which model types are allowed is the caller's to check (textclf.core.families for a base
  model, textclf.export.hf_loading for an export).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from textclf.core.errors import ModelLoadError

CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"  # peft's
# Weights that only unpickling reads (torch.save): transformers' and peft's names
PICKLED_WEIGHTS = ("pytorch_model*.bin", "adapter_model.bin")


def pretrained(cls, *args, what: str = "model", **kwargs):
    """`cls.from_pretrained(*args, **kwargs)` with trust_remote_code=False, as every load of
    textclf runs it: AutoConfig, AutoTokenizer, the AutoModel classes and PeftModel (which takes
    the base model first). A failure (missing or damaged files, no network: several exception
    types) is one ModelLoadError naming `what` was loaded from where: the last positional
    argument."""
    source = str(args[-1])
    try:
        return cls.from_pretrained(*args, trust_remote_code=False, **kwargs)
    except Exception as e:
        raise ModelLoadError(load_help(source, e, what, kwargs.get("revision"))) from None


def load_help(source: str, error: Exception, what: str = "model",
              revision: str | None = None) -> str:
    """One line: what could not be loaded, why, and what to do (the network only for a hub id;
    the revision when one was asked for)."""
    reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
    if Path(source).is_dir():
        return (f"{what} {source!r} (local directory) could not be loaded: {reason}. Restore a "
                "complete copy of the directory, or write it again (save_pretrained)")
    if revision is not None:
        return (f"{what} {source!r} (hub id) at revision {revision!r} could not be loaded: "
                f"{reason}. Check that the repository has this commit, tag or branch "
                "(model_revision; the revision models/textclf.json records), and without "
                "internet that the Hugging Face cache holds it (HF_HUB_OFFLINE=1).")
    return (f"{what} {source!r} (hub id) could not be loaded: {reason}. Without internet, set "
            "`model` to a local directory holding config.json, the weights and the tokenizer "
            "files (as written by save_pretrained), or set HF_HUB_OFFLINE=1 to use a copy "
            "already in the Hugging Face cache.")


def load_safetensors(path: Path) -> dict:
    """The tensors of a safetensors file (on the CPU); a damaged file is one ModelLoadError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as e:
        raise ModelLoadError(damaged(path, e)) from None


def damaged(path: Path, error: Exception) -> str:
    return (f"{path} cannot be read as safetensors ({error}): it is truncated or damaged. "
            "Restore a complete copy (`dvc checkout` for an output of the pipeline) or write it "
            "again")


# ---------------------------------------------------------------------------------------------
# What a directory says, read before anything of it loads

def check_model_dir(model: str | Path, own_classes: Mapping[str, str] | None = None,
                    revision: str | None = None) -> dict:
    """config.json of a model (a local directory, or a hub id at `revision`), after refusing
    what textclf will not load: code named in config.json or tokenizer_config.json
    (`auto_map`), except textclf's own classes registered in this process (`own_classes`:
    auto_map key -> class) and classes transformers itself has for the model_type (Phi-3's,
    whose code was merged into transformers); weights held only as pickles; damaged safetensors
    files; invalid JSON. A hub model that cannot be reached here gives {}: its load says why."""
    directory = files_of(model, revision)
    if directory is None:
        return {}
    config = read_json_object(directory / CONFIG_FILE, where=shown_path(model, CONFIG_FILE))
    tokenizer_config = read_json_object(directory / TOKENIZER_CONFIG_FILE, missing_ok=True,
                                        where=shown_path(model, TOKENIZER_CONFIG_FILE))
    refuse_code(config, shown_path(model, CONFIG_FILE), own_classes or {})
    refuse_code(tokenizer_config, shown_path(model, TOKENIZER_CONFIG_FILE), {})
    check_weights(directory)
    return config


def check_adapter_dir(directory: Path) -> None:
    """A LoRA adapter as peft saves it: adapter_config.json of a LoRA adapter, its weights as a
    complete safetensors file, never a pickle."""
    config = read_json_object(directory / ADAPTER_CONFIG_FILE)
    if config.get("peft_type") != "LORA":
        raise ModelLoadError(f"{directory / ADAPTER_CONFIG_FILE} describes a "
                             f"{config.get('peft_type')!r} adapter, not the LoRA adapter textclf "
                             "saves: run the train stage again (dvc repro train)")
    check_weights(directory)


def files_of(model: str | Path, revision: str | None = None) -> Path | None:
    """The directory holding a model's files: the local directory, or the snapshot of a hub model
    at `revision` in the Hugging Face cache (config.json downloaded there if need be, as its load
    would); None when a hub model cannot be reached."""
    if Path(model).is_dir():
        return Path(model)
    from transformers.utils.hub import cached_file

    try:
        found = cached_file(str(model), CONFIG_FILE, revision=revision,
                            _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
        if found is not None:  # tokenizer_config.json too, when the model has one
            cached_file(str(model), TOKENIZER_CONFIG_FILE, revision=revision,
                        _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    except Exception:  # no such repository, an invalid id, a gated model: the load says why
        return None
    return None if found is None else Path(found).parent


def shown_path(model: str | Path, name: str) -> str:
    """How an error names a model's file: its path, or "config.json of '<hub id>'"."""
    return str(Path(model) / name) if Path(model).is_dir() else f"{name} of {str(model)!r}"


def read_json_object(path: Path, where: str | None = None, missing_ok: bool = False) -> dict:
    """The JSON object in `path`; a missing file ({} if `missing_ok`), invalid JSON or another
    value than an object is one ModelLoadError naming `where` (default: the path)."""
    where = where or str(path)
    if not path.is_file():
        if missing_ok:
            return {}
        raise ModelLoadError(f"{where} is missing: not a model directory as save_pretrained "
                             "writes one")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{where} is not valid JSON ({e}): restore a complete copy, or "
                             "write it again") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{where} holds a JSON {type(data).__name__}, not an object: "
                             "restore a complete copy, or write it again")
    return data


def refuse_code(config: dict, where: str, own_classes: Mapping[str, str]) -> None:
    """Refuse a config.json or tokenizer_config.json whose `auto_map` names code that is not
    `own_classes` and not a class transformers has for the config's model_type. (Its older
    tokenizer form is a list: [slow class, fast class].)"""
    auto_map = config.get("auto_map") or {}
    if not isinstance(auto_map, dict):
        auto_map = {"AutoTokenizer": auto_map}
    for key, refs in auto_map.items():
        for ref in refs if isinstance(refs, list) else [refs]:
            if ref is None or own_classes.get(key) == ref \
                    or transformers_has(str(ref), config.get("model_type")):
                continue
            raise ModelLoadError(
                f"{where} names code to run (auto_map {key}: {ref}); textclf never runs code "
                "from a model directory. Use a model whose classes transformers has, or load "
                "this one with transformers' trust_remote_code=True if you trust that code")


def transformers_has(ref: str, model_type: Any) -> bool:
    """Whether an auto_map entry ("module.Class") names a class transformers has: a config or
    model class of `model_type`, or a tokenizer class. Loading without remote code takes
    transformers' class, so nothing of the directory runs and the model is the one intended."""
    import transformers

    name = ref.rpartition(".")[2]
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not isinstance(cls, type):
        return False
    if issubclass(cls, transformers.PretrainedConfig):
        return cls.model_type == model_type
    if issubclass(cls, transformers.PreTrainedModel):
        return cls.config_class is not None and cls.config_class.model_type == model_type
    return issubclass(cls, transformers.PreTrainedTokenizerBase)


def check_weights(directory: Path) -> None:
    """Refuse weights that only unpickling reads, and safetensors files that are truncated or
    damaged (each file's header is read; the tensors are not)."""
    from safetensors import SafetensorError, safe_open

    safetensors = sorted(directory.glob("*.safetensors"))
    for path in safetensors:
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as e:
            raise ModelLoadError(damaged(path, e)) from None
    pickled = sorted(p for pattern in PICKLED_WEIGHTS for p in directory.glob(pattern))
    if pickled and not safetensors:
        raise ModelLoadError(
            f"{pickled[0]} holds pickled weights, which textclf never loads (unpickling a file "
            "can run any code it names): re-save them as safetensors (save_pretrained writes "
            "safetensors), where you trust the file")
