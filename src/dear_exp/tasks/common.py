"""Pieces every task shares: instantiating loggers/callbacks/trainer, the demo data, validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dear_exp.data.datamodules import TrainDataModule
from dear_exp.data.images import Preprocess
from dear_exp.errors import DearError

log = logging.getLogger(__name__)


def ensure_demo(cfg: DictConfig, roots: list[str]) -> None:
    """Build (once, cached) the embedded demo data when one of the roots a task reads lies in it."""
    demo_dir = Path(cfg.demo.dir).resolve()
    if not any(Path(r).resolve().is_relative_to(demo_dir) for r in roots):
        return
    from dear_exp.data.demo import ensure_demo_data

    built = ensure_demo_data(Path(cfg.paths.cache_dir) / "demo", scale=cfg.demo.scale, seed=cfg.demo.seed)
    if Path(built).resolve() != Path(cfg.demo.dir).resolve():
        raise DearError(f"demo.dir={cfg.demo.dir} but the demo data was built at {built}; leave demo.dir at its default")


def ensure_detector(cfg: DictConfig, out_dir: Path) -> None:
    """Train the base detector first when its checkpoint is missing and the config asks for it; a
    cached one trained with other settings (e.g. one batch under +debug=fdr) is refused, not reused."""
    if not cfg.detector.get("train_if_missing"):
        return
    from dear_exp.tasks.train_base import train_base, training_record, training_settings

    checkpoint = Path(cfg.detector.checkpoint)
    if checkpoint.is_file():
        record = training_record(checkpoint)
        if record.is_file() and json.loads(record.read_text()) != json.loads(json.dumps(training_settings(cfg))):
            raise DearError(f"{checkpoint} was trained with other settings than this run's ({record}); "
                            f"delete both files to retrain it, or set detector.checkpoint to another path")
        return
    log.info("%s not found and detector.train_if_missing=true: training it first", checkpoint)
    train_base(cfg, out_dir=out_dir / "base_training")


def instantiate_group(group: DictConfig | None, what: str) -> list[Any]:
    objects = []
    for name, conf in (group or {}).items():
        if conf is not None and "_target_" in conf:
            log.info("Instantiating %s <%s>", what, conf._target_)
            objects.append(instantiate(conf))
    return objects


def make_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any], **overrides: Any) -> L.Trainer:
    log.info("Instantiating trainer <%s>", cfg.trainer._target_)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)


def train_datamodule(cfg: DictConfig, preprocess: Preprocess, augment: DictConfig, batch_size: int) -> TrainDataModule:
    td = cfg.train_data
    return TrainDataModule(
        root=td.root,
        train=OmegaConf.to_container(td.train),  # type: ignore[arg-type]
        val=OmegaConf.to_container(td.val),  # type: ignore[arg-type]
        augment=OmegaConf.to_container(augment),  # type: ignore[arg-type]
        preprocess=preprocess,
        batch_size=batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        source_hint=td.get("source_hint", ""),
    )


def log_config(loggers: list[Any], cfg: DictConfig) -> None:
    params = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(params)  # type: ignore[arg-type]


def log_summary(loggers: list[Any], metrics: dict[str, float]) -> None:
    """Final figures of a run: logged, and W&B's run summary set to them (it would otherwise keep the
    last value logged under a key, e.g. the last epoch's val/bacc instead of the kept epoch's)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        lg.log_metrics(metrics)
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(metrics)


def finish_wandb() -> None:
    """One W&B run per job: close it even when the job failed."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
