"""Length-grouped batches with per-batch padding, and collation."""

from __future__ import annotations

import numpy as np
import torch

from textclf.core.errors import DataError
from textclf.core.tokenization import InputFormat, TokenizedSplit


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, split: TokenizedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return i, self.split.ids[i], int(self.split.labels[i])


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled training batches of similar length, so per-batch padding wastes little; with
    several processes, this process's share of them.

    Each epoch draws a seeded permutation, cuts it into windows of `window` batches, sorts each
    window by length and cuts it into batches, then shuffles the batch order. The order depends on
    (seed, epoch) only, so a resumed run sees exactly the batches an uninterrupted one would.

    Under `accelerate launch` the sampler shards itself and the training loader is not passed
    to `accelerator.prepare`: accelerate's shard wrapper would hide `set_epoch` (every epoch
    would repeat the first one's batches) and drops or repeats texts around a short batch.
    Process `rank` of `processes` takes batches rank, rank + processes, ... of the epoch. When
    the batch count is not a multiple of `processes`, the largest batches are split in two until
    it is, so every process makes the same number of optimizer steps (as DDP needs) and each
    text is seen once per epoch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group_by_length: bool,
                 window: int = 64, processes: int = 1, rank: int = 0):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.window = window
        self.processes = processes
        self.rank = rank
        self.epoch = 0
        self.start = 0  # batches of this epoch already trained on (a resumed run skips them)
        # ceil(n / batch_size) batches, rounded up to a multiple of the processes
        batches = -(-len(self.lengths) // batch_size)
        self.total = -(-batches // processes) * processes
        if self.total > len(self.lengths):
            raise DataError(f"{len(self.lengths)} training texts cannot make one batch per "
                            f"process for {processes} processes: use fewer processes")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate over `epoch`'s batches of this process from its batch number `start` on."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        """This process's batches per epoch (a resumed epoch still counts its skipped ones)."""
        return self.total // self.processes

    def batches(self, epoch: int) -> list[list[int]]:
        """Every process's batches of `epoch`, in order: process r takes r, r + processes, ..."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        if self.group_by_length:
            span = self.batch_size * self.window
            windows = [order[i:i + span] for i in range(0, len(order), span)]
            order = np.concatenate(
                [w[np.argsort(-self.lengths[w], kind="stable")] for w in windows])
        batches = [order[i:i + self.batch_size].tolist()
                   for i in range(0, len(order), self.batch_size)]
        while len(batches) < self.total:  # split the first largest batch in two
            i = max(range(len(batches)), key=lambda j: len(batches[j]))
            half = len(batches[i]) // 2
            batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
        if self.group_by_length:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        mine = self.batches(self.epoch)[self.rank::self.processes]
        return iter(mine[self.start:])


# On a CPU a scoring batch holds at most this many tokens (its texts times their padded width)
# for each thread torch computes with, and never fewer than CPU_SCORING_TOKENS_LEAST. Measured on
# an AMD EPYC with GPT-2 124M and a MiniLM-sized BERT (benchmarks/batch_tokens.py;
# docs/performance.md, "Scoring batches on a CPU"): with 2 threads the time per token at 2,048
# tokens a batch is within 2% of the fastest size, higher below 1,024 (each batch's fixed work)
# and 7-25% higher at 16,384-32,768 (eval.batch_size 128 of 256-token texts); with 1 thread 2,048
# is the fastest size and 1,024 3% slower. Smaller batches of texts sorted by length pad less.
# Per thread, so that a many-core CPU still gets products large enough to share out.
CPU_SCORING_TOKENS_PER_THREAD = 1024
CPU_SCORING_TOKENS_LEAST = 2048


def scoring_tokens(device: torch.device) -> int | None:
    """The most tokens a scoring batch holds on `device`: on a CPU, CPU_SCORING_TOKENS_PER_THREAD
    per thread of torch's, at least CPU_SCORING_TOKENS_LEAST; no bound on GPUs, which want large
    batches."""
    if device.type != "cpu":
        return None
    return max(CPU_SCORING_TOKENS_LEAST, CPU_SCORING_TOKENS_PER_THREAD * torch.get_num_threads())


def sorted_batches(widths: np.ndarray, batch_size: int,
                   max_tokens: int | None = None) -> list[list[int]]:
    """Batches without gradients (scoring, the frozen-block cache's build) of texts of these
    padded `widths`, longest first: the least padding, and memory errors show at once. Each
    batch holds at most `batch_size` texts and, given `max_tokens`, at most that many tokens
    (its texts times its longest width; a text longer than that is a batch of its own)."""
    widths = np.asarray(widths)
    order = np.argsort(-widths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        fit = batch_size if max_tokens is None else max_tokens // max(1, int(widths[order[start]]))
        end = start + max(1, min(batch_size, fit))
        batches.append(order[start:end].tolist())
        start = end
    return batches


def pad_multiple_for(device, compiled: bool = False) -> int:
    """Batch widths are rounded up to this: 8 on GPUs (tensor-core friendly shapes), 32 when
    the model is compiled for training (few distinct shapes, so few recompilations), 1 on CPU.
    (Compiled scoring, eval.compile, takes any width after its second compilation.)"""
    if compiled:
        return 32
    return 8 if device.type == "cuda" else 1


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch on `device` (the training loader is not prepared by accelerate)."""
    return {key: value.to(device) for key, value in batch.items()}


class Collator:
    """Pads a batch on the right to its own longest sequence (times `pad_multiple`)."""

    def __init__(self, fmt: InputFormat, pad_id: int, pad_multiple: int = 1):
        self.fmt = fmt
        self.pad_id = pad_id
        self.pad_multiple = pad_multiple

    def width(self, length: int | np.ndarray) -> int | np.ndarray:
        """The padded width of a batch whose longest text has `length` text ids."""
        return -(-(length + self.fmt.extra) // self.pad_multiple) * self.pad_multiple

    def __call__(self, items) -> dict[str, torch.Tensor]:
        seqs = [self.fmt.apply(ids.tolist() if hasattr(ids, "tolist") else ids)
                for _, ids, _ in items]
        width = self.width(max(len(ids) for _, ids, _ in items))
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, :len(seq)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([label for _, _, label in items], dtype=torch.long),
            "index": torch.tensor([i for i, _, _ in items], dtype=torch.long),
        }
