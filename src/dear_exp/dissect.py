"""Dissection (method.md step 2): the Regional Activation Discrepancy of every channel of the frozen
detector over the diagnostic inpaint set, with the reference's conventions.

`rad_scores` is the stage: computed once per detector and diagnostic set, through the feature cache
when a store is given (a whole sweep dissects once), by rank 0 alone under DDP, its result broadcast
to every rank. The functions above it are the measurement itself, usable on any loader.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from dear_exp import distributed
from dear_exp.cache import files_fingerprint
from dear_exp.data.datamodules import DiagnosticDataModule
from dear_exp.data.folders import pair_files
from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError

if TYPE_CHECKING:
    from dear_exp.features import FeatureStore

log = logging.getLogger(__name__)
EPS = 1e-6


def mask_weights(masks: torch.Tensor, size: tuple[int, int], soft: bool = False) -> torch.Tensor:
    """Binarise full-resolution masks (>0.5) and resize them bilinearly to the feature map.

    masks: [N, H, W] or [N, 1, H, W] in [0, 1]. Returns soft weights [N, 1, h, w] (reference:
    bilinear, align_corners=False).
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    weights = masks.float() if soft else (masks > 0.5).float()  # soft: the blurred alpha as it is
    return F.interpolate(weights, size=size, mode="bilinear", align_corners=False)


def rad_per_image(features: torch.Tensor, masks: torch.Tensor, soft: bool = False) -> torch.Tensor:
    """RAD_k = mean(F_k inside) - mean(F_k in the background), per image: [N, C].

    Inside mean = sum(F*m)/(sum(m)+eps), background mean = sum(F*(1-m))/(sum(1-m)+eps), with m
    the bilinearly resized binary mask used as a soft weight.
    """
    m = mask_weights(masks, (features.shape[-2], features.shape[-1]), soft).to(features.dtype)
    inside = (features * m).sum((2, 3)) / (m.sum((2, 3)) + EPS)
    background = (features * (1 - m)).sum((2, 3)) / ((1 - m).sum((2, 3)) + EPS)
    return inside - background


def has_both_regions(masks: torch.Tensor, survived: torch.Tensor | None = None) -> torch.Tensor:
    """Which views still have generated pixels and background after augmentation: RAD compares the
    two, so only these count (a crop wholly inside or outside the inpainted region has no RAD).
    survived: the dataset's own flag for generated pixels (from the sharp mask when masks are soft)."""
    inside = masks.flatten(1) > 0.5
    generated = inside.any(dim=1) if survived is None else survived.bool().to(masks.device)
    return generated & ~inside.all(dim=1)


class RADAccumulator:
    """Averages per-image RAD vectors over a diagnostic set, in float64."""

    def __init__(self, soft: bool = False) -> None:
        self.soft = soft
        self.total: torch.Tensor | None = None
        self.count = 0
        self.skipped = 0

    def update(self, features: torch.Tensor, masks: torch.Tensor, survived: torch.Tensor | None = None) -> None:
        """survived: the dataset's flag for generated pixels left in each view (None: from `masks`)."""
        valid = has_both_regions(masks, survived)
        self.skipped += int((~valid).sum())
        if not valid.any():
            return
        rad = rad_per_image(features[valid].float(), masks[valid].to(features.device), self.soft).double().sum(0)
        self.total = rad.cpu() if self.total is None else self.total + rad.cpu()
        self.count += int(valid.sum())

    def compute(self) -> torch.Tensor:
        if self.total is None or self.count == 0:
            raise DearError(
                f"no diagnostic view kept both a generated region and background after augmentation ({self.skipped} "
                "skipped), so there is no RAD to measure; use larger crops (augment.crop) or diag_data.dissect_augment=false"
            )
        return (self.total / self.count).float()


@torch.no_grad()
def dissect(
    detector: Detector,
    loader: torch.utils.data.DataLoader,
    max_batches: int,
    device: torch.device,
    soft: bool = False,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Mean RAD per channel over up to `max_batches` diagnostic batches, detector in eval mode."""
    was_training = detector.training
    detector.eval()
    acc = RADAccumulator(soft)
    batches = 0
    for batches, (x, masks, target) in enumerate(loader, start=1):
        # the dataset's target: generated pixels survived, from the sharp mask (the soft alpha's halo is no evidence)
        acc.update(detector.forward_features(x.to(device)), masks.to(device), target > 0.5)
        if batches >= max_batches:
            break
    detector.train(was_training)
    return acc.compute(), {"images": acc.count, "skipped_views": acc.skipped, "batches": batches}


def rad_parts(diagnostic: DiagnosticDataModule) -> dict[str, Any]:
    """What the RAD scores depend on besides the detector (the store adds the weights)."""
    d = diagnostic
    assert d.dataset is not None
    return {
        "files": files_fingerprint(pair_files(d.dataset.pairs)),
        "augment": repr(d.dataset.augment),
        "seed": d.seed,
        "batch_size": d.batch_size,
        "max_batches": d.dissect_max_batches,
        "augmented": d.dissect_augment,
        "weight": d.rad_weight,
        "preprocess": dataclasses.asdict(d.preprocess),
        # which views count: from session 5 only views with both a generated region and background
        # (entries computed under the earlier rule, which also counted views without background, differ)
        "views": "both regions",
    }


def rad_scores(
    diagnostic: DiagnosticDataModule, detector: Detector, device: torch.device, store: FeatureStore | None = None
) -> tuple[torch.Tensor, dict[str, int]]:
    """Mean RAD per channel, and how many diagnostic images counted (the others lost their generated
    region to augmentation)."""
    diagnostic.setup("fit")

    def compute() -> dict[str, torch.Tensor]:
        scores, stats = dissect(
            detector.to(device),
            diagnostic.dissect_dataloader(),
            diagnostic.dissect_max_batches,
            device,
            soft=diagnostic.rad_weight == "alpha",
        )
        return {
            "scores": scores,
            "stats": torch.tensor([stats["images"], stats["skipped_views"], stats["batches"]]),
        }

    out = store.rad(rad_parts(diagnostic), compute) if store is not None else distributed.from_rank_zero(compute)
    images, skipped, batches = (int(v) for v in out["stats"])
    stats = {"images": images, "skipped_views": skipped, "batches": batches}
    log.info(
        "RAD over %(images)d diagnostic images (%(skipped_views)d views without both a generated region and background "
        "after augmentation skipped, %(batches)d batches)",
        stats,
    )
    return out["scores"], stats
