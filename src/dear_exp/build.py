"""The objects a config describes, built from its `_target_`s: datamodules, trainer, loggers,
callbacks, the feature store; and the embedded demo data a task may read."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dear_exp.cache import FeatureCache
from dear_exp.data.datamodules import BenchmarkDataModule, DiagnosticDataModule, TrainDataModule, resolve_workers
from dear_exp.data.images import Preprocess
from dear_exp.detectors import build_detector
from dear_exp.detectors.base import Detector
from dear_exp.detectors.deferred import load_detector
from dear_exp.errors import DearError
from dear_exp.evaluate import Evaluation, evaluate
from dear_exp.features import FeatureStore

log = logging.getLogger(__name__)


def ensure_demo(cfg: DictConfig, roots: list[str]) -> None:
    """Build (once, cached) the embedded demo data when one of the roots a task reads lies in it."""
    demo_dir = Path(cfg.demo.dir).resolve()
    if not any(Path(r).resolve().is_relative_to(demo_dir) for r in roots):
        return
    from dear_exp.demo import ensure_demo_data

    built = ensure_demo_data(
        Path(cfg.paths.cache_dir) / "demo", scale=cfg.demo.scale, seed=cfg.demo.seed, texture=cfg.demo.texture
    )
    if Path(built).resolve() != Path(cfg.demo.dir).resolve():
        raise DearError(
            f"demo.dir={cfg.demo.dir} but the demo data was built at {built}; leave demo.dir at its default"
        )


def instantiate_group(group: DictConfig | None, what: str) -> list[Any]:
    """Every entry of a group of `_target_`s (loggers, callbacks); null entries are switched off."""
    objects = []
    for conf in (group or {}).values():
        if conf is not None and "_target_" in conf:
            log.debug("Instantiating %s <%s>", what, conf._target_)
            objects.append(_without_wandb_anonymous(instantiate(conf)))
    return objects


def _without_wandb_anonymous(obj: Any) -> Any:
    """Lightning 2.6's WandbLogger always passes `anonymous=None` to `wandb.init`, and wandb 0.31 then
    warns on stderr in every run that the setting has no effect: the key is dropped from the logger's
    init arguments (a private dict; None is wandb's own default), so a failed run's stderr is its one
    `error:` line."""
    init = getattr(obj, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous", 0) is None:
        del init["anonymous"]
    return obj


def make_trainer(
    trainer: DictConfig, callbacks: list[Any], loggers: list[Any], progress: DictConfig, **overrides: Any
) -> L.Trainer:
    """A Lightning trainer from its config, with the run's callbacks and loggers, and `progress`
    (the `progress` key: a log line every few seconds for consoles that are files)."""
    from dear_exp.progress import ProgressLog, ReturnFreeMemory

    log.debug("Instantiating trainer <%s>", trainer._target_)
    every = [ProgressLog(float(progress.every_s), progress.when), ReturnFreeMemory()]
    return instantiate(trainer, callbacks=[*callbacks, *every], logger=loggers or False, **overrides)


def train_data(
    cfg: DictConfig, preprocess: Preprocess, augment: DictConfig, batch_size: int | None = None
) -> TrainDataModule:
    """`train_data`, augmented by `augment` (the refit's, or base training's own)."""
    extra = {} if batch_size is None else {"batch_size": batch_size}
    factory = instantiate(cfg.train_data, _partial_=True)
    return factory(augment=OmegaConf.to_container(augment, resolve=True), preprocess=preprocess, **extra)


def diag_data(cfg: DictConfig, preprocess: Preprocess) -> DiagnosticDataModule:
    """`diag_data`, the inpaint set, augmented as the refit's training images."""
    factory = instantiate(cfg.diag_data, _partial_=True)
    return factory(augment=OmegaConf.to_container(cfg.augment, resolve=True), preprocess=preprocess)


def feature_store(cfg: DictConfig, trainer: L.Trainer, detector: Detector) -> FeatureStore:
    return FeatureStore(
        FeatureCache(cfg.cache.dir, cfg.cache.enabled), trainer, detector, resolve_workers(cfg.num_workers)
    )


def detector(cfg: DictConfig) -> Detector:
    """`detector.checkpoint` loaded, or, when the feature cache has seen it, deferred: answered from the
    cache until a backbone pass needs the weights (detectors/deferred.py)."""
    log.info("Loading detector %s from %s", cfg.detector.name, cfg.detector.checkpoint)
    return load_detector(cfg.detector, FeatureCache(cfg.cache.dir, cfg.cache.enabled), build_detector)


def log_config(loggers: list[Any], cfg: DictConfig) -> None:
    params = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(params)


def finish_wandb(failed: bool = False) -> None:
    """One W&B run per job: close it even when the job failed or was stopped, then with exit code 1, so
    that `wandb sync` does not upload it as a finished run."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def _real(path: str | Path) -> Path:
    """The path with its symlinks resolved: Lightning's ModelCheckpoint resolves its dirpath so."""
    return Path(os.path.realpath(path))


def fit_callbacks(cfg: DictConfig, out_dir: Path, name: str) -> list[Any]:
    """Fresh callbacks for one Adam refit; the best-head checkpoint of head `name` goes to
    <callbacks.model_checkpoint.dirpath>/<name>/, so the fits of one run do not share a file; a
    dirpath inside the run folder is read inside `out_dir` (a task=dear_grid pair's folder)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    run_dir, folder = _real(cfg.paths.work_dir), _real(out_dir)
    callbacks = instantiate_group(cfg.get("callbacks"), "callback")
    for c in callbacks:
        if isinstance(c, ModelCheckpoint):
            base = _real(c.dirpath) if c.dirpath else folder / "checkpoints"
            if base.is_relative_to(run_dir) and not base.is_relative_to(folder):
                base = folder / base.relative_to(run_dir)
            c.dirpath = str(base / name)
    return callbacks


def benchmark(cfg: DictConfig, preprocess: Preprocess) -> BenchmarkDataModule:
    """`benchmark` (its layout instantiated and indexed) under every setting of `postprocess`."""
    from dear_exp.data.benchmarks import load_index

    index, n = load_index(cfg.benchmark), cfg.benchmark.get("max_sample")
    if n is not None:
        sizes = {k: len(v) for k, v in index.sources.items()}
        index = index.subsample(n, cfg.seed)
        kept = sum(len(v) for v in index.sources.values())
        log.info(
            "benchmark.max_sample=%d: %d of %d images kept (at most %d per source, seeded by seed=%d)",
            n,
            kept,
            sum(sizes.values()),
            n,
            cfg.seed,
        )
    return BenchmarkDataModule(
        index=index,
        postprocess=OmegaConf.to_container(cfg.postprocess.settings, resolve=True),  # type: ignore[arg-type]
        preprocess=preprocess,
        batch_size=cfg.benchmark.batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
    )


def evaluation(
    cfg: DictConfig,
    trainer: L.Trainer,
    store: FeatureStore,
    benchmark: BenchmarkDataModule,
    heads: dict[str, torch.nn.Module],
    calibrated: dict[str, float] | None,
    folder: Path | None = None,
) -> Evaluation:
    """task=dear's and task=evaluate's evaluation, as `task.*` configures it; scores.csv (rank 0) into
    `folder` (the run folder unless given) when task.scores=csv."""
    out = (folder or Path(cfg.paths.work_dir)) / "scores.csv"
    return evaluate(
        store,
        benchmark,
        heads,
        tuple(cfg.task.thresholds),
        calibrated,
        cfg.task.bootstrap,
        cfg.seed,
        cfg.task.metrics,
        out if cfg.task.scores == "csv" and trainer.is_global_zero else None,
    )
