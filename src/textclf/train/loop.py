"""The training loop: Accelerate as the engine, length-grouped batches, checkpoints that resume.

One optimizer step per batch: forward under autocast (train.mixed_precision, by the rule of
textclf.modeling.device.resolved_precision), backward, clip the gradient norm (after backward),
AdamW step, scheduler step. Frozen modules have requires_grad=False, so autograd records nothing
through them. After each epoch the model is scored on the validation split; the best epoch's
weights are kept and restored at the end. Where the run is and what it has seen is one object,
textclf.train.loop_state.LoopState, which is also what a checkpoint holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from textclf.core.errors import TrainingInterrupted
from textclf.core.params import Params, TrainParams
from textclf.core.progress import progress_bar
from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.batching import Collator, LengthGroupedBatches, TokenDataset, to_device
from textclf.modeling.inference import predict_logits
from textclf.train.checkpoints import Checkpointer, StopSignals
from textclf.train.frozen_cache import CachePlacement, FrozenCache, cached_forward, choose_placement
from textclf.train.loop_state import LoopState, load_weights


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, fused: bool):
    """AdamW with weight decay on matrices only (not on biases, norms or 1-d weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)


def make_scheduler(optimizer, schedule: str, warmup_ratio: float, total_steps: int):
    """Linear warmup over `warmup_ratio` of the steps, then linear or cosine decay to 0."""
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=round(warmup_ratio * total_steps),
                         num_training_steps=total_steps)


# ---------------------------------------------------------------------------------------------
# The loop

@dataclass(frozen=True)
class Recipe:
    """How to train, besides the model and the data."""
    train: TrainParams
    lr: float  # the method's learning rate (params.learning_rate)
    eval_batch_size: int  # validation batches (and the frozen-block cache's)
    seed: int

    @classmethod
    def from_params(cls, params: Params) -> Recipe:
        return cls(params.train, params.learning_rate, params.eval.batch_size, params.seed)


@dataclass
class TrainResult:
    best_val_accuracy: float
    best_epoch: int  # 1-based
    history: list[dict] = field(default_factory=list)  # one row per epoch
    steps: int = 0
    resumed_at_step: int | None = None  # global step a checkpoint resumed from, if any
    train_seconds: float = 0.0
    frozen_cache: str = "off"  # where the frozen-block cache was kept: device, host or off
    frozen_cache_reason: str = ""


def train_classifier(model: torch.nn.Module, train: TokenizedSplit, val: TokenizedSplit,
                     collator: Collator, recipe: Recipe, accelerator,
                     checkpointer: Checkpointer | None = None, live=None,
                     log: Callable[[str], None] = print) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch.
    `checkpointer`: resume from its checkpoint if it has one for this run, and write one every
    train.checkpoint_every steps, at each epoch end and on SIGINT/SIGTERM. `live`: dvclive's
    logger of the loss and the validation rows (None: no log)."""
    from accelerate.utils import set_seed

    tp = recipe.train
    set_seed(recipe.seed)
    optimizer = make_optimizer(model, recipe.lr, tp.weight_decay,
                               accelerator.device.type == "cuda")
    sampler, loader = training_batches(train, collator, recipe, accelerator)
    if tp.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    steps_per_epoch = len(sampler)
    # Not passed to accelerator.prepare: that would step it once per process.
    scheduler = make_scheduler(optimizer, tp.schedule, tp.warmup_ratio, steps_per_epoch * tp.epochs)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()  # train_seconds include building the cache
    placement, train_cache, val_cache = build_frozen_caches(unwrapped, train, val, collator,
                                                            recipe, accelerator, log)
    train_forward = cached_forward(model, unwrapped, train_cache)
    # validation runs on the plain model (no DDP wrapper): processes score different batches
    val_forward = cached_forward(unwrapped, unwrapped, val_cache)

    state, resumed_at = LoopState(), None
    saved = checkpointer.load() if checkpointer else None
    if saved:
        state = LoopState.resume(saved, unwrapped, optimizer, scheduler, accelerator.device)
        resumed_at = state.global_step
        log(f"resuming from {checkpointer.path}: epoch {state.epoch + 1}, "
            f"step {state.global_step}")
    bar = progress_bar(total=steps_per_epoch * tp.epochs, initial=state.global_step, desc="train",
                       unit="step", enabled=accelerator.is_main_process)
    with StopSignals() as stop:
        while state.epoch < tp.epochs:
            model.train()
            sampler.set_epoch(state.epoch, start=state.step)  # resumed mid-epoch: the rest
            for batch in loader:
                state.count_step(optimizer_step(batch, train_forward, optimizer, scheduler,
                                                accelerator, trainable, tp.grad_clip))
                bar.update(1)
                due_checkpoint = checkpointer and tp.checkpoint_every and \
                    state.global_step % tp.checkpoint_every == 0
                # (not on a stop: the window goes into the checkpoint, so a resumed run logs the
                # same rows as an uninterrupted one)
                if state.global_step % tp.log_every == 0 or due_checkpoint or \
                        state.step == steps_per_epoch:
                    mean = state.close_window(checkpointer)
                    bar.set_postfix(loss=f"{mean:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                    log_metrics(live, state.global_step, {"train/loss": mean})
                if checkpointer and (due_checkpoint or stop.received):
                    checkpointer.save(state.to_checkpoint(unwrapped, optimizer, scheduler))
                if stop.received:
                    bar.close()
                    raise TrainingInterrupted(stop.received, state.global_step,
                                              checkpointer.path if checkpointer else None)

            val_loss, val_accuracy = validate(unwrapped, val, collator, recipe.eval_batch_size,
                                              accelerator, val_forward)
            row = state.end_epoch(val_loss, val_accuracy, unwrapped)
            log(f"epoch {row['epoch']}/{tp.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {val_loss:.4f}, val accuracy {val_accuracy:.4f}")
            log_metrics(live, state.global_step, {"val/accuracy": val_accuracy,
                                                  "val/loss": val_loss})
            if checkpointer:
                checkpointer.save(state.to_checkpoint(unwrapped, optimizer, scheduler))
    bar.close()

    load_weights(unwrapped, state.best.weights)
    return TrainResult(best_val_accuracy=state.best.accuracy, best_epoch=state.best.epoch,
                       history=state.history, steps=state.global_step, resumed_at_step=resumed_at,
                       train_seconds=time.perf_counter() - started,
                       frozen_cache=placement.where, frozen_cache_reason=placement.reason)


def optimizer_step(batch: dict, forward: Callable[[dict], torch.Tensor], optimizer, scheduler,
                   accelerator, trainable: list[torch.nn.Parameter], grad_clip: float
                   ) -> torch.Tensor:
    """One step on a collated batch: forward under autocast, backward, clip the gradient norm
    of `trainable` (after backward; grad_clip 0: no clipping), AdamW step, scheduler step. The
    batch's loss, on the device."""
    batch = to_device(batch, accelerator.device)
    with accelerator.autocast():
        logits = forward(batch)
    loss = F.cross_entropy(logits.float(), batch["labels"])
    accelerator.backward(loss)
    if grad_clip > 0:
        accelerator.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def training_batches(train: TokenizedSplit, collator: Collator, recipe: Recipe, accelerator
                     ) -> tuple[LengthGroupedBatches, torch.utils.data.DataLoader]:
    """This process's share of each epoch's batches (the sampler: `set_epoch` picks the epoch
    and where a resumed one starts) and the loader of their collated batches. The loader is not
    given to accelerator.prepare: its shard wrapper would hide set_epoch."""
    tp = recipe.train
    sampler = LengthGroupedBatches(train.lengths, tp.batch_size, recipe.seed, tp.group_by_length,
                                   processes=accelerator.num_processes,
                                   rank=accelerator.process_index)
    # A generator of its own: creating an iterator then draws no number from the global RNG,
    # so dropout sees the same random stream whether or not a run was resumed mid-epoch.
    loader = torch.utils.data.DataLoader(TokenDataset(train), batch_sampler=sampler,
                                         collate_fn=collator,
                                         generator=torch.Generator().manual_seed(recipe.seed))
    return sampler, loader


def build_frozen_caches(model: torch.nn.Module, train: TokenizedSplit, val: TokenizedSplit,
                        collator: Collator, recipe: Recipe, accelerator,
                        log: Callable[[str], None]
                        ) -> tuple[CachePlacement, FrozenCache | None, FrozenCache | None]:
    """Where train.cache_frozen puts the frozen-block cache (textclf.train.frozen_cache), and
    the caches of the training and validation splits built there (None and None: off).
    `model`: the unwrapped classifier."""
    started = time.perf_counter()
    placement = choose_placement(recipe.train.cache_frozen, model, [train, val],
                                 collator.fmt.extra, accelerator.device)
    if placement.where == "off":
        log(f"frozen-block cache off ({placement.reason})")
        return placement, None, None
    model.eval()
    train_cache, val_cache = (
        FrozenCache.compute(model, split, collator, recipe.eval_batch_size, accelerator,
                            desc=f"cache {name}", where=placement.where)
        for name, split in (("train", train), ("val", val)))
    log(f"frozen-block cache on the {placement.where} ({placement.reason}): "
        f"{len(train) + len(val)} texts, {(train_cache.nbytes + val_cache.nbytes) / 1e9:.2f} "
        f"GB, built in {time.perf_counter() - started:.1f} s")
    return placement, train_cache, val_cache


def validate(model: torch.nn.Module, val: TokenizedSplit, collator: Collator, batch_size: int,
             accelerator, forward: Callable[[dict], torch.Tensor]) -> tuple[float, float]:
    """The validation loss and accuracy of `model` (unwrapped: each process scores its share
    of the batches, and the logits are gathered)."""
    logits = predict_logits(model, val, collator, batch_size, accelerator, forward,
                            desc="validate")
    val_loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val.labels)).item()
    return val_loss, float((logits.argmax(1) == val.labels).mean())


def log_metrics(live, step: int, values: dict[str, float]) -> None:
    """`values` in dvclive's log at `step` (live None: no log)."""
    if live is not None:
        live.step = step
        for name, value in values.items():
            live.log_metric(name, value)
