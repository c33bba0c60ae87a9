"""Training a detector from scratch (task=train_base, or a missing demo base checkpoint), saved in the
released `{'model': ...}` format beside a record of the settings that decided its weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dear_exp.build import ensure_demo, instantiate_group, log_config, make_trainer, train_data
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.base import Detector
from dear_exp.detectors.checkpoint import save_atomic
from dear_exp.errors import DearError
from dear_exp.files import write_atomic
from dear_exp.refit.head import balanced_accuracy

log = logging.getLogger(__name__)


class BaseDetectorModule(L.LightningModule):
    """Trains a detector from scratch (the demo's base NPR; users retrain Corvi/Rajan with it)."""

    def __init__(self, detector: Detector, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.detector = detector
        self.lr, self.weight_decay = lr, weight_decay
        self.val_bacc = balanced_accuracy()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, logit = self.detector(x)
        loss = F.binary_cross_entropy_with_logits(logit, y)
        self.log("train/loss", loss, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        _, logit = self.detector(x)
        self.val_bacc.update((logit > 0).long(), y.long())
        self.log("val/bacc", self.val_bacc, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.detector.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def train_base(cfg: DictConfig, loggers: list | None = None) -> Path:
    """Train `detector.net` on `train_data` with `base_train`'s module, trainer keys and callbacks; the
    best epoch (the ModelCheckpoint of base_train.callbacks) is the one saved."""
    ensure_demo(cfg, [cfg.train_data.root])
    L.seed_everything(cfg.seed, workers=True)
    target = Path(cfg.detector.checkpoint)
    refuse_debug_target(cfg, target)
    bt = cfg.base_train
    detector = build_detector(cfg.detector, load_weights=False)
    if detector.released_mask() is not None:
        raise DearError(
            f"detector={cfg.detector.name} is a released DEAR model (a gated {cfg.detector.name}); "
            "train its base architecture instead (detector=corvi or detector=rajan)"
        )
    module = instantiate(bt.module, detector=detector)
    datamodule = train_data(cfg, preprocess_of(cfg.detector), bt.augment, bt.batch_size)
    callbacks = instantiate_group(bt.get("callbacks"), "callback")
    log_config(loggers or [], cfg)
    trainer = make_trainer(OmegaConf.merge(cfg.trainer, bt.trainer), callbacks, loggers or [], cfg.progress)
    log.info(
        "Training %s from scratch on %s for up to %d epochs", cfg.detector.name, cfg.train_data.root, trainer.max_epochs
    )
    trainer.fit(module, datamodule=datamodule)
    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        log.info("Best validation balanced accuracy %.4f", float(best.best_model_score))
    save_atomic({"model": detector.state_dict()}, target)
    write_atomic(training_record(target), json.dumps(training_settings(cfg), indent=2, sort_keys=True))
    log.info("Saved %s", target)
    return target


def how_limited(cfg: DictConfig) -> list[str]:
    """What makes this run's training not a real one: a debug preset, batch or epoch limits."""
    t = OmegaConf.merge(cfg.trainer, cfg.base_train.trainer)
    # a limit is set when not None/False and, for the fractions, not 1.0 (True == 1.0 in Python: fast_dev_run=True)
    limits = [f"trainer.{k}={t.get(k)}" for k in LIMITS if t.get(k) is True or t.get(k) not in (None, False, 1.0)]
    return (["a +debug preset"] if cfg.get("task_name") == "debug" else []) + limits


def refuse_debug_target(cfg: DictConfig, target: Path) -> None:
    """A debug or limited run trains from a few batches: it writes below its own run dir only, never
    where real runs read their detector (debug/default.yaml moves the demo's base checkpoint there)."""
    limited = how_limited(cfg)
    if limited and not target.absolute().is_relative_to(Path(cfg.paths.output_dir).absolute()):
        raise DearError(
            f"a debug or limited run ({', '.join(limited)}) would save its model at detector.checkpoint={target}, "
            "where real runs read it; add detector.checkpoint=${paths.output_dir}/model.pth (its run dir) or drop the limit"
        )


def warn_if_debug_checkpoint(checkpoint: Path) -> None:
    """A checkpoint trained by a debug or limited run says so when it is loaded."""
    record = training_record(checkpoint)
    if record.is_file():
        limited = json.loads(record.read_text()).get("limited") or []
        if limited:
            log.warning(
                "%s was trained by a debug or limited run (%s): its numbers are not those of a trained detector",
                checkpoint,
                ", ".join(limited),
            )


LIMITS = ("fast_dev_run", "limit_train_batches", "limit_val_batches", "overfit_batches")


def training_record(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".json")


def training_settings(cfg: DictConfig) -> dict[str, object]:
    """What decides the weights base training writes, kept beside them so a cached checkpoint is
    reused only by runs that would have trained the same one (not where its logs went)."""
    t = OmegaConf.merge(cfg.trainer, cfg.base_train.trainer)
    limits = {k: t.get(k) for k in LIMITS}
    bt = OmegaConf.to_container(cfg.base_train, resolve=True)
    assert isinstance(bt, dict)
    limited = how_limited(cfg)
    return {
        "net": OmegaConf.to_container(cfg.detector.net, resolve=True),
        # the record's shape of before base_train had its own module/trainer groups: checkpoints trained then still match
        "base_train": {k: v for k, v in bt["module"].items() if k != "_target_"}
        | {"max_epochs": t.max_epochs, "batch_size": bt["batch_size"], "augment": bt["augment"]},
        "train_data": {k: OmegaConf.to_container(cfg.train_data, resolve=True)[k] for k in ("root", "train", "val")},
        "trainer": {k: v for k, v in limits.items() if v is not None},
        "seed": cfg.seed,
        "threads": cfg.threads,
    } | ({"limited": limited} if limited else {})  # absent for real runs: older records match


def ensure_detector(cfg: DictConfig) -> None:
    """Train the base detector first when its checkpoint is missing and the config asks for it; a
    cached one trained with other settings (e.g. one batch under +debug=fdr) is refused, not reused."""
    checkpoint = Path(cfg.detector.checkpoint)
    if not cfg.detector.get("train_if_missing"):
        warn_if_debug_checkpoint(checkpoint)
        return
    if checkpoint.is_file():
        record = training_record(checkpoint)
        if record.is_file() and json.loads(record.read_text()) != json.loads(json.dumps(training_settings(cfg))):
            raise DearError(
                f"{checkpoint} was trained with other settings than this run's ({record}); "
                f"delete both files to retrain it, or set detector.checkpoint to another path"
            )
        return
    log.info("%s not found and detector.train_if_missing=true: training it first", checkpoint)
    train_base(cfg)
