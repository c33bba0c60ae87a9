"""Sharding the generation over devices with Lightning's predict loop.

Under DDP each rank reads an interleaved shard of the jobs (`job_loader`: no padding, no
duplicates), so every image is handled by exactly one rank. The pipeline is
built per rank in `on_predict_start` on that rank's device, as a plain attribute (not a submodule:
it is neither pickled to the workers nor wrapped by the strategy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset

from dear_exp import distributed
from dear_exp.data.images import load_image
from dear_exp.data.seeding import item_seed
from dear_exp.errors import DearError
from dear_exp.inpaint.composite import Prepared, composite, prepare
from dear_exp.inpaint.pipeline import ModelSource, generate, load_pipeline
from dear_exp.inpaint.settings import InpaintSettings
from dear_exp.inpaint.writer import Job, Layout, write_outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    stem: str
    status: str  # written | skipped | failed
    rank: int
    reason: str = ""


class JobIndices(Dataset):
    """Indices into the job list: the images are read in `predict_step`, where a corrupt file is a
    counted failure rather than an exception in a loader."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def _as_list(batch: list[int]) -> list[int]:
    return list(batch)


def job_loader(n: int, batch_size: int, rank: int = 0, world: int = 1) -> DataLoader:
    """Rank r takes jobs r, r + world, ... (interleaved, no padding: every image exactly once)."""
    return DataLoader(
        Subset(JobIndices(n), range(rank, n, world)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        collate_fn=_as_list,
    )


class InpaintWriter(L.LightningModule):
    """predict_step: skip finished pairs, read, mask, inpaint, composite, write atomically."""

    def __init__(self, jobs: list[Job], settings: InpaintSettings, layout: Layout, source: ModelSource) -> None:
        super().__init__()
        self.jobs = jobs
        self.settings = settings
        self.layout = layout
        self.source = source
        self.pipe: Any = None  # a DiffusionPipeline, built per rank in on_predict_start
        self.records: list[Record] = []
        self.load_seconds = 0.0
        self.step_seconds = 0.0
        self.ranks: list[dict[str, Any]] = []  # after predict: every rank's records and timings

    def on_predict_start(self) -> None:
        start = time.perf_counter()
        self.pipe = load_pipeline(self.settings, self.trainer.strategy.root_device, self.source)
        self.layout.make_dirs()
        self.load_seconds = time.perf_counter() - start

    def _record(self, stem: str, status: str, reason: str = "") -> None:
        self.records.append(Record(stem, status, self.global_rank, reason))

    def predict_step(self, batch: list[int], batch_idx: int) -> list[str]:
        start = time.perf_counter()
        try:
            return self._inpaint(batch)
        finally:
            self.step_seconds += time.perf_counter() - start

    def _inpaint(self, batch: list[int]) -> list[str]:
        s = self.settings
        ready: list[Prepared] = []
        for index in batch:
            job = self.jobs[index]
            if self.layout.is_done(job.stem):  # finished by an earlier or concurrent run
                self._record(job.stem, "skipped", "already done")
                continue
            try:
                image = load_image(job.path)
                ready.append(prepare(image, job.stem, item_seed(s.seed, job.stem), s))
            except (DearError, ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                message = " ".join(str(exc).split()) or type(exc).__name__
                self._record(job.stem, "failed", message if str(job.path) in message else f"{job.path}: {message}")
        if not ready:
            return []
        generated = generate(
            self.pipe, [p.work_image for p in ready], [p.pipe_mask for p in ready], [p.seed for p in ready], s
        )
        for p, out in zip(ready, generated):
            if not out.getbbox():  # all black: NaNs in half precision, or a safety checker that slipped in
                self._record(
                    p.stem,
                    "failed",
                    "the pipeline returned an all-black image (NaNs in half precision? "
                    "try inpaint.dtype.cuda=float32 or bfloat16)",
                )
                continue
            inpaint, alpha = composite(p, out, s.composite)
            write_outputs(self.layout, p.stem, inpaint, p.mask, alpha)
            self._record(p.stem, "written")
        return [r.stem for r in self.records if r.status == "written"]

    def on_predict_epoch_end(self) -> None:
        """Every rank's records and timings on every rank, for the closing summary."""
        mine = {
            "rank": self.global_rank,
            "device": str(self.trainer.strategy.root_device),
            "load_seconds": self.load_seconds,
            "step_seconds": self.step_seconds,
            "records": [asdict(r) for r in self.records],
        }
        self.ranks = sorted(distributed.all_gather(mine), key=lambda r: r["rank"])

    def on_predict_end(self) -> None:
        self.pipe = None  # free the weights before the process goes on
