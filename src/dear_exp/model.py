"""LightningModules: the DEAR refit (frozen detector + masked linear head) and base training."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError


class MaskedLinearHead(nn.Module):
    """head(pool(m*F)) = linear(m * pool(F)); the channel mask is a buffer, saved in checkpoints.

    `dtype` float64 for a solved head (refit.newton_fit): its weights carry the folded
    standardisation, whose float32 rounding would move logits by ~1e-5 of the sum |w_k x_k|."""

    def __init__(self, channels: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, 1, dtype=dtype)
        self.register_buffer("mask", torch.ones(channels, dtype=dtype))

    def set_mask(self, mask: torch.Tensor) -> None:
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, head expects {tuple(self.mask.shape)}")
        self.mask.copy_(mask.to(self.mask))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled.to(self.mask.dtype) * self.mask).squeeze(1)


def balanced_accuracy() -> MulticlassAccuracy:
    """Macro-averaged two-class accuracy = (R.Acc + F.Acc) / 2."""
    return MulticlassAccuracy(num_classes=2, average="macro")


class HeadModule(L.LightningModule):
    """The masked linear head alone, trained on pooled features (cached rows: no backbone).

    Loss: the reference's joint BCE(main) + w * BCE(inpaint). Each rank sums its slice of a global
    batch and scales by world / global count, so DDP's gradient average equals the single-process
    mean over the same global batch: the same samples, none duplicated or dropped.
    """

    def __init__(
        self,
        channels: int,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        init: Literal["zeros", "detector"] = "zeros",
        inpaint_weight: float = 1.0,
        own_head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        self.head = MaskedLinearHead(channels)
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.inpaint_weight = inpaint_weight
        self.init_head(init, own_head)
        self.val_bacc = balanced_accuracy()

    def init_head(self, init: str, own_head: nn.Linear | None) -> None:
        """`zeros` (reference) or `detector`: start from the detector's own classifier."""
        with torch.no_grad():
            if init == "zeros":
                self.head.linear.weight.zero_()
                self.head.linear.bias.zero_()
            elif init == "detector":
                if own_head is None:
                    raise DearError(
                        "head.init=detector needs a classifier on the pooled dissected layer; "
                        "this detector has layers after it: use head.init=zeros"
                    )
                self.head.linear.load_state_dict(own_head.state_dict())
            else:
                raise DearError(f"head.init must be zeros or detector, not {init!r}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x  # rows are already pool(F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def global_mean_bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean BCE over the global batch (all ranks' slices together)."""
        total = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        if self._trainer is None or self.trainer.world_size == 1:
            return total / max(len(target), 1)
        count = self.trainer.strategy.reduce(torch.tensor(float(len(target)), device=logits.device), reduce_op="sum")
        return total * self.trainer.world_size / count

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["main"]
        xi, yi = batch["inpaint"][0], batch["inpaint"][-1]
        loss_main = self.global_mean_bce(self(x), y)
        loss_inpaint = self.global_mean_bce(self(xi), yi)
        loss = loss_main + self.inpaint_weight * loss_inpaint
        n = x.shape[0] + xi.shape[0]
        self.log_dict({"train/loss": loss, "train/loss_main": loss_main, "train/loss_inpaint": loss_inpaint},
                      prog_bar=False, batch_size=n)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor] | None, batch_idx: int) -> None:
        if batch is None:  # this rank's empty slice of the last global batch
            return
        x, y = batch
        self.val_bacc.update((self(x) > 0).long(), y.long())
        self.log("val/bacc", self.val_bacc, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.head.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)


class DEARModule(HeadModule):
    """A frozen detector (no gradients, BatchNorm in eval mode) and a masked linear head: the
    online refit (`head.mode=online`), fresh augmentation and a backbone pass at every step, as in
    the reference. `predict_step` returns the detector's own logit and the DEAR logit from one pass.
    """

    def __init__(
        self,
        detector: Detector,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        init: Literal["zeros", "detector"] = "zeros",
        inpaint_weight: float = 1.0,
    ) -> None:
        own = detector.linear_head() if init == "detector" else None
        super().__init__(detector.feature_channels, lr, betas, weight_decay, init, inpaint_weight, own)
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

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        x, label, index = batch
        features = self.detector.forward_features(x)
        return {
            "base": self.detector.forward_head(features).float().cpu(),
            "dear": self.head(self.detector.pool(features)).float().cpu(),
            "label": label.cpu(),
            "index": index.cpu(),
        }


class BaseDetectorModule(L.LightningModule):
    """Trains a detector from scratch (the demo's base NPR; users retrain Corvi/Rajan with it)."""

    def __init__(self, detector: Detector, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
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
