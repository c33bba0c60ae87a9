"""LightningDataModules: main training data, the diagnostic inpaint set, their joint refit, and
benchmarks evaluated under every post-processing setting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, default_collate

from dear_exp.data.augment import build_augment
from dear_exp.data.benchmarks import BenchmarkIndex
from dear_exp.data.datasets import EvalImages, InpaintImages, LabelledImages
from dear_exp.data.folders import Sample, inpaint_pairs, labelled_samples
from dear_exp.data.images import Preprocess
from dear_exp.data.postprocess import Chain
from dear_exp.data.samplers import SeededSampler, ShardedBatches, SizeBucketBatchSampler
from dear_exp.distributed import rank_world
from dear_exp.errors import DearError


def resolve_workers(num_workers: int | str) -> int:
    """`auto`: one worker per core this process may use (its affinity: a SLURM allocation, not the
    whole node) beyond the main process, at most 8."""
    if num_workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(0, min(8, cores - 1))
    return int(num_workers)


def make_loader(dataset: Any, num_workers: int, **kwargs: Any) -> DataLoader:
    """Pinned memory when a GPU will read the batches."""
    return DataLoader(
        dataset, num_workers=num_workers, persistent_workers=False, pin_memory=torch.cuda.is_available(), **kwargs
    )


def collate_or_none(batch: list[Any]) -> Any:
    """A rank's slice of a global batch may be empty (a last batch smaller than the number of
    ranks): it becomes None, which the steps skip, instead of an item counted twice."""
    return default_collate(batch) if batch else None


def check_shardable(n: int, batch_size: int, world: int, what: str) -> None:
    """Every rank needs at least one item of every global batch, the last one included."""
    last = n % batch_size
    if world > 1 and (0 < last < world or batch_size < world):
        raise DearError(
            f"{what}: {n} items in batches of {batch_size} leave a last batch of {last} for {world} ranks; "
            f"choose a batch size with n % batch_size == 0 or >= {world}"
        )


class TrainDataModule(L.LightningDataModule):
    """Real and fake training folders (labels from the config, never from folder order) plus val."""

    def __init__(
        self,
        root: str,
        train: dict[str, list[str]],
        val: dict[str, list[str]],
        augment: dict[str, Any],
        preprocess: Preprocess,
        batch_size: int = 64,
        num_workers: int | str = "auto",
        seed: int = 0,
        source_hint: str = "",
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.splits = {"train": train, "val": val}
        self.augment_cfg = augment
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_workers = resolve_workers(num_workers)
        self.seed = seed
        self.hint = source_hint
        self.train_set: LabelledImages | None = None
        self.val_set: LabelledImages | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = labelled_samples(self.root, self.splits["train"]["real"], self.splits["train"]["fake"], self.hint)
        val = labelled_samples(self.root, self.splits["val"]["real"], self.splits["val"]["fake"], self.hint)
        self.train_set = LabelledImages(train, build_augment(self.augment_cfg), self.preprocess, self.seed)
        # validation: a centre crop of the training crop size, the same at every epoch
        self.val_set = LabelledImages(
            val, build_augment({"name": "center_crop", "crop": self.augment_cfg["crop"]}), self.preprocess, self.seed
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        rank, world = rank_world(self)
        check_shardable(len(self.train_set), self.batch_size, world, "train_data")
        batches = ShardedBatches(SeededSampler(len(self.train_set), self.seed), self.batch_size, rank, world)
        return make_loader(self.train_set, self.num_workers, batch_sampler=batches)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None
        rank, world = rank_world(self)
        batches = ShardedBatches(range(len(self.val_set)), self.batch_size, rank, world)  # type: ignore[arg-type]
        return make_loader(self.val_set, self.num_workers, batch_sampler=batches, collate_fn=collate_or_none)


class DiagnosticDataModule(L.LightningDataModule):
    """The inpaint set: `{stem}_inpaint.*` with `{stem}_mask.*`, augmented with image and mask
    together; used both for dissection (RAD) and as the second term of the refit loss."""

    def __init__(
        self,
        root: str,
        image_dir: str,
        mask_dir: str,
        augment: dict[str, Any],
        preprocess: Preprocess,
        batch_size: int = 64,
        num_workers: int | str = "auto",
        seed: int = 0,
        dissect_max_batches: int = 100,
        dissect_augment: bool = True,
        source_hint: str = "",
        rad_weight: str = "mask",
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.image_dir = image_dir
        self.mask_dir = mask_dir
        self.augment_cfg = augment
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_workers = resolve_workers(num_workers)
        self.seed = seed
        self.dissect_max_batches = dissect_max_batches
        self.dissect_augment = dissect_augment
        self.hint = source_hint
        self.rad_weight = rad_weight
        self.dataset: InpaintImages | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            pairs = inpaint_pairs(self.root, self.image_dir, self.mask_dir, self.hint)
            self.dataset = InpaintImages(
                pairs, build_augment(self.augment_cfg), self.preprocess, self.seed, self.rad_weight
            )

    def train_dataloader(self, num_samples: int | None = None) -> DataLoader:
        assert self.dataset is not None
        rank, world = rank_world(self)
        check_shardable(num_samples or len(self.dataset), self.batch_size, world, "diag_data")
        sampler = SeededSampler(len(self.dataset), self.seed + 1, num_samples=num_samples)
        return make_loader(
            self.dataset, self.num_workers, batch_sampler=ShardedBatches(sampler, self.batch_size, rank, world)
        )

    def dissect_dataloader(self) -> DataLoader:
        """Reference: eval mode, up to `dissect_max_batches` batches, training augmentation."""
        assert self.dataset is not None
        dataset = self.dataset
        if not self.dissect_augment:
            dataset = InpaintImages(
                dataset.pairs, build_augment({"name": "none", "crop": 0}), self.preprocess, self.seed, self.rad_weight
            )
        sampler = SeededSampler(len(dataset), self.seed + 2, shuffle=True)
        batch = self.batch_size if self.dissect_augment else 1  # native sizes differ without a crop
        return make_loader(dataset, self.num_workers, sampler=sampler, batch_size=batch)


@dataclass(frozen=True)
class EvalSource:
    """One source of a benchmark under one post-processing setting: one predict dataloader."""

    source: str  # a source of the BenchmarkIndex: a real set or a subset's fakes
    setting: str
    is_real: bool


class BenchmarkDataModule(L.LightningDataModule):
    """A `BenchmarkIndex` under every post-processing setting: each source is read once per
    setting (a real set shared by many generators costs one pass), and each subset's fakes are
    scored against its paired real set (`subsets`); `groups` name the subsets averaged together."""

    def __init__(
        self,
        index: BenchmarkIndex,
        postprocess: dict[str, list[dict[str, Any]]],
        preprocess: Preprocess,
        batch_size: int = 64,
        num_workers: int | str = "auto",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.index = index
        self.name = index.name
        self.root = Path(index.root)
        self.subsets = {k: dict(v) for k, v in index.subsets.items()}
        self.groups = {k: list(v) for k, v in index.groups.items()}
        self.settings = {k: list(v or []) for k, v in postprocess.items()}
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.num_workers = resolve_workers(num_workers)
        self.seed = seed
        self.sources: list[EvalSource] = []
        self.datasets: list[EvalImages] = []
        if not self.settings:
            raise DearError("postprocess.settings is empty; give at least `clean: []`")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        reals = self.index.real_sources
        for setting, specs in self.settings.items():
            chain = Chain(setting, specs, self.seed)
            for name, samples in self.index.sources.items():
                self.sources.append(EvalSource(name, setting, name in reals))
                self.datasets.append(EvalImages(samples, chain, self.preprocess))

    def first_images(self, n: int) -> list[Sample]:
        """The first n images of the index, every source in index order (sorted keys within each)."""
        return [s for samples in self.index.sources.values() for s in samples][:n]

    def settings_beyond_clean(self) -> dict[str, list]:
        """The post-processing settings that change an image (every one with an op)."""
        return {name: specs for name, specs in self.settings.items() if specs}

    def predict_dataloader(self) -> list[DataLoader]:
        loaders = []
        rank, world = rank_world(self)
        for dataset in self.datasets:
            batches = SizeBucketBatchSampler(dataset.final_sizes(), self.batch_size, rank, world)
            loaders.append(make_loader(dataset, self.num_workers, batch_sampler=batches))
        return loaders
