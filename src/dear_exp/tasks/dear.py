"""task=dear: dissect a frozen detector, prune both RAD extremes, refit the head, evaluate; beside
DEAR, the controls `refit` (the same refit, no channel pruned) and `random` (as many channels pruned
at random), so that every run shows what the refit alone does and what pruning adds."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from dear_exp import build, schema
from dear_exp.detectors import preprocess_of
from dear_exp.dissect import rad_scores
from dear_exp.distributed import rendezvous
from dear_exp.evaluate import calibration_thresholds
from dear_exp.features import describe_cache
from dear_exp.prune import PruneSettings, needs_rad, run_masks
from dear_exp.refit import RefitDataModule, RefitSettings, refit_heads, view_rows
from dear_exp.report import plots_wanted, save_refit, write_report
from dear_exp.tasks.fragility import demo_world, premise
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    head: RefitSettings = schema.build(cfg.head, "head")
    prune: PruneSettings = schema.build(cfg.prune, "prune")
    draw = plots_wanted(cfg.task.plots)
    if cfg.task.fragility.enabled:
        demo_world(cfg, cfg.task.fragility.cues)  # an impossible task.fragility.cues fails before any work
    build.ensure_demo(cfg, [cfg.train_data.root, cfg.diag_data.root, cfg.benchmark.root])
    ensure_detector(cfg)
    L.seed_everything(cfg.seed, workers=True)
    out_dir, preprocess = Path(cfg.paths.work_dir), preprocess_of(cfg.detector)
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
    assert train.train_set is not None and train.val_set is not None and diag.dataset is not None

    # 1. dissect: RAD per channel on the diagnostic inpaint set
    scores = rad_scores(diag, detector, device, store)[0] if needs_rad(prune.mode) else None
    # 2. prune: the run's mask (the last), and the controls' masks
    masks = run_masks(prune, scores, detector.feature_channels, detector.released_mask(), cfg.task.controls)
    log.info(
        "prune.mode=%s keeps %d of %d channels",
        prune.mode,
        int(list(masks.values())[-1].sum()),
        detector.feature_channels,
    )
    if cfg.task.fragility.enabled and scores is not None:  # the premise, beside RAD (every rank: a share each)
        premise(cfg, cfg.task.fragility, detector, scores, benchmark, device, loggers, store)
    # 3. refit the head of every model on the same rows
    rows = (
        view_rows(store, train.train_set, diag.dataset, train.val_set, head.views, cfg.seed, cfg.train_data.batch_size)
        if head.mode == "cached"
        else None
    )
    fits = refit_heads(
        masks,
        head,
        detector,
        device,
        rows,
        store,
        RefitDataModule(train, diag) if rows is None else None,
        lambda name: build.make_trainer(
            cfg.trainer,
            build.fit_callbacks(cfg, out_dir, name),
            loggers if name == list(masks)[-1] else [],
            cfg.progress,
        ),
        cfg.seed,
        (cfg.train_data.batch_size, cfg.diag_data.batch_size),
    )
    # 4. evaluate the base detector and every head from one backbone pass per image
    heads = {f.name: f.head for f in fits}
    calibrated = (
        calibration_thresholds(store, train.val_set.samples, preprocess, heads, cfg.seed, cfg.benchmark.batch_size)
        if "calibrated" in cfg.task.thresholds
        else None
    )
    results = build.evaluation(cfg, trainer, store, benchmark, heads, calibrated)
    log.info("Feature cache: %s", describe_cache(store.cache))
    if not trainer.is_global_zero:
        return {}
    written = save_refit(cfg, out_dir, fits, scores, detector, loggers, draw)
    metrics = write_report(cfg, "dear", out_dir, results, loggers, draw)
    figures = ", racc_facc.png, severity.png, roc.png, pr.png" if draw else " (no figures: task.plots)"
    log.info(
        "Wrote results.csv, results.md%s%s, %s (into %s when the run ends)",
        ", scores.csv" if cfg.task.scores == "csv" else "",
        figures,
        ", ".join(written),
        cfg.paths.output_dir,
    )
    return metrics
