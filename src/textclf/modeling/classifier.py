"""Build, freeze, adapt, save and reload the sequence classifier.

Every method yields the same module: a base model (AutoModel, no task head), optionally one
self-attention layer over its last hidden states (train.head: attention), a pooling and a linear
head. Partial fine-tuning unfreezes the last blocks; LoRA wraps the base
model with peft; zero-shot uses a causal LM's output embeddings of the answer words as the head,
so scoring "Review: ... Sentiment:" by its next-token logits is the same forward pass.

Memory knobs: `model_dtype` bf16 keeps the frozen weights in bf16 (keep_frozen_in), and
`train.gradient_checkpointing` recomputes the trained blocks' activations in backward
(checkpoint_trained_blocks).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from textclf.core.errors import ModelLoadError, ParamsError
from textclf.core.families import Family, check_base_model, family_for, n_blocks
from textclf.core.model_loading import (
    check_adapter_dir,
    check_weights,
    load_safetensors,
    pretrained,
)
from textclf.core.params import LoraParams, Params
from textclf.core.provenance import model_provenance
from textclf.modeling.last_token import last_positions, last_token_block, pooled_kwargs
from textclf.modeling.model_info import INFO_FILE, RETRAIN, TrainedModelInfo


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str,
         last: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per sequence: the last real token (`last`, else last_positions) or the masked
    mean."""
    if how == "last":
        last = last_positions(attention_mask) if last is None else last
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, family: Family, num_labels: int, head_dropout: float,
                 first_trainable_block: int, attention_heads: int | None = None,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.family = family
        self.first_trainable_block = first_trainable_block  # blocks before it are frozen
        hidden = backbone.config.hidden_size
        # train.head: attention: one self-attention layer over the last hidden states (None: linear)
        self.attention = None if attention_heads is None else nn.MultiheadAttention(
            hidden, attention_heads, dropout=attention_dropout, batch_first=True)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(hidden, num_labels)
        # the last block computed at the pooled token only where the model allows it (GPT-2,
        # GPT-NeoX); held outside the module tree: it is the base model's
        object.__setattr__(self, "last_token_block", last_token_block(
            base_model_of(backbone), family, self.attention is not None))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits. (The frozen-block cache, textclf.train.frozen_cache, feeds the first
        trainable block from outside, with hooks, so this forward knows nothing of it.)"""
        # no KV cache: nothing is generated, and recomputed (checkpointed) blocks would append
        # their keys and values to it a second time
        last = last_positions(attention_mask) if self.family.pooling == "last" else None
        pooled = pooled_kwargs(self.last_token_block, attention_mask, last)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               use_cache=False, **pooled).last_hidden_state
        # the head is fp32; with model_dtype bf16 a frozen last block hands over bf16 states
        hidden = hidden.to(self.head.weight.dtype)
        if self.attention is not None:  # padding is masked out as a key, so it changes nothing
            hidden = self.attention(hidden, hidden, hidden, key_padding_mask=attention_mask == 0,
                                    need_weights=False)[0]
        return self.head(self.dropout(pool(hidden, attention_mask, self.family.pooling, last)))

    def train(self, mode: bool = True) -> Classifier:
        """Frozen modules stay in eval mode while training: their dropout is off, so they are a
        fixed feature extractor (and their hidden states can be cached exactly)."""
        super().train(mode)
        if mode:
            for module in frozen_modules(self):
                module.eval()
        return self


def base_model(clf: Classifier) -> nn.Module:
    """The plain transformers base model, also when peft wraps it."""
    return base_model_of(clf.backbone)


def base_model_of(backbone: nn.Module) -> nn.Module:
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def blocks_of(model: nn.Module, family: Family) -> nn.ModuleList:
    return model.get_submodule(family.blocks)


def frozen_modules(clf: Classifier) -> list[nn.Module]:
    """The parts of the base model that train nothing: the embeddings (one group with their
    dropout, which has no weights of its own) and each block, when none of their weights
    requires a gradient. Decided by the weights, not by first_trainable_block: training every
    block (first_trainable_block 0) still leaves the embeddings frozen, unless 'all' trains them."""
    model = base_model(clf)
    embeddings = [model.get_submodule(name) for name in clf.family.embeddings]
    groups = [embeddings] + [[block] for block in blocks_of(model, clf.family)]
    return [module for group in groups
            if not any(p.requires_grad for module in group for p in module.parameters())
            for module in group]


def from_pretrained(cls, model: str, **kwargs) -> nn.Module:
    """`cls.from_pretrained` as every load runs it (model_loading.pretrained), from safetensors
    only, without transformers' load report (which lists every unused weight, such as BERT's
    pooler or an LM head); weights the checkpoint lacks, which start random, said in one line."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        loaded, info = pretrained(cls, model, output_loading_info=True, use_safetensors=True,
                                  **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        print(f"warning: {len(missing)} weights are not in the checkpoint of {model!r} and start "
              f"random: {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}",
              file=sys.stderr, flush=True)
    fuse_gelu_tanh(loaded)
    return loaded


def fuse_gelu_tanh(model: nn.Module) -> None:
    """Computes the tanh approximation of GELU (GPT-2's activation "gelu_new"; "gelu_fast")
    with torch's one-kernel `gelu(approximate="tanh")` (transformers' GELUTanh) instead of
    transformers' Python formula, which runs about eight elementwise passes over the MLP's widest
    tensor forward and more backward: the same function up to float rounding, in one pass (what
    that gains: docs/performance.md). The config is left as it is: an export computes the same
    function with the stock module."""
    from transformers.activations import FastGELUActivation, GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) in (NewGELUActivation, FastGELUActivation):
                setattr(module, name, GELUTanh())


def load_backbone(model: str, family: Family, revision: str | None = None) -> nn.Module:
    """The base model (a hub model's at `revision`) with fp32 weights. Explicitly: transformers
    would otherwise keep the dtype of the checkpoint's config (Pythia's: fp16). model_dtype bf16
    is applied afterwards, to the frozen modules only (keep_frozen_in)."""
    from transformers import AutoModel

    return from_pretrained(AutoModel, model, dtype=torch.float32, revision=revision,
                           **dict(family.base_kwargs))


# model_dtype -> the dtype of the frozen weights
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def keep_frozen_in(backbone: nn.Module, family: Family, model_dtype: str) -> None:
    """model_dtype: cast the weights of every module of the base model that trains nothing (none
    of its own parameters requires a gradient) to that dtype; trained modules (blocks and final
    norm, LoRA adapters) keep fp32 master weights for the optimizer, from the checkpoint's exact
    values. Buffers (rotary frequencies, position ids) are left as they are.

    A trained block that follows frozen bf16 ones gets its floating inputs (hidden states, masks,
    rotary tables) cast to fp32 by a forward pre-hook, so it computes as in an fp32 model. LoRA
    blocks need none: their frozen projections run in bf16 and peft casts the input of the fp32
    adapters and their output back. (Under bf16 autocast too, the trained blocks then compute as
    on an fp32 base: an fp32 residual stream, bf16 matrix products.)"""
    dtype = DTYPES[model_dtype]
    if dtype == torch.float32:  # loaded in fp32 already: nothing to cast
        return
    frozen = [module for module in backbone.modules()
              if list(module.parameters(recurse=False))
              and not any(p.requires_grad for p in module.parameters(recurse=False))]
    if not frozen:
        return
    for module in frozen:
        for p in module.parameters(recurse=False):
            p.data = p.data.to(dtype)
    for block in blocks_of(base_model_of(backbone), family):
        weights = list(block.parameters())
        if weights and all(p.dtype == torch.float32 for p in weights):
            block.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)


def _inputs_to_fp32(module: nn.Module, args: tuple, kwargs: dict):
    def cast(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        if isinstance(value, tuple):  # (cos, sin) rotary tables
            return tuple(cast(v) for v in value)
        return value

    return cast(args), {key: cast(value) for key, value in kwargs.items()}


def checkpoint_trained_blocks(clf: Classifier) -> None:
    """train.gradient_checkpointing: every block with trained weights keeps only its inputs in
    the forward and recomputes its activations in backward (torch.utils.checkpoint, non-reentrant,
    with the RNG state saved, so dropout draws the same masks: the same loss and gradients).
    Only while training with autograd on; validation and frozen blocks run as they are."""
    from torch.utils.checkpoint import checkpoint

    for block in blocks_of(base_model(clf), clf.family):
        # the last-token block keeps one row per text past its key/value projection: little
        # to save
        if block is clf.last_token_block or not any(p.requires_grad for p in block.parameters()):
            continue
        forward = block.forward

        def checkpointed(*args, _block=block, _forward=forward, **kwargs):
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        block.forward = checkpointed


def build_classifier(params: Params, family: Family, num_labels: int) -> Classifier:
    """The model of `params.method` (finetune or lora), pretrained weights (params.model at
    params.model_revision) loaded and untouched."""
    backbone = load_backbone(params.model, family, params.model_revision)
    total = n_blocks(backbone.config)
    for p in backbone.parameters():
        p.requires_grad_(False)
    if params.method == "finetune":
        k = params.finetune.trainable_blocks
        first = 0 if k == "all" else total - k
        trainable = [backbone] if k == "all" else list(blocks_of(backbone, family)[first:])
        if family.final_norm:
            trainable.append(backbone.get_submodule(family.final_norm))
        for module in trainable:
            module.requires_grad_(True)
    elif params.method == "lora":
        first = 0 if params.lora.trainable_blocks == "all" else total - params.lora.trainable_blocks
        backbone = add_lora(backbone, family, params.lora, first, total)
    else:
        raise ValueError(f"build_classifier does not build method {params.method!r}")
    keep_frozen_in(backbone, family, params.model_dtype)
    heads = params.train.attention_heads if params.train.head == "attention" else None
    clf = Classifier(backbone, family, num_labels, params.train.head_dropout, first, heads,
                     params.train.attention_dropout)
    if params.train.gradient_checkpointing:
        checkpoint_trained_blocks(clf)
    return clf


def lora_config(family: Family, lora: LoraParams, first: int, total: int):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules or family.lora_targets),
        layers_to_transform=list(range(first, total)),
        layers_pattern=family.lora_layers_pattern,
        fan_in_fan_out=family.lora_fan_in_fan_out,
        bias="none",
    )


def add_lora(backbone: nn.Module, family: Family, lora: LoraParams, first: int, total: int):
    """Wrap the loaded base model with LoRA adapters: the pretrained weights stay as they are and
    the adapters start as a no-op (B = 0), so the first forward pass equals the base model's."""
    from peft import get_peft_model

    try:
        return get_peft_model(backbone, lora_config(family, lora, first, total))
    except ValueError as e:
        raise ParamsError(f"lora.target_modules: {e}".splitlines()[0]) from None


def parameter_counts(clf: Classifier) -> dict[str, int]:
    trainable_backbone = sum(p.numel() for p in clf.backbone.parameters() if p.requires_grad)
    head = sum(p.numel() for name, p in clf.named_parameters()  # linear (and attention) head
               if p.requires_grad and not name.startswith("backbone."))
    return {
        "trainable_params": trainable_backbone + head,
        "trainable_backbone_params": trainable_backbone,
        "total_params": sum(p.numel() for p in clf.parameters()),
    }


# ---------------------------------------------------------------------------------------------
# Save only what was trained; reload it on top of the base model.

HEAD_FILE = "head.safetensors"  # the linear head; with train.head attention, its layer too
ATTENTION_PREFIX = "attention."  # the attention layer's weights in HEAD_FILE
TRAINED_FILE = "trained.safetensors"  # finetune: the trained blocks (and final norm)
ADAPTER_DIR = "adapter"  # lora: the peft adapter, loadable with PeftModel.from_pretrained


def save_model(clf: Classifier, out_dir: Path, info: TrainedModelInfo) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(_cpu(head_state(clf)), out_dir / HEAD_FILE)
    if info.method == "finetune":
        trained = {n: p for n, p in clf.backbone.named_parameters() if p.requires_grad}
        save_file(_cpu(trained), out_dir / TRAINED_FILE)
    elif info.method == "lora":
        clf.backbone.save_pretrained(out_dir / ADAPTER_DIR)
    info.save(out_dir)


def load_model(model_dir: Path, merge_lora: bool = True,
               fp32: bool = False) -> tuple[Classifier, TrainedModelInfo]:
    """The saved classifier in eval mode, and its description (labels, input format, ...), its
    frozen weights in the run's model_dtype. `fp32`: every weight in fp32 (a bf16 run's frozen
    weights upcast, exactly) and LoRA merged in fp32: the plain model the export writes. The base
    model is the one training read: a hub model at the commit textclf.json records. Checked
    before anything loads (check_saved_model)."""
    model_dir = Path(model_dir)
    info = TrainedModelInfo.load(model_dir)
    family = family_for(info.family)
    check_saved_model(model_dir, info)
    backbone = load_backbone(info.base_model, family, info.base_revision)
    if info.method == "lora":
        from peft import PeftModel

        # trainable while the frozen part is cast: the adapters keep fp32, as in training
        backbone = pretrained(PeftModel, backbone, model_dir / ADAPTER_DIR, is_trainable=True,
                              what="the LoRA adapter")
    elif info.method == "finetune":
        trained = load_safetensors(model_dir / TRAINED_FILE)
        missing, unexpected = backbone.load_state_dict(trained, strict=False)
        if unexpected:
            raise ModelLoadError(f"{model_dir / TRAINED_FILE} does not fit {info.base_model!r}: "
                                 f"unexpected weights {unexpected[:3]}; {RETRAIN}")
        for name, p in backbone.named_parameters():
            p.requires_grad_(name in trained)
    keep_frozen_in(backbone, family, info.model_dtype)  # the dtypes the run trained with
    if fp32:
        backbone.float()
    # Merged into bf16 weights, an adapter's update would be rounded to their precision (most
    # of it lost): with model_dtype bf16 the adapters stay beside the weights, as trained.
    if info.method == "lora" and merge_lora and (info.model_dtype == "fp32" or fp32):
        backbone = backbone.merge_and_unload()
    clf = Classifier(backbone, family, len(info.label_names), 0.0, 0, info.attention_heads)
    load_head(clf, model_dir / HEAD_FILE)
    return clf.eval().requires_grad_(False), info


def check_saved_model(model_dir: Path, info: TrainedModelInfo) -> None:
    """The base model as any base model (check_base_model), of the family textclf.json names, and
    a local one holding the files training read (their content hash); the saved weights complete
    safetensors files, and the adapter a LoRA adapter."""
    base_family = check_base_model(info.base_model, info.base_revision)
    if base_family is not None and base_family.name != info.family:
        raise ModelLoadError(f"{model_dir / INFO_FILE} names family {info.family!r}, but its "
                             f"base model {info.base_model!r} is of family {base_family.name!r}: "
                             f"{RETRAIN}")
    if info.base_sha256 is not None:
        now = model_provenance(info.base_model, None).sha256
        if now != info.base_sha256:
            raise ModelLoadError(
                f"base model {info.base_model!r} is not the directory training read: its "
                f"config, tokenizer and weight files hash to sha256 {now}, {model_dir / INFO_FILE}"
                f" records {info.base_sha256}. Restore that copy of the directory, or {RETRAIN}")
    check_weights(model_dir)
    if info.method == "lora":
        check_adapter_dir(model_dir / ADAPTER_DIR)


def load_head(clf: Classifier, path: Path) -> None:
    """HEAD_FILE's weights into the head (and the attention layer), which must fit them."""
    state = load_safetensors(path)
    try:
        clf.head.load_state_dict({k: v for k, v in state.items()
                                  if not k.startswith(ATTENTION_PREFIX)})
        if clf.attention is not None:
            clf.attention.load_state_dict({k[len(ATTENTION_PREFIX):]: v for k, v in state.items()
                                           if k.startswith(ATTENTION_PREFIX)})
    except RuntimeError as e:  # missing, unexpected or differently shaped weights
        raise ModelLoadError(f"{path} does not fit the model {path.parent / INFO_FILE} "
                             f"describes ({str(e).splitlines()[0]}): {RETRAIN}") from None


def head_state(clf: Classifier) -> dict[str, torch.Tensor]:
    """What HEAD_FILE holds: the linear head's weight and bias, and the attention layer's
    weights under ATTENTION_PREFIX."""
    attention = {} if clf.attention is None else clf.attention.state_dict()
    return {**clf.head.state_dict(), **{ATTENTION_PREFIX + k: v for k, v in attention.items()}}


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
