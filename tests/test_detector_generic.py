"""A user's own timm / torchvision detector: channels discovered, head on GAP of the named layer,
and its own state dict reloading strictly through the config with identical logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from dear_exp.detectors.generic import BackboneDetector
from dear_exp.errors import DearError
from tests.test_detectors_resnet import LAYOUTS, load_via_config, outputs, poisoned, randomised, save_layout

TORCHVISION = ("detector.net.source=torchvision", "detector.net.model=resnet18", "detector.net.feature_layer=layer3")
VARIANTS = {"timm": (), "torchvision": TORCHVISION}


Cached = tuple[BackboneDetector, BackboneDetector, torch.Tensor, torch.Tensor, torch.Tensor]
_CACHE: dict[str, Cached] = {}


def _models(variant: str, compose_cfg) -> Cached:
    """(randomised source, a second instance, input, reference map, logit) from the config, cached."""
    if variant not in _CACHE:
        net = compose_cfg("detector=generic", *VARIANTS[variant]).detector.net
        source = randomised(instantiate(net), seed=2)
        x = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(1))
        _CACHE[variant] = (source, instantiate(net), x, *outputs(source, x))
    return _CACHE[variant]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_layout_reloads_through_the_config_with_identical_logits(compose_cfg, tmp_path, variant, layout):
    source, target, x, ref_features, ref_logit = _models(variant, compose_cfg)
    path = save_layout(source.state_dict(), layout, tmp_path)
    if layout == "model":  # what task=train_base writes, loaded by build_detector into a fresh model
        target = load_via_config(compose_cfg("detector=generic", *VARIANTS[variant]), path)
    else:  # the second instance, poisoned so that only a complete load can pass
        poisoned(target).load_checkpoint(path)
    features, logit = outputs(target, x)
    assert torch.equal(features, ref_features) and torch.equal(logit, ref_logit) and logit.shape == (2,)
    assert source.feature_layer == {"timm": "layer4", "torchvision": "layer3"}[variant]


def test_generic_config_composes_and_instantiates(compose_cfg, tmp_path):
    det = compose_cfg("detector=generic").detector
    assert det.checkpoint == f"{tmp_path}/checkpoints/generic/model.pth" and det.net.pretrained is False
    assert det.net.source == "timm" and det.net.model == "resnet18" and det.net.feature_layer == "layer4"
    assert det.sha256 is None and not det.train_if_missing and det.preprocess.trim_odd is False
    net = instantiate(det.net)
    assert isinstance(net, BackboneDetector) and net.feature_channels == 512 and net.feature_layer == "layer4"
    with torch.no_grad():
        features = net.eval().forward_features(torch.zeros(1, 3, 64, 64))
    assert features.shape == (1, 512, 2, 2)  # resnet18 layer4: H/32


@pytest.mark.parametrize(
    ("source", "layer", "channels", "size"),
    [
        ("timm", "layer2", 128, 8),
        ("timm", None, 512, 2),
        ("torchvision", "layer2", 128, 8),
        ("torchvision", "layer4", 512, 2),
    ],
)
def test_channels_are_discovered_and_the_head_reads_gap(source, layer, channels, size):
    net = BackboneDetector("resnet18", source=source, feature_layer=layer)
    assert net.training  # construction (the torchvision dry forward) leaves train mode on
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(float(m.running_mean.abs().sum()) == 0 and int(m.num_batches_tracked) == 0 for m in bns)
    assert net.feature_channels == channels and net.linear_head() is net.fc and net.fc.in_features == channels
    assert net.feature_layer == (layer or "forward_features")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, logit = net.eval()(x)
        assert features.shape == (2, channels, size, size)
        assert torch.equal(logit, net.fc(features.mean(dim=(2, 3))).squeeze(1))
    assert [k for k in net.state_dict() if "fc" in k] == ["fc.weight", "fc.bias"]  # the backbone's own is gone


def test_bad_choices_fail_with_the_options(tmp_path: Path):
    with pytest.raises(ValueError, match=r"no feature layer 'layer9'; choose one of \['act1', 'layer1'"):
        BackboneDetector("resnet18", feature_layer="layer9")
    with pytest.raises(ValueError, match="needs detector.net.feature_layer"):
        BackboneDetector("resnet18", source="torchvision")
    with pytest.raises(ValueError, match="source must be timm or torchvision"):
        BackboneDetector("resnet18", source="hf")  # type: ignore[arg-type]
    vit = BackboneDetector("vit_tiny_patch16_224", model_kwargs={"img_size": 32})
    with pytest.raises(DearError, match=r"gives \(1, 5, 192\) at forward_features, not a \[N, 192, h, w\] map"):
        vit.forward_features(torch.zeros(1, 3, 32, 32))


def test_a_bare_backbone_state_dict_is_refused_with_its_keys(tmp_path: Path):
    import timm

    net = BackboneDetector("resnet18", feature_layer="layer4")
    bare = timm.create_model("resnet18", pretrained=False, num_classes=1).state_dict()
    path = save_layout(bare, "model", tmp_path)
    with pytest.raises(DearError) as err:
        net.load_checkpoint(path)
    msg = str(err.value)
    assert "does not fit BackboneDetector: missing keys: backbone.bn1.bias" in msg
    assert "unexpected keys: bn1.bias" in msg and "\n" not in msg
