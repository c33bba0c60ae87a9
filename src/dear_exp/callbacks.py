"""Lightning callbacks: dissection at fit start, and the reference's lr-drop early stopping."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from dear_exp import distributed
from dear_exp.cache import files_fingerprint
from dear_exp.data.datamodules import DiagnosticDataModule
from dear_exp.data.folders import pair_files
from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError
from dear_exp.prune import build_mask
from dear_exp.rad import dissect
from dear_exp.report import save_dissection

if TYPE_CHECKING:
    from dear_exp.features import FeatureStore

log = logging.getLogger(__name__)


class DissectCallback(Callback):
    """At fit start, before the first training step: RAD over the diagnostic set, then the mask.

    The detector is `detector`, or the module's own (`pl_module.detector`, online refit). With a
    FeatureStore the scores come from the cache (a sweep dissects once); under DDP rank 0 computes
    them and broadcasts. The scores and the mask are saved under `out_dir` and kept on the callback
    (`scores`, `mask`) for the report.
    """

    def __init__(
        self,
        diagnostic: DiagnosticDataModule | None,
        mode: str,
        alpha_low: float,
        alpha_high: float,
        seed: int,
        out_dir: Path | None = None,
        detector: Detector | None = None,
        store: FeatureStore | None = None,
    ) -> None:
        self.diagnostic = diagnostic
        self.mode, self.alpha_low, self.alpha_high, self.seed = mode, alpha_low, alpha_high, seed
        self.out_dir = out_dir
        self.detector, self.store = detector, store
        self.scores: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.stats: dict[str, int] = {}

    def rad_parts(self) -> dict[str, Any]:
        """What the RAD scores depend on besides the detector (the store adds the weights)."""
        d = self.diagnostic
        assert d is not None and d.dataset is not None
        return {"files": files_fingerprint(pair_files(d.dataset.pairs)), "augment": repr(d.dataset.augment), "seed": d.seed,
                "batch_size": d.batch_size, "max_batches": d.dissect_max_batches, "augmented": d.dissect_augment,
                "weight": d.rad_weight, "preprocess": dataclasses.asdict(d.preprocess)}

    def rad_scores(self, detector: Detector, device: torch.device) -> tuple[torch.Tensor, dict[str, int]]:
        d = self.diagnostic
        assert d is not None
        d.setup("fit")

        def compute() -> dict[str, torch.Tensor]:
            scores, stats = dissect(detector.to(device), d.dissect_dataloader(), d.dissect_max_batches, device,
                                    soft=d.rad_weight == "alpha")
            return {"scores": scores, "stats": torch.tensor([stats["images"], stats["skipped_no_foreground"],
                                                             stats["batches"]])}

        if self.store is not None:
            out = self.store.rad(self.rad_parts(), compute)
        else:
            out = distributed.from_rank_zero(compute)
        images, skipped, batches = (int(v) for v in out["stats"])
        return out["scores"], {"images": images, "skipped_no_foreground": skipped, "batches": batches}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        channels = pl_module.head.mask.numel()
        detector = self.detector if self.detector is not None else pl_module.detector
        if self.mode == "none":
            self.mask = torch.ones(channels)
            log.info("prune.mode=none: keeping all %d channels, no dissection", channels)
        elif self.mode == "released":
            released = detector.released_mask()
            if released is None:
                raise DearError(
                    f"prune.mode=released needs a detector whose checkpoint ships a channel mask (dear_c, dear_r); "
                    f"{type(detector).__name__} has none: use prune=bilateral"
                )
            self.mask = released.float().cpu()
            log.info("prune.mode=released: the checkpoint's own mask, no dissection")
        else:
            self.scores, self.stats = self.rad_scores(detector, pl_module.device)
            self.mask = build_mask(self.scores, self.mode, self.alpha_low, self.alpha_high, self.seed)
            log.info(
                "RAD over %(images)d diagnostic images (%(skipped_no_foreground)d without a generated region "
                "after augmentation skipped, %(batches)d batches)", self.stats,
            )
        pl_module.head.set_mask(self.mask)
        kept = int(self.mask.sum())
        log.info("prune.mode=%s keeps %d of %d channels", self.mode, kept, channels)
        for lg in trainer.loggers:
            lg.log_metrics({"prune/kept_channels": kept, "prune/total_channels": channels}, step=0)
        if self.out_dir is not None and trainer.is_global_zero:
            save_dissection(self.out_dir, self.scores, self.mask)


class PlateauLRDrop(Callback):
    """Reference early stopping: when `monitor` has not improved by `min_delta` for `patience`
    validations, divide the lr by 1/factor; stop once the new lr would fall below `min_lr`."""

    def __init__(
        self,
        monitor: str = "val/bacc",
        patience: int = 5,
        min_delta: float = 0.001,
        factor: float = 0.1,
        min_lr: float = 1e-6,
    ) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.factor, self.min_lr = factor, min_lr
        self.best = -float("inf")
        self.wait = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if value > self.best + self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.wait = 0
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                new_lr = group["lr"] * self.factor
                if new_lr < self.min_lr:
                    log.info("%s plateaued and lr %.1e cannot drop further: stopping", self.monitor, group["lr"])
                    trainer.should_stop = True
                    return
                group["lr"] = new_lr
                log.info("%s plateaued: lr -> %.1e", self.monitor, new_lr)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
