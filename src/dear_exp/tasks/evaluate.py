"""task=evaluate: score a detector as released (and optionally a saved head) without training."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from dear_exp import build
from dear_exp.detectors import preprocess_of
from dear_exp.distributed import rendezvous
from dear_exp.evaluate import calibration_thresholds
from dear_exp.features import describe_cache
from dear_exp.refit import load_head
from dear_exp.report import plots_wanted, write_report
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    draw = plots_wanted(cfg.task.plots)
    build.ensure_demo(
        cfg, [cfg.benchmark.root] + ([cfg.train_data.root] if cfg.detector.get("train_if_missing") else [])
    )
    ensure_detector(cfg)
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    detector = build.detector(cfg)
    heads = {}
    if cfg.task.get("head"):  # head_refit.safetensors -> model `refit`; head.safetensors -> `dear`
        path = Path(cfg.task.head)
        name = path.stem.removeprefix("head_") if path.stem.startswith("head_") else "dear"
        heads[name] = load_head(detector, path)
    benchmark = build.benchmark(cfg, preprocess)
    benchmark.setup("predict")
    loggers = build.instantiate_group(cfg.get("logger"), "logger")
    build.log_config(loggers, cfg)
    trainer = build.make_trainer(cfg.trainer, [], loggers, cfg.progress)
    rendezvous(trainer)
    store = build.feature_store(cfg, trainer, detector)
    calibrated = None
    if "calibrated" in cfg.task.thresholds:  # on the validation split of train_data
        build.ensure_demo(cfg, [cfg.train_data.root])
        data = build.train_data(cfg, preprocess, cfg.augment, cfg.benchmark.batch_size)
        data.setup("validate")
        assert data.val_set is not None
        calibrated = calibration_thresholds(
            store, data.val_set.samples, preprocess, heads, cfg.seed, cfg.benchmark.batch_size
        )
    results = build.evaluation(cfg, trainer, store, benchmark, heads, calibrated)
    log.info("Feature cache: %s", describe_cache(store.cache))
    if not trainer.is_global_zero:
        return {}
    return write_report(cfg, "evaluate", Path(cfg.paths.work_dir), results, loggers, draw)
