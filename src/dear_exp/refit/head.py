"""The refitted head: `head(pool(m*F)) = linear(m * pool(F))`, and its file (head.safetensors)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError

log = logging.getLogger(__name__)


class MaskedLinearHead(nn.Module):
    """head(pool(m*F)) = linear(m * pool(F)); the channel mask is a buffer, saved in checkpoints.

    `dtype` float64 for a solved head (refit.newton_fit): its weights carry the folded
    standardisation, whose float32 rounding would move logits by ~1e-5 of the sum |w_k x_k|."""

    def __init__(self, channels: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, 1, dtype=dtype)
        self.mask: torch.Tensor
        self.register_buffer("mask", torch.ones(channels, dtype=dtype))

    def set_mask(self, mask: torch.Tensor) -> None:
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, head expects {tuple(self.mask.shape)}")
        self.mask.copy_(mask.to(self.mask))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled.to(self.mask.dtype) * self.mask).squeeze(1)


def starting_head(detector: Detector, init: str) -> nn.Linear | None:
    """The refit's starting point: None (zeros, the reference) or the detector's own classifier."""
    if init == "zeros":
        return None
    own = detector.linear_head()
    if own is None:
        raise DearError(
            "head.init=detector needs a classifier on the pooled dissected layer; "
            "this detector has layers after it: use head.init=zeros"
        )
    return own


def balanced_accuracy() -> MulticlassAccuracy:
    """Macro-averaged two-class accuracy = (R.Acc + F.Acc) / 2."""
    return MulticlassAccuracy(num_classes=2, average="macro")


def head_identity(detector: Detector) -> dict[str, str]:
    """What a head was refitted on: the detector's class, its dissected layer and the sha256 of its
    weights (the feature cache's fingerprint). A head applied to other features gives numbers that
    mean nothing, and nothing in the tensors' shapes shows it."""
    from dear_exp.detectors.deferred import class_name, fingerprint

    return {
        "detector_class": class_name(detector),
        "layer": str(detector.feature_layer),
        "detector_sha256": fingerprint(detector),
    }


def save_head(path: Path, head: MaskedLinearHead, identity: dict[str, str]) -> None:
    """weight [1, C], bias [1] and mask [C] in the head's own precision (a solved head is float64),
    with the detector it was refitted on (`head_identity`, computed once for all heads of a run) as
    the file's metadata."""
    from dear_exp.report import save_tensors

    tensors = {"weight": head.linear.weight, "bias": head.linear.bias, "mask": head.mask}
    save_tensors(path, tensors, metadata=identity)


def load_head(detector: Detector, path: Path) -> MaskedLinearHead:
    """A `head.safetensors` written by task=dear (weight, bias, mask) for this detector's layer, in the
    precision it was saved in (a solved head is float64); refused when it was refitted on another
    detector, another checkpoint of it or another layer."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    channels = detector.feature_channels
    if not path.is_file():
        raise DearError(f"DEAR head not found: {path}; give the head.safetensors of a task=dear run")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise DearError(f"cannot read DEAR head {path} ({exc}); give the head.safetensors of a task=dear run") from None
    expected = {"weight": (1, channels), "bias": (1,), "mask": (channels,)}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        raise DearError(
            f"DEAR head {path} has {got}, this detector's layer needs {expected}; "
            "use the head of a run with the same detector and layer"
        )
    if not meta.get("detector_sha256"):
        log.warning("%s does not record the detector it was refitted on (an older head): not checked", path)
    else:
        mine = head_identity(detector)
        differ = [k for k in mine if meta.get(k) != mine[k]]
        if differ:
            theirs = ", ".join(f"{k}={meta.get(k, '?')[:16]}" for k in differ)
            ours = ", ".join(f"{k}={mine[k][:16]}" for k in differ)
            raise DearError(
                f"DEAR head {path} was refitted on other features ({theirs}) than this detector's ({ours}); "
                "a head means something only on the features it was fitted to: use the head of a run with this "
                "detector, checkpoint and layer"
            )
    head = MaskedLinearHead(channels, dtype=tensors["weight"].dtype)
    head.linear.load_state_dict({"weight": tensors["weight"], "bias": tensors["bias"]})
    head.set_mask(tensors["mask"])
    return head
