"""The training loop: Accelerate as the engine, length-grouped batches, checkpoints that resume.

One optimizer step per batch: forward under autocast (train.mixed_precision, by the rule of
textclf.modeling.device.resolved_precision), backward, clip the gradient norm (after backward),
AdamW step, scheduler step. Frozen modules have requires_grad=False, so autograd records nothing
through them. After each epoch the model is scored on the validation split; the best epoch's
weights are kept and restored at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from textclf.core.errors import NonFiniteLossError, TrainingInterrupted
from textclf.core.params import TrainParams
from textclf.core.progress import progress_bar
from textclf.core.tokenization import TokenizedSplit
from textclf.modeling.batching import Collator, LengthGroupedBatches, TokenDataset, to_device
from textclf.modeling.inference import predict_logits
from textclf.train.checkpoints import Checkpointer, StopSignals, rng_state, set_rng_state
from textclf.train.frozen_cache import FrozenCache, cached_forward, choose_placement


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


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
            if p.requires_grad}


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def train_classifier(model: torch.nn.Module, train: TokenizedSplit, val: TokenizedSplit,
                     collator: Collator, tp: TrainParams, lr: float, eval_batch_size: int,
                     seed: int, accelerator, checkpointer: Checkpointer | None = None,
                     live=None, log: Callable[[str], None] = print) -> TrainResult:
    """Train `model` in place; on return it holds the weights of the best validation epoch."""
    from accelerate.utils import set_seed

    set_seed(seed)
    optimizer = make_optimizer(model, lr, tp.weight_decay, accelerator.device.type == "cuda")
    # This process's share of each epoch's batches. The loader is not given to
    # accelerator.prepare: its shard wrapper would hide set_epoch (see LengthGroupedBatches).
    sampler = LengthGroupedBatches(train.lengths, tp.batch_size, seed, tp.group_by_length,
                                   processes=accelerator.num_processes,
                                   rank=accelerator.process_index)
    # A generator of its own: creating an iterator then draws no number from the global RNG,
    # so dropout sees the same random stream whether or not a run was resumed mid-epoch.
    loader = torch.utils.data.DataLoader(TokenDataset(train), batch_sampler=sampler,
                                         collate_fn=collator,
                                         generator=torch.Generator().manual_seed(seed))
    if tp.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * tp.epochs
    # Not passed to accelerator.prepare: that would step it once per process.
    scheduler = make_scheduler(optimizer, tp.schedule, tp.warmup_ratio, total_steps)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    started = time.perf_counter()  # train_seconds include building the cache
    train_cache = val_cache = None
    placement = choose_placement(tp.cache_frozen, unwrapped, [train, val], collator.fmt.extra,
                                 accelerator.device)
    if placement.where == "off":
        log(f"frozen-block cache off ({placement.reason})")
    else:
        unwrapped.eval()
        train_cache, val_cache = (
            FrozenCache.compute(unwrapped, split, collator, eval_batch_size, accelerator,
                                desc=f"cache {name}", where=placement.where)
            for name, split in (("train", train), ("val", val)))
        log(f"frozen-block cache on the {placement.where} ({placement.reason}): "
            f"{len(train) + len(val)} texts, {(train_cache.nbytes + val_cache.nbytes) / 1e9:.2f} "
            f"GB, built in {time.perf_counter() - started:.1f} s")
    train_forward = cached_forward(model, unwrapped, train_cache)
    # validation runs on the plain model (no DDP wrapper): processes score different batches
    val_forward = cached_forward(unwrapped, unwrapped, val_cache)

    epoch, step, global_step = 0, 0, 0
    best = {"accuracy": -1.0, "epoch": 0, "weights": None}
    history: list[dict] = []
    epoch_losses: list[float] = []  # losses of the current epoch's steps so far
    resumed_at = None
    pending: list[torch.Tensor] = []
    window: list[torch.Tensor] = []  # this epoch's losses since the last log row
    saved = checkpointer.load() if checkpointer else None
    if saved:
        load_weights(unwrapped, saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
        epoch, step, global_step = saved["epoch"], saved["step"], saved["global_step"]
        best, history, epoch_losses = saved["best"], saved["history"], saved["epoch_losses"]
        # losses of the steps since the last log row (a run stopped between log steps)
        pending = [torch.tensor(v, device=accelerator.device) for v in saved.get("window", [])]
        resumed_at = global_step
        log(f"resuming from {checkpointer.path}: epoch {epoch + 1}, step {global_step}")

    def checkpoint_state() -> dict:
        return {"weights": trainable_weights(unwrapped), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": epoch,
                "step": step, "global_step": global_step, "best": best, "history": history,
                "epoch_losses": epoch_losses, "window": [float(v) for v in window]}

    def check_finite(window: list[torch.Tensor]) -> list[float]:
        values = torch.stack(window).float().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            raise NonFiniteLossError(global_step - len(window) + int(bad[0]) + 1,
                                     checkpointer.path if checkpointer and
                                     checkpointer.path.exists() else None)
        return values.tolist()

    bar = progress_bar(total=total_steps, initial=global_step, desc="train", unit="step",
                       enabled=accelerator.is_main_process)
    with StopSignals() as stop:
        while epoch < tp.epochs:
            model.train()
            sampler.set_epoch(epoch, start=step)  # resumed mid-epoch: its remaining batches
            window, pending = pending, []  # a resumed epoch picks up its unlogged losses
            for batch in loader:
                batch = to_device(batch, accelerator.device)
                with accelerator.autocast():
                    logits = train_forward(batch)
                loss = F.cross_entropy(logits.float(), batch["labels"])
                accelerator.backward(loss)
                if tp.grad_clip > 0:
                    accelerator.clip_grad_norm_(trainable, tp.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                global_step += 1
                window.append(loss.detach())
                bar.update(1)
                due_checkpoint = checkpointer and tp.checkpoint_every and \
                    global_step % tp.checkpoint_every == 0
                # (not on a stop: the window goes into the checkpoint, so a resumed run logs the
                # same rows as an uninterrupted one)
                if global_step % tp.log_every == 0 or due_checkpoint or step == steps_per_epoch:
                    values = check_finite(window)
                    epoch_losses += values
                    window = []
                    mean = sum(values) / len(values)
                    bar.set_postfix(loss=f"{mean:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                    if live is not None:
                        live.step = global_step
                        live.log_metric("train/loss", mean)
                if due_checkpoint:
                    checkpointer.save(checkpoint_state())
                if stop.received:
                    if checkpointer:
                        checkpointer.save(checkpoint_state())
                    bar.close()
                    raise TrainingInterrupted(stop.received, global_step,
                                            checkpointer.path if checkpointer else None)

            logits = predict_logits(unwrapped, val, collator, eval_batch_size, accelerator,
                                    val_forward, desc="validate")
            labels = torch.from_numpy(val.labels)
            val_loss = F.cross_entropy(torch.from_numpy(logits), labels).item()
            val_accuracy = float((logits.argmax(1) == val.labels).mean())
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)) if epoch_losses
                   else float("nan"), "val_loss": val_loss, "val_accuracy": val_accuracy}
            history.append(row)
            log(f"epoch {epoch + 1}/{tp.epochs}: train loss {row['train_loss']:.4f}, "
                f"val loss {val_loss:.4f}, val accuracy {val_accuracy:.4f}")
            if live is not None:
                live.step = global_step
                live.log_metric("val/accuracy", val_accuracy)
                live.log_metric("val/loss", val_loss)
            if val_accuracy > best["accuracy"]:
                best = {"accuracy": val_accuracy, "epoch": epoch + 1,
                        "weights": trainable_weights(unwrapped)}
            epoch, step, epoch_losses = epoch + 1, 0, []
            if checkpointer:
                checkpointer.save(checkpoint_state())
    bar.close()

    load_weights(unwrapped, best["weights"])
    return TrainResult(best_val_accuracy=best["accuracy"], best_epoch=best["epoch"],
                       history=history, steps=global_step, resumed_at_step=resumed_at,
                       train_seconds=time.perf_counter() - started,
                       frozen_cache=placement.where, frozen_cache_reason=placement.reason)
