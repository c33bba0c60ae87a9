"""Dissection (method.md step 2): RAD scores of the frozen detector over the diagnostic inpaint set.

Computed once per detector and diagnostic set: through the feature cache when a store is given (a
whole sweep dissects once), by rank 0 alone under DDP, its result broadcast to every rank.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import torch

from dear_exp import distributed
from dear_exp.cache import files_fingerprint
from dear_exp.data.datamodules import DiagnosticDataModule
from dear_exp.data.folders import pair_files
from dear_exp.detectors.base import Detector
from dear_exp.rad import dissect

if TYPE_CHECKING:
    from dear_exp.features import FeatureStore

log = logging.getLogger(__name__)


def rad_parts(diagnostic: DiagnosticDataModule) -> dict[str, Any]:
    """What the RAD scores depend on besides the detector (the store adds the weights)."""
    d = diagnostic
    assert d.dataset is not None
    return {"files": files_fingerprint(pair_files(d.dataset.pairs)), "augment": repr(d.dataset.augment), "seed": d.seed,
            "batch_size": d.batch_size, "max_batches": d.dissect_max_batches, "augmented": d.dissect_augment,
            "weight": d.rad_weight, "preprocess": dataclasses.asdict(d.preprocess)}


def rad_scores(diagnostic: DiagnosticDataModule, detector: Detector, device: torch.device,
               store: FeatureStore | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """Mean RAD per channel, and how many diagnostic images counted (the others lost their generated
    region to augmentation)."""
    diagnostic.setup("fit")

    def compute() -> dict[str, torch.Tensor]:
        scores, stats = dissect(detector.to(device), diagnostic.dissect_dataloader(), diagnostic.dissect_max_batches,
                                device, soft=diagnostic.rad_weight == "alpha")
        return {"scores": scores, "stats": torch.tensor([stats["images"], stats["skipped_no_foreground"],
                                                         stats["batches"]])}

    out = store.rad(rad_parts(diagnostic), compute) if store is not None else distributed.from_rank_zero(compute)
    images, skipped, batches = (int(v) for v in out["stats"])
    stats = {"images": images, "skipped_no_foreground": skipped, "batches": batches}
    log.info("RAD over %(images)d diagnostic images (%(skipped_no_foreground)d without a generated region after "
             "augmentation skipped, %(batches)d batches)", stats)
    return out["scores"], stats
