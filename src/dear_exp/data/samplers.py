"""Samplers that carry a per-item seed, so augmentation does not depend on workers or order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from dear_exp.data.seeding import item_seed


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields (index, item seed); shuffles per epoch. Lightning calls `set_epoch` every epoch.

    `num_samples` larger than the data set concatenates fresh permutations (used to cycle the
    inpaint set once per main-set epoch, as the reference does).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, num_samples: int | None = None) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.num_samples = size if num_samples is None else num_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(item_seed(self.seed, "order", self.epoch))
        order: list[int] = []
        while len(order) < self.num_samples:
            order += torch.randperm(self.size, generator=gen).tolist() if self.shuffle else list(range(self.size))
        for position, index in enumerate(order[: self.num_samples]):
            yield index, item_seed(self.seed, self.epoch, position, index)


class SizeBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose images share one size (native-resolution evaluation, no resize).

    Sizes are grouped in sorted order and indices keep their order inside a size, so the batches
    are the same on every run.

    Under DDP (`world` > 1) rank r takes batches r, r + world, ...: every image is scored by
    exactly one rank, in the same batch as in a single process (no DistributedSampler padding).
    """

    def __init__(self, sizes: list[tuple[int, int]], batch_size: int, rank: int = 0, world: int = 1) -> None:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            groups[size].append(index)
        batches = [
            group[start : start + batch_size]
            for _, group in sorted(groups.items())
            for start in range(0, len(group), batch_size)
        ]
        self.batches = batches[rank::world]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


class ShardedBatches(Sampler[list]):
    """Global batches of `sampler`'s order, and this rank's contiguous slice of each.

    All ranks see the same global batches, so under DDP a step covers exactly the items of the
    single-process step (no padding, nothing dropped), and the gradient averaged over ranks equals
    the single-process one when each rank's loss is its sum times world over the global count. `.sampler` is what Lightning
    calls `set_epoch` on.
    """

    def __init__(self, sampler: Sampler, batch_size: int, rank: int = 0, world: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list]:
        items = list(self.sampler)
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            n = len(batch)
            yield batch[self.rank * n // self.world : (self.rank + 1) * n // self.world]
