"""Lightning callbacks: the reference's lr-drop early stopping for the Adam refit."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


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
