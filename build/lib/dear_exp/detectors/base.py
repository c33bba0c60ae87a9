"""The frozen-detector interface that DEAR dissects."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Detector(nn.Module):
    """A binary AI-image detector split at the dissected layer.

    `forward_features` returns the map F [N, C, h, w] at the layer DEAR dissects and prunes;
    `forward_head` turns that map into the detector's own logit [N] (> 0 means fake). The
    preprocessing each detector needs is declared in its config (`detector.preprocess`).
    """

    feature_layer: str

    @property
    def feature_channels(self) -> int:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Global average pooling: linear, so head(pool(m*F)) = (w*m) . pool(F) + b."""
        return features.mean(dim=(2, 3))

    def linear_head(self) -> nn.Linear | None:
        """The detector's own classifier when it reads pool(F) of the dissected map directly."""
        return None

    def released_mask(self) -> torch.Tensor | None:
        """The 0/1 channel mask [feature_channels] the released checkpoint already applies at the
        dissected layer (DEAR-c/-r's `gate.gate`), or None when the release applies none."""
        return None

    def load_checkpoint(self, path: Path, hint: str = "", sha256: str | None = None) -> None:
        """Load the released weights strictly. Detectors whose release spans several files or
        renames keys override this (and may read extra paths given to their constructor)."""
        from dear_exp.detectors.checkpoint import load_strict, read_state_dict

        load_strict(self, read_state_dict(path, hint=hint, sha256=sha256), str(path))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.forward_features(x)
        return features, self.forward_head(features)
