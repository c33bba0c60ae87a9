"""The head refit on cached pooled features: K views per image, one chosen per image per epoch.

The reference draws a fresh augmentation at every step; here each image has `views` augmented
crops extracted once, and epoch e reads view (e + offset_i) mod K of image i, so every view is
used once per K epochs and the order of images is shuffled per epoch as in the online mode.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dear_exp.cache import Tensors
from dear_exp.data.datamodules import check_shardable, rank_world
from dear_exp.data.samplers import ShardedBatches
from dear_exp.data.seeding import item_seed


class FeatureRows(Dataset):
    """(pooled features, label) rows, fetched a batch at a time (`__getitems__`)."""

    def __init__(self, rows: Tensors) -> None:
        self.pooled, self.label = rows["pooled"].float(), rows["label"].float()

    def __len__(self) -> int:
        return len(self.label)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.pooled[index], self.label[index]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    return batch if len(batch[1]) else None  # an empty slice of a last global batch: skipped


class ViewSampler(Sampler[int]):
    """Row ids of `Views` rows (row j = view j // n_images of image j % n_images): per epoch a
    seeded permutation of the images, each read through one of its views."""

    def __init__(self, n_images: int, views: int, seed: int, num_samples: int | None = None) -> None:
        self.n, self.views, self.seed = n_images, views, seed
        self.num_samples = n_images if num_samples is None else num_samples
        self.offsets = [item_seed(seed, "view-offset", i) % views for i in range(n_images)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(item_seed(self.seed, "order", self.epoch))
        rounds = -(-self.num_samples // self.n)
        ids: list[int] = []
        for r in range(rounds):  # more samples than images (the inpaint set): fresh rounds, next views
            for i in torch.randperm(self.n, generator=gen).tolist():
                view = (self.epoch * rounds + r + self.offsets[i]) % self.views
                ids.append(view * self.n + i)
        return iter(ids[: self.num_samples])


class FeatureRefitDataModule(L.LightningDataModule):
    """Joint refit data, as RefitDataModule but on cached rows: one step per main batch, each
    paired with a batch of inpaint rows; validation on the centre-crop rows."""

    def __init__(self, train: Tensors, inpaint: Tensors, val: Tensors, views: int, batch_size: int,
                 inpaint_batch_size: int, seed: int) -> None:
        super().__init__()
        self.train, self.inpaint, self.val = FeatureRows(train), FeatureRows(inpaint), FeatureRows(val)
        self.views, self.seed = views, seed
        self.batch_size, self.inpaint_batch_size = batch_size, inpaint_batch_size

    def _loader(self, rows: FeatureRows, batches: Sampler) -> DataLoader:
        return DataLoader(rows, batch_sampler=batches, collate_fn=_as_batch)

    def train_dataloader(self) -> dict[str, DataLoader]:
        from lightning.pytorch.utilities import CombinedLoader

        rank, world = rank_world(self)
        n_train = len(self.train) // self.views
        check_shardable(n_train, self.batch_size, world, "train_data")
        main = ShardedBatches(ViewSampler(n_train, self.views, self.seed), self.batch_size, rank, world)
        check_shardable(len(main) * self.inpaint_batch_size, self.inpaint_batch_size, world, "diag_data")
        n_inpaint = len(self.inpaint) // self.views
        inpaint_sampler = ViewSampler(n_inpaint, self.views, self.seed + 1, num_samples=len(main) * self.inpaint_batch_size)
        inpaint = ShardedBatches(inpaint_sampler, self.inpaint_batch_size, rank, world)
        return CombinedLoader({"main": self._loader(self.train, main), "inpaint": self._loader(self.inpaint, inpaint)},
                              mode="min_size")  # type: ignore[return-value]

    def val_dataloader(self) -> DataLoader:
        rank, world = rank_world(self)
        return self._loader(self.val, ShardedBatches(range(len(self.val)), self.batch_size, rank, world))  # type: ignore[arg-type]
