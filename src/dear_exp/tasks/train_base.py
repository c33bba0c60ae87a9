"""task=train_base: train a detector from scratch and save it in the released `{'model': ...}` format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.checkpoint import save_atomic
from dear_exp.errors import DearError
from dear_exp.model import BaseDetectorModule
from dear_exp.report import write_atomic
from dear_exp.tasks.common import ensure_demo, instantiate_group, log_config, make_trainer, train_datamodule

log = logging.getLogger(__name__)


def train_base(cfg: DictConfig, out_dir: Path | None = None) -> Path:
    """Train `detector.net` on `train_data`; keep the best epoch by validation balanced accuracy."""
    ensure_demo(cfg, [cfg.train_data.root])
    L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(out_dir or cfg.paths.output_dir)
    target = Path(cfg.detector.checkpoint)
    bt = cfg.base_train
    detector = build_detector(cfg.detector, load_weights=False)
    if detector.released_mask() is not None:
        raise DearError(f"detector={cfg.detector.name} is a released DEAR model (a gated {cfg.detector.name}); "
                        "train its base architecture instead (detector=corvi or detector=rajan)")
    module = BaseDetectorModule(detector, lr=bt.lr, weight_decay=bt.weight_decay)
    datamodule = train_datamodule(cfg, preprocess_of(cfg.detector), bt.augment, bt.batch_size)
    best = ModelCheckpoint(dirpath=out_dir / "base_checkpoints", monitor="val/bacc", mode="max",
                           save_top_k=1, save_weights_only=True, filename="best")
    loggers = instantiate_group(cfg.get("logger"), "logger") if cfg.task.name == "train_base" else []
    log_config(loggers, cfg)
    trainer = make_trainer(cfg, [best], loggers, max_epochs=bt.max_epochs, default_root_dir=str(out_dir))
    log.info("Training %s from scratch on %s for up to %d epochs", cfg.detector.name, cfg.train_data.root, bt.max_epochs)
    trainer.fit(module, datamodule=datamodule)
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        log.info("Best validation balanced accuracy %.4f", float(best.best_model_score))
    save_atomic({"model": detector.state_dict()}, target)
    write_atomic(training_record(target), json.dumps(training_settings(cfg), indent=2, sort_keys=True))
    log.info("Saved %s", target)
    return target


def training_record(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".json")


def training_settings(cfg: DictConfig) -> dict[str, object]:
    """What decides the weights task=train_base writes, kept beside them so a cached checkpoint is
    reused only by runs that would have trained the same one."""
    t = cfg.trainer
    limits = {k: t.get(k) for k in ("fast_dev_run", "limit_train_batches", "limit_val_batches", "overfit_batches")}
    return {
        "net": OmegaConf.to_container(cfg.detector.net, resolve=True),
        "base_train": OmegaConf.to_container(cfg.base_train, resolve=True),
        "train_data": {k: OmegaConf.to_container(cfg.train_data, resolve=True)[k] for k in ("root", "train", "val")},
        "trainer": {k: v for k, v in limits.items() if v is not None},
        "seed": cfg.seed,
        "threads": cfg.threads,
    }


def run(cfg: DictConfig) -> dict[str, float]:
    path = train_base(cfg)
    return {"checkpoint": str(path)}  # type: ignore[dict-item]
