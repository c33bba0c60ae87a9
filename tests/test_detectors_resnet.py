"""ResNet-50 detectors (CNNSpot, Corvi, Rajan, released DEAR-c/-r): key layout, map sizes, and every
plausible release layout loading strictly through the config with identical logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict, read_write
from torch import nn
from torchvision.models import resnet50

from dear_exp.detectors import build_detector
from dear_exp.detectors.checkpoint import read_state_dict
from dear_exp.detectors.resnet import GatedResnet50Detector, Resnet50Detector
from dear_exp.errors import DearError

LAYOUTS = ["model", "model_module", "plain", "no_nbt", "safetensors"]
_SOURCES: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic away from its init, so a key that is not loaded shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    return model.eval()


def save_layout(state: dict[str, torch.Tensor], layout: str, directory: Path) -> Path:
    """`state` written the way one of the releases (or a user) writes it."""
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = directory / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    if layout == "model":  # CNNSpot / Corvi / Rajan / DEAR: {'model': sd}, maybe with trainer state
        obj: object = {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            "total_steps": torch.tensor(11),
        }
    elif layout == "model_module":  # DataParallel prefixes
        obj = {"model": {f"module.{k}": v for k, v in state.items()}}
    elif layout == "plain":
        obj = dict(state)
    elif layout == "no_nbt":
        obj = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    else:
        raise ValueError(layout)
    path = directory / "model.pth"
    torch.save(obj, path)
    return path


def outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        features, logit = model.eval()(x)
    return features, logit


def load_via_config(cfg: DictConfig, path: Path) -> nn.Module:
    """What every task does: build_detector (instantiate detector.net, load_checkpoint strictly)."""
    with read_write(cfg), open_dict(cfg):
        cfg.detector.checkpoint = str(path)
    return build_detector(cfg.detector)


def _input(stem_stride: int) -> torch.Tensor:
    shape = (2, 3, 32, 40) if stem_stride == 1 else (2, 3, 64, 96)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _release_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The DEAR release's layout: GatedResNet.state_dict() with `backbone.` keys and `gate.gate`."""
    sd = model.state_dict()
    return {("gate.gate" if k == "gate" else f"backbone.{k}"): v for k, v in sd.items()}


def _random_gate(seed: int = 3) -> torch.Tensor:
    gate = (torch.rand(2048, generator=torch.Generator().manual_seed(seed)) < 0.6).float()
    assert 0 < gate.sum() < 2048
    return gate


def poisoned(model: nn.Module) -> nn.Module:
    """Every float tensor set to NaN: a key the loader misses leaves NaN logits behind."""
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.fill_(float("nan"))
    return model


ARCH = {
    "corvi": "stride1",
    "rajan": "stride1",
    "cnnspot": "stride2",
    "cnnspot_p01": "stride2",
    "dear_c": "gated",
    "dear_r": "gated",
}
_CACHE: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
_TARGETS: dict[str, nn.Module] = {}


def _source(config: str, compose_cfg) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(randomised model from the config's net, input, reference map, reference logit), cached per
    architecture: building a ResNet-50 costs more than saving and loading it."""
    arch = ARCH[config]
    if arch not in _CACHE:
        source = randomised(instantiate(compose_cfg(f"detector={config}").detector.net), seed=len(_CACHE))
        if isinstance(source, GatedResnet50Detector):
            source.gate.copy_(_random_gate())
        x = _input(source.stem_stride)
        _CACHE[arch] = (source, x, *outputs(source, x))
    return _CACHE[arch]


def _target(config: str, compose_cfg) -> nn.Module:
    """One model instantiated from the config, reused (poisoned) by the non-released layouts."""
    if config not in _TARGETS:
        _TARGETS[config] = instantiate(compose_cfg(f"detector={config}").detector.net)
    return _TARGETS[config]


CASES = [(c, layout) for c in ("corvi", "cnnspot", "dear_c") for layout in LAYOUTS]
CASES += [(c, "model") for c in ("rajan", "dear_r", "cnnspot_p01")]


@pytest.mark.parametrize(("config", "layout"), CASES)
def test_every_layout_loads_strictly_through_the_config_with_identical_logits(compose_cfg, tmp_path, config, layout):
    source, x, ref_features, ref_logit = _source(config, compose_cfg)
    state = _release_state(source) if isinstance(source, GatedResnet50Detector) else source.state_dict()
    path = save_layout(state, layout, tmp_path)
    if layout == "model":  # the released layout: the whole build_detector path, a fresh model
        target = load_via_config(compose_cfg(f"detector={config}"), path)
    else:  # a model instantiated from the config, poisoned so that only a complete load can pass
        target = poisoned(_target(config, compose_cfg))
        target.load_checkpoint(path)
    assert type(target) is type(source)
    features, logit = outputs(target, x)
    assert torch.equal(features, ref_features) and torch.equal(logit, ref_logit)
    assert logit.shape == (2,)


@pytest.fixture
def gated(compose_cfg) -> GatedResnet50Detector:
    """The dear_c model the layout test loads into, for tests whose loads fail (a failed strict load
    changes nothing) or that load what they check."""
    return _target("dear_c", compose_cfg)


def test_corvi_key_layout_is_the_released_one(compose_cfg):
    model = _target("corvi", compose_cfg)
    sd = model.state_dict()
    assert len(sd) == 320 and len([k for k in sd if not k.endswith("num_batches_tracked")]) == 267
    assert sum(p.numel() for p in model.parameters()) == 23_510_081
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.weight": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.0.downsample.0.weight": (1024, 512, 1, 1),
        "layer3.5.bn3.weight": (1024,),
        "layer4.0.conv1.weight": (512, 1024, 1, 1),
        "layer4.0.downsample.1.running_var": (2048,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.running_mean": (2048,),
        "fc.weight": (1, 2048),
        "fc.bias": (1,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert not any(k.startswith(("avgpool", "dropout")) for k in sd)
    reference = resnet50(weights=None, num_classes=1).state_dict()
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in reference.items()}


def test_dear_release_key_layout(gated):
    gated = _release_state(gated)
    assert len(gated) == 321 and gated["gate.gate"].shape == (2048,) and "backbone.conv1.weight" in gated


def test_stride1_stem_keeps_resolution_and_cnnspot_is_torchvision(compose_cfg):
    corvi, cnnspot = _source("corvi", compose_cfg)[0], _source("cnnspot", compose_cfg)[0]
    assert corvi.conv1.stride == (1, 1) and corvi.conv1.kernel_size == (7, 7) and corvi.maxpool.stride == 1
    assert cnnspot.conv1.stride == (2, 2) and cnnspot.maxpool.stride == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert corvi.forward_features(x).shape == (1, 2048, 8, 8)  # H/8
        assert cnnspot.forward_features(x).shape == (1, 2048, 2, 2)  # H/32
        # CNNSpot is torchvision's resnet50 exactly: its state dict loads strictly, same logit
        tv = resnet50(weights=None, num_classes=1).eval()
        tv.load_state_dict(cnnspot.state_dict())
        assert torch.allclose(cnnspot(x)[1], tv(x).squeeze(1), atol=1e-5, rtol=1e-5)


def test_layer3_dissection_keeps_the_detectors_logit(compose_cfg):
    l4 = _source("corvi", compose_cfg)[0]
    l3 = Resnet50Detector(stem_stride=1, feature_layer="layer3").eval()
    l3.load_state_dict(l4.state_dict())
    x = _input(1)
    f3, logit3 = outputs(l3, x)
    assert f3.shape == (2, 1024, 8, 10) and l3.feature_channels == 1024 and l3.linear_head() is None
    assert torch.equal(logit3, outputs(l4, x)[1])
    assert l4.linear_head() is l4.fc and l4.feature_channels == 2048
    with pytest.raises(ValueError, match="layer3 or layer4"):
        Resnet50Detector(feature_layer="layer2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stem_stride"):
        Resnet50Detector(stem_stride=4)  # type: ignore[arg-type]


def test_released_gate_applies_and_is_exposed(compose_cfg, tmp_path: Path, gated):
    source, x, _, ref_logit = _source("dear_c", compose_cfg)
    gate = source.gate.clone()
    path = save_layout(_release_state(source), "model", tmp_path)
    target = poisoned(gated)
    target.load_checkpoint(path)
    features, logit = outputs(target, x)
    assert torch.equal(logit, ref_logit)
    assert torch.equal(target.released_mask(), gate) and 0 < gate.sum() < 2048
    # the reference's computation: fc(avgpool(layer4 * gate)); features are the ungated map
    expected = target.fc(torch.nn.functional.adaptive_avg_pool2d(features * gate.view(1, -1, 1, 1), 1).flatten(1))
    assert torch.allclose(logit, expected.squeeze(1), atol=1e-5, rtol=1e-5)
    assert torch.allclose(target.linear_head()(target.pool(features)).squeeze(1), logit, atol=1e-5, rtol=1e-5)
    # dissected at layer3, the detector's logit still passes the layer4 gate; no mask at layer3
    layer3 = GatedResnet50Detector(feature_layer="layer3")
    layer3.load_state_dict(target.state_dict())
    assert torch.equal(outputs(layer3, x)[1], logit)
    assert layer3.released_mask() is None and layer3.linear_head() is None and layer3.feature_channels == 1024
    target.gate.fill_(1.0)
    assert not torch.allclose(outputs(target, x)[1], logit, atol=1e-3)


def test_dear_release_missing_gate_unprefixed_or_soft_is_refused(tmp_path: Path, gated):
    state = _release_state(gated)
    del state["gate.gate"]
    with pytest.raises(DearError) as err:
        gated.load_checkpoint(save_layout(state, "model", tmp_path))
    assert "does not fit GatedResNet: missing keys: gate.gate" in str(err.value) and "\n" not in str(err.value)

    base = {k[len("backbone.") :]: v for k, v in state.items()}  # a base Corvi/Rajan file
    with pytest.raises(DearError, match="not a DEAR release .*detector=corvi"):
        gated.load_checkpoint(save_layout(base, "plain", tmp_path))

    soft = _release_state(gated)
    soft["gate.gate"] = torch.full((2048,), 0.5)
    with pytest.raises(DearError, match="not a 0/1 mask"):
        gated.load_checkpoint(save_layout(soft, "no_nbt", tmp_path))


def test_wrong_keys_are_listed_on_one_line(compose_cfg, tmp_path: Path, gated):
    model = _target("corvi", compose_cfg)
    sd = model.state_dict()
    sd["fc1.weight"] = sd.pop("fc.weight")
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(DearError) as err:
        model.load_checkpoint(save_layout(sd, "model", tmp_path))
    msg = str(err.value)
    assert "missing keys: fc.weight" in msg and "unexpected keys: fc1.weight" in msg
    assert "shape mismatches: conv1.weight (64, 3, 3, 3) vs (64, 3, 7, 7)" in msg and "\n" not in msg

    release = _release_state(gated)
    release["backbone.fc.weights"] = release.pop("backbone.fc.weight")
    with pytest.raises(DearError, match=r"missing keys: backbone\.fc\.weight; unexpected keys: backbone\.fc\.weights"):
        gated.load_checkpoint(save_layout(release, "model_module", tmp_path))


@pytest.mark.parametrize(
    ("config", "target", "stem", "checkpoint", "crop"),
    [
        ("corvi", "Resnet50Detector", 1, "corvi/model_best.pth", None),
        ("rajan", "Resnet50Detector", 1, "rajan/model_best.pth", None),
        ("dear_c", "GatedResnet50Detector", 1, "dear_c/model_best.pth", None),
        ("dear_r", "GatedResnet50Detector", 1, "dear_r/model_best.pth", None),
        ("cnnspot", "Resnet50Detector", 2, "cnnspot/blur_jpg_prob0.5.pth", 224),
        ("cnnspot_p01", "Resnet50Detector", 2, "cnnspot/blur_jpg_prob0.1.pth", 224),
    ],
)
def test_configs_compose(compose_cfg, tmp_path, config, target, stem, checkpoint, crop):
    """What each config says; each one is instantiated by the layout test above."""
    det = compose_cfg(f"detector={config}").detector
    assert det.name == config and det.net._target_ == f"dear_exp.detectors.resnet.{target}"
    assert det.net.get("stem_stride", 1) == stem and det.net.feature_layer == "layer4"
    assert det.checkpoint == f"{tmp_path}/checkpoints/{checkpoint}" and det.sha256 is None
    assert not det.train_if_missing and "detector.checkpoint=" in det.source_hint
    assert list(det.preprocess.mean) == [0.485, 0.456, 0.406] and list(det.preprocess.std) == [0.229, 0.224, 0.225]
    assert det.preprocess.trim_odd is False and det.preprocess.resize_short is None
    assert det.preprocess.center_crop == crop
    with pytest.raises(DearError, match=f"checkpoint not found: .*{checkpoint}; .*detector.checkpoint="):
        read_state_dict(Path(det.checkpoint), hint=det.source_hint)
