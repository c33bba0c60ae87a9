"""The refit's rows (method.md step 4, cached): pooled features of K augmented views of every training
and inpaint image, and of the centre-crop validation images, each extracted once through the feature
store and shared by every head of a run and every run of a sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from dear_exp.cache import Tensors
from dear_exp.data.datasets import InpaintImages, LabelledImages
from dear_exp.data.seeding import item_seed

if TYPE_CHECKING:
    from dear_exp.features import FeatureStore


class Views(Dataset):
    """K augmented views of every training (or inpaint) image: row j is view j // N of image
    j % N, augmented with a seed from (seed, view, the image's key): the same rows whatever the
    order, the workers or the number of ranks."""

    def __init__(self, dataset: LabelledImages | InpaintImages, views: int, seed: int) -> None:
        self.dataset, self.views, self.seed = dataset, views, seed
        self.items = dataset.samples if isinstance(dataset, LabelledImages) else dataset.pairs

    def __len__(self) -> int:
        return len(self.items) * self.views

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, view = j % len(self.items), j // len(self.items)
        out = self.dataset[(i, item_seed(self.seed, "view", view, self.items[i].key))]
        return out[0], out[-1], torch.tensor(j)  # image, label (inpaint: whether the region survived), row


def view_rows(
    store: FeatureStore,
    train: LabelledImages,
    inpaint: InpaintImages,
    val: LabelledImages,
    views: int,
    seed: int,
    batch_size: int,
) -> tuple[Tensors, Tensors, Tensors]:
    """K augmented views of every training and inpaint image, and the centre-crop validation rows."""
    train_rows, inpaint_rows, val_rows = store.rows(
        "views",
        [
            (f"train_data train x{views} views", Views(train, views, seed)),
            (f"diag_data inpaint x{views} views", Views(inpaint, views, seed)),
            ("train_data val [centre crop]", Views(val, 1, seed)),
        ],
        logits=False,
        batch_size=batch_size,
    )
    return train_rows, inpaint_rows, val_rows
