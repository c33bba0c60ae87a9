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
    """

    def __init__(self, sizes: list[tuple[int, int]], batch_size: int) -> None:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, size in enumerate(sizes):
            groups[size].append(index)
        self.batches = [
            group[start : start + batch_size]
            for _, group in sorted(groups.items())
            for start in range(0, len(group), batch_size)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)
