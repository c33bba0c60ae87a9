"""The reference's refit, `head.solver=adam` (head=reference): Adam steps through Lightning, on the
cached rows (`HeadModule`, `FeatureRefitDataModule`) or online with a backbone pass at every step
(`DEARModule`, `RefitDataModule`), with the reference's lr drops and early stopping (`PlateauLRDrop`).

Cached rows: each image has `views` augmented crops extracted once, and epoch e reads view
(e + offset_i) mod K of image i, so every view is used once per K epochs and the order of images is
shuffled per epoch as in the online mode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from dear_exp.cache import Tensors
from dear_exp.data.datamodules import DiagnosticDataModule, TrainDataModule, check_shardable
from dear_exp.data.samplers import ShardedBatches
from dear_exp.data.seeding import item_seed
from dear_exp.detectors.base import Detector
from dear_exp.distributed import rank_world
from dear_exp.refit.head import MaskedLinearHead, balanced_accuracy, starting_head
from dear_exp.refit.settings import RefitSettings

log = logging.getLogger(__name__)


class HeadModule(L.LightningModule):
    """The masked linear head alone, trained on pooled features (cached rows: no backbone).

    Loss: the reference's joint BCE(main) + w * BCE(inpaint). Each rank sums its slice of a global
    batch and scales by world / global count, so DDP's gradient average equals the single-process
    mean over the same global batch: the same samples, none duplicated or dropped.
    """

    def __init__(self, channels: int, settings: RefitSettings, start: nn.Linear | None) -> None:
        """start: the classifier to start from (`refit.head.starting_head`), None for zeros."""
        super().__init__()
        self.head = MaskedLinearHead(channels)
        self.lr, self.betas, self.weight_decay = settings.lr, tuple(settings.betas), settings.weight_decay
        self.inpaint_weight = settings.inpaint_weight
        with torch.no_grad():
            if start is None:
                self.head.linear.weight.zero_()
                self.head.linear.bias.zero_()
            else:
                self.head.linear.load_state_dict(start.state_dict())
        self.val_bacc = balanced_accuracy()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x  # rows are already pool(F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def global_mean_bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean BCE over the global batch (all ranks' slices together)."""
        total = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        world = rank_world(self)[1]
        if world == 1:
            return total / max(len(target), 1)
        count = self.trainer.strategy.reduce(torch.tensor(float(len(target)), device=logits.device), reduce_op="sum")
        return total * world / count

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["main"]
        xi, yi = batch["inpaint"][0], batch["inpaint"][-1]
        loss_main = self.global_mean_bce(self(x), y)
        loss_inpaint = self.global_mean_bce(self(xi), yi)
        loss = loss_main + self.inpaint_weight * loss_inpaint
        n = x.shape[0] + xi.shape[0]
        self.log_dict(
            {"train/loss": loss, "train/loss_main": loss_main, "train/loss_inpaint": loss_inpaint},
            prog_bar=False,
            batch_size=n,
        )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor] | None, batch_idx: int) -> None:
        if batch is None:  # this rank's empty slice of the last global batch
            return
        x, y = batch
        self.val_bacc.update((self(x) > 0).long(), y.long())
        self.log("val/bacc", self.val_bacc, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.head.parameters(),
            lr=self.lr,
            betas=self.betas,  # type: ignore[arg-type]
            weight_decay=self.weight_decay,
        )


class DEARModule(HeadModule):
    """A frozen detector (no gradients, BatchNorm in eval mode) and a masked linear head: the
    online refit (`head.mode=online`), fresh augmentation and a backbone pass at every step, as in
    the reference. `predict_step` returns the detector's own logit and the DEAR logit from one pass.
    """

    def __init__(self, detector: Detector, settings: RefitSettings) -> None:
        super().__init__(detector.feature_channels, settings, starting_head(detector, settings.init))
        self.detector = detector.eval()
        for p in self.detector.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> DEARModule:
        super().train(mode)
        self.detector.eval()  # BatchNorm statistics must not move during refit
        return self

    @torch.no_grad()
    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector.pool(self.detector.forward_features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled_features(x)

    def predict_step(
        self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, torch.Tensor]:
        x, label, index = batch
        features = self.detector.forward_features(x)
        return {
            "base": self.detector.forward_head(features).float().cpu(),
            "dear": self.head(self.detector.pool(features)).float().cpu(),
            "label": label.cpu(),
            "index": index.cpu(),
        }


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


class FeatureRows(Dataset):
    """(pooled features, label) rows, fetched a batch at a time (`__getitems__`)."""

    def __init__(self, rows: Tensors) -> None:
        self.pooled, self.label = rows["pooled"].float(), rows["label"].float()

    def __len__(self) -> int:
        return len(self.label)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.pooled[index], self.label[index]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    return batch if len(batch[1]) else None  # an empty slice of a last global batch: skipped


class ViewSampler(Sampler[int]):
    """Row ids of `Views` rows (row j = view j // n_images of image j % n_images): per epoch a
    seeded permutation of the images, each read through one of its views."""

    def __init__(self, n_images: int, views: int, seed: int, num_samples: int | None = None) -> None:
        self.n, self.views, self.seed = n_images, views, seed
        self.num_samples = n_images if num_samples is None else num_samples
        self.offsets = [item_seed(seed, "view-offset", i) % views for i in range(n_images)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(item_seed(self.seed, "order", self.epoch))
        rounds = -(-self.num_samples // self.n)
        ids: list[int] = []
        for r in range(rounds):  # more samples than images (the inpaint set): fresh rounds, next views
            for i in torch.randperm(self.n, generator=gen).tolist():
                view = (self.epoch * rounds + r + self.offsets[i]) % self.views
                ids.append(view * self.n + i)
        return iter(ids[: self.num_samples])


class FeatureRefitDataModule(L.LightningDataModule):
    """Joint refit data, as RefitDataModule but on cached rows: one step per main batch, each
    paired with a batch of inpaint rows; validation on the centre-crop rows."""

    def __init__(
        self,
        train: Tensors,
        inpaint: Tensors,
        val: Tensors,
        views: int,
        batch_size: int,
        inpaint_batch_size: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.train, self.inpaint, self.val = FeatureRows(train), FeatureRows(inpaint), FeatureRows(val)
        self.views, self.seed = views, seed
        self.batch_size, self.inpaint_batch_size = batch_size, inpaint_batch_size

    def _loader(self, rows: FeatureRows, batches: Sampler) -> DataLoader:
        return DataLoader(rows, batch_sampler=batches, collate_fn=_as_batch)  # type: ignore[arg-type]

    def train_dataloader(self) -> dict[str, DataLoader]:
        rank, world = rank_world(self)
        n_train = len(self.train) // self.views
        check_shardable(n_train, self.batch_size, world, "train_data")
        main = ShardedBatches(ViewSampler(n_train, self.views, self.seed), self.batch_size, rank, world)
        check_shardable(len(main) * self.inpaint_batch_size, self.inpaint_batch_size, world, "diag_data")
        n_inpaint = len(self.inpaint) // self.views
        inpaint_sampler = ViewSampler(
            n_inpaint, self.views, self.seed + 1, num_samples=len(main) * self.inpaint_batch_size
        )
        inpaint = ShardedBatches(inpaint_sampler, self.inpaint_batch_size, rank, world)
        return CombinedLoader(
            {"main": self._loader(self.train, main), "inpaint": self._loader(self.inpaint, inpaint)}, mode="min_size"
        )  # type: ignore[return-value]

    def val_dataloader(self) -> DataLoader:
        rank, world = rank_world(self)
        return self._loader(self.val, ShardedBatches(range(len(self.val)), self.batch_size, rank, world))  # type: ignore[arg-type]


class RefitDataModule(L.LightningDataModule):
    """Joint refit data: one step per main batch, each paired with a batch of the inpaint set."""

    def __init__(self, main: TrainDataModule, diagnostic: DiagnosticDataModule) -> None:
        super().__init__()
        self.main = main
        self.diagnostic = diagnostic

    def setup(self, stage: str | None = None) -> None:
        self.main.setup(stage)
        self.diagnostic.setup(stage)

    def train_dataloader(self) -> CombinedLoader:
        main = self.main.train_dataloader()
        # as many inpaint batches as main batches, whatever the two batch sizes: one step per main batch
        inpaint = self.diagnostic.train_dataloader(num_samples=len(main) * self.diagnostic.batch_size)
        return CombinedLoader({"main": main, "inpaint": inpaint}, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return self.main.val_dataloader()


def adam_fit(module: L.LightningModule, data: L.LightningDataModule, trainer: L.Trainer) -> dict[str, Any]:
    """The reference's refit through Lightning: Adam steps, validation each epoch, the callbacks'
    lr drops and early stopping; the best epoch's head (ModelCheckpoint on val/bacc) is kept."""
    trainer.fit(module, datamodule=data)
    best = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)  # type: ignore[attr-defined]
    last = trainer.callback_metrics.get("val/bacc")
    summary: dict[str, Any] = {
        "solver": "adam",
        "epochs": trainer.current_epoch,
        "val_bacc_last": float(last) if last is not None else float("nan"),
    }
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        summary["val_bacc"] = float(best.best_model_score)  # type: ignore[arg-type]
        log.info(
            "Restored the best head (val/bacc %.4f; last epoch %.4f) from %s",
            summary["val_bacc"],
            summary["val_bacc_last"],
            best.best_model_path,
        )
    else:
        summary["val_bacc"] = summary["val_bacc_last"]
    return summary
