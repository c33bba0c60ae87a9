"""A user's own detector: any timm or torchvision backbone cut at a named layer, plus a 1-logit head.

The head is a new `fc = Linear(C, 1)` on GAP of that layer, so DEAR's masked refit starts from the
detector's own classifier (`head.init=detector`) and `forward_head` is exactly the DEAR head with an
all-ones mask. Train it with `task=train_base` (which saves `{'model': state_dict}`) and reload it
here strictly; weights are never downloaded unless `pretrained=true` is asked for.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError

LAST_STAGE = "forward_features"


class BackboneDetector(Detector):
    """`backbone` (timm or torchvision, truncated at `feature_layer`) -> GAP -> `fc`.

    timm: `feature_layer` is a module name from the model's `feature_info` (e.g. `layer3` for a
    ResNet, `stages.2` for a ConvNeXt), taken with `features_only=True`; None means the model's own
    `forward_features` (the last stage, classifier removed). torchvision: `feature_layer` is a graph
    node name (see `torchvision.models.feature_extraction.get_graph_node_names`), taken with
    `create_feature_extractor`; its channel count comes from one dry forward at `probe_size`.
    `pretrained=true` fetches ImageNet weights from the network (a starting point for
    task=train_base only; a loaded checkpoint replaces them).
    """

    def __init__(
        self,
        model: str,
        source: Literal["timm", "torchvision"] = "timm",
        feature_layer: str | None = None,
        pretrained: bool = False,
        probe_size: int = 64,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(model_kwargs or {})
        self.source, self.model_name = source, model
        if source == "timm":
            self.backbone, channels = _timm_backbone(model, feature_layer, pretrained, kwargs)
        elif source == "torchvision":
            self.backbone, channels = _torchvision_backbone(model, feature_layer, pretrained, probe_size, kwargs)
        else:
            raise ValueError(f"source must be timm or torchvision, not {source!r}")
        self.feature_layer = feature_layer or LAST_STAGE
        self._channels = channels
        self.fc = nn.Linear(channels, 1)

    @property
    def feature_channels(self) -> int:
        return self._channels

    def linear_head(self) -> nn.Linear | None:
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.source == "torchvision":
            features = self.backbone(x)["features"]
        elif self.feature_layer == LAST_STAGE:
            features = self.backbone.forward_features(x)
        else:
            (features,) = self.backbone(x)
        if features.ndim != 4 or features.shape[1] != self._channels:
            raise DearError(
                f"{self.source} model {self.model_name} gives {tuple(features.shape)} at {self.feature_layer}, "
                f"not a [N, {self._channels}, h, w] map; choose a convolutional layer as detector.net.feature_layer"
            )
        return features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(features)).squeeze(1)


def _timm_backbone(model: str, layer: str | None, pretrained: bool, kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    import timm

    if layer is None:
        net = timm.create_model(model, pretrained=pretrained, num_classes=0, **kwargs)
        return net, int(net.num_features)
    full = timm.create_model(model, pretrained=False, **kwargs)  # only to read its feature_info
    info = getattr(full, "feature_info", None)
    if not info:
        raise ValueError(f"timm model {model} declares no feature_info; use feature_layer=null (forward_features)")
    names = [f["module"] for f in info]
    if layer not in names:
        raise ValueError(f"timm model {model} has no feature layer {layer!r}; choose one of {names} or null")
    index = names.index(layer)
    net = timm.create_model(model, pretrained=pretrained, features_only=True, out_indices=(index,), **kwargs)
    return net, int(net.feature_info.channels()[0])


def _torchvision_backbone(
    model: str, layer: str | None, pretrained: bool, probe_size: int, kwargs: dict[str, Any]
) -> tuple[nn.Module, int]:
    from torchvision.models import get_model
    from torchvision.models.feature_extraction import create_feature_extractor

    if layer is None:
        raise ValueError(
            "a torchvision detector needs detector.net.feature_layer, a graph node name such as layer4 "
            "(torchvision.models.feature_extraction.get_graph_node_names lists them)"
        )
    net = get_model(model, weights="DEFAULT" if pretrained else None, **kwargs)
    body = create_feature_extractor(net, return_nodes={layer: "features"})
    body.eval()  # the dry forward must not move BatchNorm statistics
    with torch.no_grad():
        probe = body(torch.zeros(1, 3, probe_size, probe_size))["features"]
    body.train()
    if probe.ndim != 4:
        raise ValueError(
            f"torchvision model {model} gives {tuple(probe.shape)} at {layer}, not a [N, C, h, w] map; "
            "choose a convolutional node"
        )
    return body, int(probe.shape[1])
