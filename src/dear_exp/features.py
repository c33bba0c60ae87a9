"""One backbone pass per image: pooled features at the dissected layer (and the detector's own
logit), extracted through `trainer.predict`, sharded without padding, gathered, and cached.

Every consumer (the head refit, calibration, evaluation, the whole alpha sweep) works on these
rows; only `head.mode=online` still runs the backbone inside the training loop.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset, Sampler

from dear_exp import distributed
from dear_exp.cache import FeatureCache, Tensors, digest, files_fingerprint
from dear_exp.data.datamodules import make_loader
from dear_exp.data.datasets import EvalImages, LabelledImages
from dear_exp.data.folders import pair_files
from dear_exp.data.samplers import SizeBucketBatchSampler
from dear_exp.detectors.base import Detector
from dear_exp.detectors.deferred import class_name, fingerprint, real
from dear_exp.refit.rows import Views

log = logging.getLogger(__name__)


class FeatureExtractor(L.LightningModule):
    """The frozen detector in predict mode: per image pool(F) and, with `logits`, forward_head(F).
    On CUDA the convolutions run channels_last (same numbers, faster kernels)."""

    def __init__(self, detector: Detector, logits: bool = True) -> None:
        super().__init__()
        self.detector = detector.eval()
        for p in self.detector.parameters():
            p.requires_grad_(False)
        self.logits = logits

    def on_predict_start(self) -> None:
        if self.device.type == "cuda":
            self.detector.to(memory_format=torch.channels_last)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> Tensors:
        x, label, index, source = batch
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.detector.forward_features(x)
        out = {
            "pooled": self.detector.pool(features).float().cpu(),
            "label": label.float().cpu(),
            "index": index.long().cpu(),
            "source": source.long().cpu(),
        }
        if self.logits:
            out["logit"] = self.detector.forward_head(features).float().cpu()
        return out


def data_parts(dataset: Views | EvalImages, seen: dict[int, tuple[Any, str]] | None = None) -> dict[str, Any]:
    """What the rows of a data set depend on: its files (path, size, mtime), labels, and how each
    image is turned into a tensor (augmentation or post-processing, seeds, preprocessing). `seen`:
    the files' fingerprints already taken in this request, by their list of samples (a benchmark's
    settings share their sources' lists: 100,000 images under five settings are read once, not five
    times, by os.stat)."""
    if isinstance(dataset, EvalImages):
        source: Any = dataset.samples
        files = [s.path for s in dataset.samples]
        labels = [s.label for s in dataset.samples]
        how: dict[str, Any] = {
            "postprocess": dataset.chain.name,
            "specs": dataset.chain.specs,
            "seed": dataset.chain.seed,
        }
        preprocess = dataset.preprocess
    else:
        inner = dataset.dataset
        if isinstance(inner, LabelledImages):
            source, files, labels = inner.samples, [s.path for s in inner.samples], [s.label for s in inner.samples]
            how = {"weight": None}
        else:
            source, files = inner.pairs, pair_files(inner.pairs)
            labels, how = [], {"weight": inner.weight}
        how.update(augment=repr(inner.augment), seed=dataset.seed, views=dataset.views)
        preprocess = inner.preprocess
    known = seen.get(id(source)) if seen is not None else None
    if known is None or known[0] is not source:
        known = (source, files_fingerprint(files))
        if seen is not None:
            seen[id(source)] = known  # holding the list: its id is not reused while `seen` lives
    return {
        "files": known[1],
        "n": len(dataset),
        "labels": digest(labels),
        "how": how,
        "preprocess": dataclasses.asdict(preprocess),
    }


@contextmanager
def whole_predict(trainer: L.Trainer) -> Iterator[None]:
    """Feature rows are always complete: debug limits on prediction (fast_dev_run) apply to
    Lightning's loops, not to what is extracted and cached."""
    saved = trainer.limit_predict_batches
    trainer.limit_predict_batches = 1.0
    try:
        yield
    finally:
        trainer.limit_predict_batches = saved


def sizes_of(dataset: Views | EvalImages) -> list[tuple[int, int]]:
    return dataset.final_sizes() if isinstance(dataset, EvalImages) else [(0, 0)] * len(dataset)


class Stacked(Dataset):
    """Several data sets behind one loader (one worker pool, one predict call): item (d, i) is
    item i of data set d, tagged with d."""

    def __init__(self, datasets: list[Views | EvalImages]) -> None:
        self.datasets = datasets

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        d, i = item
        x, label, index = self.datasets[d][i]
        return x, label, index, torch.tensor(d)


class StackedBatches(Sampler[list[tuple[int, int]]]):
    """Size-bucketed batches of every data set (a batch never mixes data sets), dealt round robin
    to the ranks. A rank left without a batch (fewer batches than ranks) re-scores batch 0, whose
    copy is dropped when the rows are gathered: Lightning needs a batch on every rank."""

    def __init__(self, datasets: list[Views | EvalImages], batch_size: int, rank: int = 0, world: int = 1) -> None:
        batches = [
            [(d, i) for i in b]
            for d, ds in enumerate(datasets)
            for b in SizeBucketBatchSampler(sizes_of(ds), batch_size).batches
        ]
        self.batches = batches[rank::world] or batches[:1]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)


def extract(
    trainer: L.Trainer,
    extractor: FeatureExtractor,
    datasets: list[Views | EvalImages],
    batch_size: int,
    num_workers: int,
) -> list[Tensors]:
    """Rows of every data set, in index order, from one `trainer.predict` call. Under DDP each
    rank scores whole batches (round robin, the batches of a single process); the rows are
    gathered on every rank and checked: each index of each data set exactly once."""
    batches = StackedBatches(datasets, batch_size, *distributed.rank_world(trainer))
    loader = make_loader(Stacked(datasets), num_workers, batch_sampler=batches)
    with whole_predict(trainer):
        outputs = trainer.predict(extractor, dataloaders=loader)
    local = {k: torch.cat([b[k] for b in outputs]) for k in outputs[0]}  # type: ignore[index,union-attr]
    gathered = distributed.all_gather(local)
    rows = {k: torch.cat([g[k] for g in gathered]) for k in local}
    results = []
    for d, ds in enumerate(datasets):
        mine = rows["source"] == d
        part = {k: v[mine] for k, v in rows.items() if k != "source"}
        order = torch.argsort(part["index"], stable=True)
        part = {k: v[order] for k, v in part.items()}
        keep = torch.ones(len(order), dtype=torch.bool)
        keep[1:] = part["index"][1:] != part["index"][:-1]  # a re-scored batch 0's copies
        part = {k: v[keep] for k, v in part.items()}
        if not torch.equal(part["index"], torch.arange(len(ds))):
            raise RuntimeError(f"feature extraction returned {len(part['index'])} rows for {len(ds)} items")
        results.append(part)
    return results


class FeatureStore:
    """Cached rows for one detector: `views` (training and inpaint crops, K per image) and
    `images` (native-size evaluation and calibration images, with the detector's own logit)."""

    def __init__(self, cache: FeatureCache, trainer: L.Trainer, detector: Detector, num_workers: int) -> None:
        self.cache, self.trainer, self.detector = cache, trainer, detector
        self.num_workers = num_workers
        self._common: dict[str, Any] | None = None

    @property
    def who(self) -> str:
        """The detector and layer, as entries are described in `task=cache`'s listing."""
        return f"{class_name(self.detector)}@{self.detector.feature_layer}"

    @property
    def common(self) -> dict[str, Any]:
        """Key parts every entry shares: the weights, the layer, the numerics (on the CPU, the thread
        count moves float results; on a GPU the CPU threads do not touch them)."""
        if self._common is None:
            device = self.trainer.strategy.root_device.type
            self._common = {
                "detector": fingerprint(self.detector),
                "class": class_name(self.detector),
                "layer": self.detector.feature_layer,
                "precision": str(self.trainer.precision),
                "device": device,
                "torch": torch.__version__.split("+")[0],
            }
            if device == "cpu":
                self._common["threads"] = torch.get_num_threads()
        return self._common

    def rows(
        self, kind: str, requests: list[tuple[str, Views | EvalImages]], logits: bool, batch_size: int = 64
    ) -> list[Tensors]:
        """Rows of every requested data set; the misses are extracted together, in one pass."""

        def compute(missing: list[int]) -> list[Tensors]:
            extractor = FeatureExtractor(real(self.detector), logits=logits)
            return extract(self.trainer, extractor, [requests[i][1] for i in missing], batch_size, self.num_workers)

        seen: dict[int, tuple[Any, str]] = {}
        keyed = [
            ({**self.common, "logits": logits, **data_parts(ds, seen)}, f"{self.who}: {describe}")
            for describe, ds in requests
        ]
        return self.cache.fetch_many(kind, keyed, compute)

    def fit(self, parts: dict[str, Any], compute: Any, describe: str) -> Tensors:
        """A solved head (refit.NewtonFit.to_tensors), keyed by the content of the rows it was solved
        on, its mask and the solver settings: rank 0 solves, the others receive it."""
        return self.cache.fetch("heads", {**self.common, **parts}, compute, f"{self.who}: {describe}", collective=False)

    def rad(self, parts: dict[str, Any], compute: Any) -> Tensors:
        """RAD scores: computed by rank 0 alone (a plain loop, at most dissect_max_batches) and broadcast."""
        return self.cache.fetch("rad", {**self.common, **parts}, compute, f"{self.who}: RAD scores", collective=False)

    def fragility(self, parts: dict[str, Any], compute: Any, describe: str) -> Tensors:
        """The fragility pass's per-channel sums (`fragility.measure`): every rank measures its share of
        the images and the sums are added (collective), then cached."""
        return self.cache.fetch("fragility", {**self.common, **parts}, compute, f"{self.who}: {describe}")


def describe_cache(cache: FeatureCache) -> str:
    return f"{cache.hits} hit(s), {cache.misses} miss(es) in {cache.root}" if cache.enabled else "cache disabled"


def head_logits(head: torch.nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """The DEAR logit from cached pooled features (the head is linear: no backbone pass)."""
    with torch.no_grad():
        return head.to("cpu")(pooled.float())
