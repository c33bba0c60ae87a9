"""The callbacks every trainer gets beside the config's: progress of long steps as log lines, for
consoles that are files (a SLURM log, `> run.log`, a multirun's job logs), where a progress bar draws
nothing readable (Lightning has no such callback); and the return of free CPU memory after a batch
(memory.py)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback

from dear_exp import memory

log = logging.getLogger(__name__)


class ProgressLog(Callback):
    """A line at most every `every_s` seconds while training, validating or predicting: done/total
    batches, rate and time left. `when`: `no_tty` (default: only when stderr is not a terminal, where
    the progress bar is the display), `always` or `never`."""

    def __init__(self, every_s: float, when: Literal["no_tty", "always", "never"]) -> None:
        self.every_s, self.when = every_s, when
        self.start = self.last = 0.0
        self.done = 0

    @property
    def active(self) -> bool:
        return self.when == "always" or (self.when == "no_tty" and not sys.stderr.isatty())

    def _begin(self) -> None:
        """A new epoch or pass: its own count and rate; the every_s clock runs on across epochs."""
        self.start = time.monotonic()
        self.last = self.last or self.start
        self.done = 0

    def _step(self, trainer: L.Trainer, stage: str, total: Any) -> None:
        self.done += 1
        now = time.monotonic()
        if not self.active or now - self.last < self.every_s or not trainer.is_global_zero:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        try:
            n = int(sum(total) if isinstance(total, list) else total)
        except (TypeError, ValueError, OverflowError):  # an unsized loader: inf
            n = 0
        if n > 0:
            left = max(n - self.done, 0) / rate if rate else 0.0
            log.info(
                "%s: %d/%d batches (%.0f%%), %.2f batch/s, about %.0f s left",
                stage,
                self.done,
                n,
                100 * self.done / n,
                rate,
                left,
            )
        else:
            log.info("%s: %d batches, %.2f batch/s", stage, self.done, rate)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._step(
            trainer, f"training epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", trainer.num_training_batches
        )

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin()

    def on_predict_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._step(trainer, "extracting features", trainer.num_predict_batches)


class ReturnFreeMemory(Callback):
    """After every training, validation and prediction batch, `memory.return_free`: the heap's free
    memory back to the system when more than `memory.return_over_mb` of it waits (a no-op unless
    `memory.malloc=reuse` is in effect)."""

    def on_train_batch_end(self, *args: Any) -> None:
        memory.return_free()

    def on_validation_batch_end(self, *args: Any) -> None:
        memory.return_free()

    def on_predict_batch_end(self, *args: Any) -> None:
        memory.return_free()

    def on_predict_end(self, *args: Any) -> None:
        log.debug("free memory returned to the system %d times so far", memory.returns())
