"""NPR (Tan et al., CVPR 2024): a truncated ResNet-50 on neighbouring-pixel residuals.

Architecture and key names follow detectors.md §1 so the released `NPR.pth` and
`model_epoch_last_3090.pth` load strictly. Blocks are torchvision's Bottleneck (v1.5 stride).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from dear_exp.detectors.base import Detector


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """x minus its nearest 2x down-up copy: each pixel minus the top-left pixel of its 2x2 block."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    up = F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)
    return x - up


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * Bottleneck.expansion),
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class NPR(Detector):
    """conv1 3x3/2 -> maxpool -> layer1 -> layer2 -> GAP -> fc1(512, 1)."""

    def __init__(self, feature_layer: Literal["layer1", "layer2"] = "layer2") -> None:
        super().__init__()
        if feature_layer not in ("layer1", "layer2"):
            raise ValueError(f"NPR can be dissected at layer1 or layer2, not {feature_layer!r}")
        self.feature_layer = feature_layer
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 3, stride=1)
        self.layer2 = _layer(256, 128, 4, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(512, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def feature_channels(self) -> int:
        return 512 if self.feature_layer == "layer2" else 256

    def linear_head(self) -> nn.Linear | None:
        return self.fc1 if self.feature_layer == "layer2" else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(
                f"NPR needs even image sides, got {tuple(x.shape[-2:])}; keep detector.preprocess.trim_odd=true"
            )
        x = self.conv1(npr_residual(x) * 2.0 / 3.0)
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.layer1(x)
        return x if self.feature_layer == "layer1" else self.layer2(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.feature_layer == "layer1":
            features = self.layer2(features)
        return self.fc1(torch.flatten(self.avgpool(features), 1)).squeeze(1)
