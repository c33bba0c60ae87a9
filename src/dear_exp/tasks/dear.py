"""task=dear: dissect a frozen detector, prune both RAD extremes, refit the head, evaluate; beside
DEAR, the controls `refit` (the same refit, no channel pruned) and `random` (as many channels pruned
at random), so that every run shows what the refit alone does and what pruning adds.

`prepare` is what every alpha pair of a detector and its data shares (dissection, the cached rows);
`fit_pair` is one pair's masks, refits and evaluation from them: task=dear_grid runs it per pair."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from dear_exp import build, schema
from dear_exp.data.datamodules import BenchmarkDataModule, DiagnosticDataModule, TrainDataModule
from dear_exp.detectors import preprocess_of
from dear_exp.detectors.base import Detector
from dear_exp.dissect import rad_scores
from dear_exp.distributed import rendezvous
from dear_exp.evaluate import Evaluation, calibration_thresholds
from dear_exp.features import FeatureStore, describe_cache
from dear_exp.prune import PruneSettings, needs_rad, run_masks
from dear_exp.refit import HeadFit, RefitDataModule, RefitSettings, SharedRows, refit_heads, view_rows
from dear_exp.report import plots_wanted, save_refit, write_report
from dear_exp.tasks.fragility import demo_world, premise
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A run's detector, data, loggers and trainer, the RAD scores (None where the prune mode reads
    none) and the cached rows every head is refitted on (None for head.mode=online)."""

    cfg: DictConfig
    head: RefitSettings
    detector: Detector
    train: TrainDataModule
    diag: DiagnosticDataModule
    benchmark: BenchmarkDataModule
    loggers: list[Any]
    trainer: L.Trainer
    store: FeatureStore
    device: torch.device
    scores: torch.Tensor | None
    shared: SharedRows | None = None  # the cached rows and what every head solved on them shares

    @property
    def rows(self) -> tuple[Any, Any, Any] | None:
        return self.shared.rows if self.shared is not None else None

    def masks(self, prune: PruneSettings) -> dict[str, torch.Tensor]:
        """Every head's channel mask for one prune setting (`run_masks`), the run's own last."""
        d = self.detector
        return run_masks(prune, self.scores, d.feature_channels, d.released_mask(), self.cfg.task.controls)

    def read_rows(self) -> None:
        """The cached rows every head is refitted on (head.mode=cached): extracted on a cache miss."""
        t, cfg = self.train, self.cfg
        assert t.train_set is not None and t.val_set is not None and self.diag.dataset is not None
        if self.head.mode == "cached":
            self.shared = SharedRows(
                view_rows(
                    self.store,
                    t.train_set,
                    self.diag.dataset,
                    t.val_set,
                    self.head.views,
                    cfg.seed,
                    cfg.train_data.batch_size,
                )
            )


def prepare(cfg: DictConfig, head: RefitSettings, rad: bool) -> Prepared:
    """Everything before the masks: the data checked before any work, then (`rad`) the dissection."""
    build.ensure_demo(cfg, [cfg.train_data.root, cfg.diag_data.root, cfg.benchmark.root])
    ensure_detector(cfg)
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    detector = build.detector(cfg)  # a wrong checkpoint fails first; cached: its weights are not read
    train, diag = build.train_data(cfg, preprocess, cfg.augment), build.diag_data(cfg, preprocess)
    train.setup("fit")  # missing data fails here, before any work: training data first
    diag.setup("fit")
    benchmark = build.benchmark(cfg, preprocess)
    benchmark.setup("predict")
    loggers = build.instantiate_group(cfg.get("logger"), "logger")
    build.log_config(loggers, cfg)
    trainer = build.make_trainer(
        cfg.trainer, build.instantiate_group(cfg.get("callbacks"), "callback"), loggers, cfg.progress
    )
    rendezvous(trainer)  # under DDP: every rank from here on, so cache decisions are taken once
    store, device = build.feature_store(cfg, trainer, detector), trainer.strategy.root_device
    # 1. dissect: RAD per channel on the diagnostic inpaint set
    scores = rad_scores(diag, detector, device, store)[0] if rad else None
    return Prepared(cfg, head, detector, train, diag, benchmark, loggers, trainer, store, device, scores)


def fit_pair(
    p: Prepared, prune: PruneSettings, masks: dict[str, torch.Tensor], loggers: list[Any], out_dir: Path
) -> tuple[list[HeadFit], Evaluation]:
    """3. refit every model's head (`masks`: 2., `Prepared.masks`) on the same rows, 4. evaluate the base
    detector and every head from one backbone pass per image. `loggers`: those the run's own Adam fit
    logs to; `out_dir`: where its checkpoints and scores.csv go."""
    cfg = p.cfg
    levels = "" if prune.mode in ("none", "released") else f" {prune.alpha_low}/{prune.alpha_high}"
    log.info(
        "prune.mode=%s%s keeps %d of %d channels",
        prune.mode,
        levels,
        int(list(masks.values())[-1].sum()),
        p.detector.feature_channels,
    )
    fits = refit_heads(
        masks,
        p.head,
        p.detector,
        p.device,
        p.rows,
        p.store,
        RefitDataModule(p.train, p.diag) if p.rows is None else None,
        lambda name: build.make_trainer(
            cfg.trainer,
            build.fit_callbacks(cfg, out_dir, name),
            loggers if name == list(masks)[-1] else [],
            cfg.progress,
        ),
        cfg.seed,
        (cfg.train_data.batch_size, cfg.diag_data.batch_size),
        p.shared,
    )
    heads = {f.name: f.head for f in fits}
    assert p.train.val_set is not None
    calibrated = (
        calibration_thresholds(
            p.store, p.train.val_set.samples, preprocess_of(cfg.detector), heads, cfg.seed, cfg.benchmark.batch_size
        )
        if "calibrated" in cfg.task.thresholds
        else None
    )
    return fits, build.evaluation(cfg, p.trainer, p.store, p.benchmark, heads, calibrated, out_dir)


def run(cfg: DictConfig) -> dict[str, float]:
    head: RefitSettings = schema.build(cfg.head, "head")
    prune: PruneSettings = schema.build(cfg.prune, "prune")
    draw = plots_wanted(cfg.task.plots)
    if cfg.task.fragility.enabled:
        demo_world(cfg, cfg.task.fragility.cues)  # an impossible task.fragility.cues fails before any work
    p = prepare(cfg, head, needs_rad(prune.mode))
    masks = p.masks(prune)  # 2. prune: an impossible mask fails before the rows are extracted
    if cfg.task.fragility.enabled and p.scores is not None:  # the premise, beside RAD (every rank: a share each)
        premise(cfg, cfg.task.fragility, p.detector, p.scores, p.benchmark, p.device, p.loggers, p.store)
    p.read_rows()
    out_dir = Path(cfg.paths.work_dir)
    fits, results = fit_pair(p, prune, masks, p.loggers, out_dir)
    log.info("Feature cache: %s", describe_cache(p.store.cache))
    if not p.trainer.is_global_zero:
        return {}
    written = save_refit(cfg, out_dir, fits, p.scores, p.detector, p.loggers, draw)
    metrics = write_report(cfg, "dear", out_dir, results, p.loggers, draw)
    figures = ", racc_facc.png, severity.png, roc.png, pr.png" if draw else " (no figures: task.plots)"
    log.info(
        "Wrote results.csv, results.md%s%s, %s (into %s when the run ends)",
        ", scores.csv" if cfg.task.scores == "csv" else "",
        figures,
        ", ".join(written),
        cfg.paths.output_dir,
    )
    return metrics
