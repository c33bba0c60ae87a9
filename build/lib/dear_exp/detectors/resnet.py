"""ResNet-50 detectors: CNNSpot, Corvi / Rajan (stride-1 stem) and the released DEAR-c / DEAR-r.

Built on torchvision's `resnet50(num_classes=1)` so the module names are the released files' keys
(detectors.md §0, §2, §3, §5): `conv1 [64,3,7,7]`, `bn1`, `layer1..4`, `fc [1,2048]`, and nothing
else (no avgpool or dropout keys). Corvi's ChannelLinear head applied per pixel and then averaged
equals GAP followed by `fc`, because both are linear; that is what `forward_head` computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision.models import resnet50

from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError

_CHANNELS = {"layer3": 1024, "layer4": 2048}


class Resnet50Detector(Detector):
    """ResNet-50 with a one-logit `fc` on GAP(layer4), dissected at layer4 (or layer3).

    `stem_stride=2` is torchvision's ResNet-50 (CNNSpot: layer4 is H/32 x W/32); `stem_stride=1`
    is GRIP's "stride0=1" variant used by Corvi, Rajan and DEAR: conv1 (still 7x7, same weights)
    and the max-pool keep full resolution, so layer4 is H/8 x W/8 (32x32 at 256 px).
    """

    def __init__(self, stem_stride: Literal[1, 2] = 2, feature_layer: Literal["layer3", "layer4"] = "layer4") -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 (Corvi/Rajan/DEAR) or 2 (CNNSpot), not {stem_stride!r}")
        if feature_layer not in _CHANNELS:
            raise ValueError(f"a ResNet-50 detector can be dissected at layer3 or layer4, not {feature_layer!r}")
        self.feature_layer = feature_layer
        self.stem_stride = stem_stride
        net = resnet50(weights=None, num_classes=1)
        if stem_stride == 1:
            net.conv1.stride = (1, 1)
            net.maxpool.stride = 1
        # Adopt the children directly (not `self.net = net`) so the keys carry no prefix; avgpool
        # has no state and GAP is `self.pool`, the same pooling the DEAR head uses.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.fc = net.fc

    @property
    def feature_channels(self) -> int:
        return _CHANNELS[self.feature_layer]

    def linear_head(self) -> nn.Linear | None:
        return self.fc if self.feature_layer == "layer4" else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x if self.feature_layer == "layer3" else self.layer4(x)

    def _layer4_map(self, features: torch.Tensor) -> torch.Tensor:
        return self.layer4(features) if self.feature_layer == "layer3" else features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self._layer4_map(features))).squeeze(1)


class GatedResNet(nn.Module):
    """The DEAR release's key layout (`backbone.<key>`, `gate.gate`) over a detector's own modules
    and gate tensor, so `load_strict` checks the file and names its keys as they are written (and
    names this class, after the reference's). Loading copies in place into the shared tensors.
    """

    def __init__(self, detector: GatedResnet50Detector) -> None:
        super().__init__()
        self.backbone = nn.Module()
        for name, module in detector.named_children():
            self.backbone.add_module(name, module)
        self.gate = nn.Module()
        self.gate.register_buffer("gate", detector.gate)


class GatedResnet50Detector(Resnet50Detector):
    """The released DEAR-c / DEAR-r: stride-1 ResNet-50 whose layer4 channels pass a 0/1 gate.

    `forward_head(F) = fc(GAP(F * gate))` reproduces the reference GatedResNet's logit, while
    `forward_features` returns the ungated map so the model can be dissected again. The gate is
    exposed by `released_mask()`.
    """

    gate: torch.Tensor

    def __init__(self, feature_layer: Literal["layer3", "layer4"] = "layer4") -> None:
        super().__init__(stem_stride=1, feature_layer=feature_layer)
        self.register_buffer("gate", torch.ones(2048))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        gated = self._layer4_map(features) * self.gate.view(1, -1, 1, 1)
        return self.fc(self.pool(gated)).squeeze(1)

    def linear_head(self) -> nn.Linear | None:
        """fc with the gate folded into its weight: (w*gate) . pool(F) + b is this logit."""
        if self.feature_layer != "layer4":
            return None
        head = nn.Linear(2048, 1).to(self.fc.weight)
        with torch.no_grad():
            head.weight.copy_(self.fc.weight * self.gate)
            head.bias.copy_(self.fc.bias)
        return head

    def released_mask(self) -> torch.Tensor | None:
        """The release's channel mask at the dissected layer (None at layer3: the gate is on layer4)."""
        return self.gate.detach().clone() if self.feature_layer == "layer4" else None

    def load_checkpoint(self, path: Path, hint: str = "", sha256: str | None = None) -> None:
        """`{'model': {'backbone.<key>': ..., 'gate.gate': [2048]}}`, strictly; base Corvi/Rajan
        files (no `backbone.` prefix, no gate) are refused rather than loaded with an all-ones gate."""
        from dear_exp.detectors.checkpoint import load_strict, read_state_dict

        state = read_state_dict(path, hint=hint, sha256=sha256)
        if not any(k.startswith("backbone.") for k in state):
            raise DearError(
                f"checkpoint {path} is not a DEAR release (no 'backbone.' keys and "
                f"{'a' if 'gate.gate' in state else 'no'} 'gate.gate'); load a base Corvi/Rajan file with "
                "detector=corvi or detector=rajan"
            )
        load_strict(GatedResNet(self), state, str(path))
        gate = self.gate
        if not bool(((gate == 0) | (gate == 1)).all()) or not bool(gate.any()):
            raise DearError(
                f"checkpoint {path} has a gate.gate that is not a 0/1 mask keeping at least one channel "
                f"(values {gate.unique()[:5].tolist()}); re-download it"
            )
