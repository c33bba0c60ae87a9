"""CLIP detectors (UFD, C2P-CLIP) on a tiny ViT: every released layout loads strictly and reproduces
the reference logits bit for bit; the dissected map is the patch-token grid of the chosen block."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.clip import C2PCLIP, UFD, vision_config
from dear_exp.errors import DearError

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
    projection_dim=16,
    hidden_act="quick_gelu",
)
GRID = 32 // 8
TINY_OVERRIDE = "+detector.net.vision={" + ",".join(f"{k}:{v}" for k, v in TINY.items()) + "}"


def _reference() -> tuple[CLIPVisionModelWithProjection, nn.Linear]:
    torch.manual_seed(0)
    ref = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY)).eval()
    with torch.no_grad():  # move LayerNorms and biases off their init so a missed key shows
        for name, p in ref.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    fc = nn.Linear(16, 1)
    return ref, fc


def _x(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _ufd_logits(ref: CLIPVisionModelWithProjection, fc: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return fc(ref(pixel_values=x).image_embeds).squeeze(1)


@torch.no_grad()
def _c2p_logits(ref: CLIPVisionModelWithProjection, fc: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    e = ref(pixel_values=x).image_embeds
    return fc(e / e.norm(p=2, dim=-1, keepdim=True)).squeeze(1)


def hf_to_openai(sd: dict[str, torch.Tensor], layers: int, prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """The inverse of the converter, written out independently: transformers names -> OpenAI CLIP's."""
    v, o = "vision_model.", prefix
    out = {
        o + "class_embedding": sd[v + "embeddings.class_embedding"],
        o + "positional_embedding": sd[v + "embeddings.position_embedding.weight"],
        o + "conv1.weight": sd[v + "embeddings.patch_embedding.weight"],
        o + "ln_pre.weight": sd[v + "pre_layrnorm.weight"],
        o + "ln_pre.bias": sd[v + "pre_layrnorm.bias"],
        o + "ln_post.weight": sd[v + "post_layernorm.weight"],
        o + "ln_post.bias": sd[v + "post_layernorm.bias"],
        o + "proj": sd["visual_projection.weight"].t().contiguous(),
    }
    for i in range(layers):
        h, b = f"{v}encoder.layers.{i}.", f"{o}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{b}attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{h}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0
            )
            out[f"{b}attn.out_proj.{kind}"] = sd[f"{h}self_attn.out_proj.{kind}"]
            out[f"{b}ln_1.{kind}"] = sd[f"{h}layer_norm1.{kind}"]
            out[f"{b}ln_2.{kind}"] = sd[f"{h}layer_norm2.{kind}"]
            out[f"{b}mlp.c_fc.{kind}"] = sd[f"{h}mlp.fc1.{kind}"]
            out[f"{b}mlp.c_proj.{kind}"] = sd[f"{h}mlp.fc2.{kind}"]
    return out


def _with_text_tower(openai: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the full OpenAI model also holds: text keys (some named like visual ones), ints."""
    return {
        **openai,
        "positional_embedding": torch.randn(8, 16),
        "token_embedding.weight": torch.randn(50, 16),
        "transformer.resblocks.0.attn.in_proj_weight": torch.randn(48, 16),
        "text_projection": torch.randn(16, 16),
        "ln_final.weight": torch.ones(16),
        "logit_scale": torch.tensor(4.6),
        "input_resolution": torch.tensor(32),
        "context_length": torch.tensor(8),
        "vocab_size": torch.tensor(50),
    }


def save_torchscript(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive whose state dict has exactly these (OpenAI) keys, as ViT-L-14.pt."""
    import warnings

    root = _Tree()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, _Tree())
            mod = getattr(mod, p)
        mod.register_buffer(leaf, value.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(root), str(path))


class _Tree(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _save_backbone(layout: str, ref: CLIPVisionModelWithProjection, tmp_path: Path) -> Path:
    sd = ref.state_dict()
    if layout == "hf_folder":
        ref.save_pretrained(tmp_path / "hf")
        return tmp_path / "hf"
    if layout == "hf_clipmodel_folder":  # what openai/clip-vit-large-patch14 is: text and vision towers
        cfg = CLIPConfig(
            text_config=dict(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                vocab_size=50,
                max_position_embeddings=8,
            ),
            vision_config=TINY,
            projection_dim=16,
        )
        full = CLIPModel(cfg)
        missing, unexpected = full.load_state_dict(sd, strict=False)
        assert not [k for k in missing if k.startswith(("vision_model", "visual_projection"))] and not unexpected
        full.save_pretrained(tmp_path / "full")
        return tmp_path / "full"
    openai = hf_to_openai(sd, TINY["num_hidden_layers"])
    if layout == "openai_state_dict":
        torch.save(_with_text_tower(openai), tmp_path / "ViT.pt")
    elif layout == "openai_visual_only":  # model.visual.state_dict(): no `visual.` prefix
        torch.save(hf_to_openai(sd, TINY["num_hidden_layers"], prefix=""), tmp_path / "ViT.pt")
    elif layout == "openai_torchscript":
        save_torchscript(_with_text_tower(openai), tmp_path / "ViT.pt")
    return tmp_path / "ViT.pt"


LAYOUTS = ["hf_folder", "hf_clipmodel_folder", "openai_state_dict", "openai_visual_only", "openai_torchscript"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ufd_loads_every_backbone_layout_with_identical_logits(tmp_path: Path, layout: str):
    ref, fc = _reference()
    backbone = _save_backbone(layout, ref, tmp_path)
    torch.save({"weight": fc.weight.detach(), "bias": fc.bias.detach()}, tmp_path / "fc_weights.pth")
    det = UFD(backbone=str(backbone), vision=TINY).eval()
    det.load_checkpoint(tmp_path / "fc_weights.pth")
    x = _x()
    with torch.no_grad():
        _, logit = det(x)
    # the q/k/v split and the transpose move no bits: exact equality, not a tolerance
    assert torch.equal(logit, _ufd_logits(ref, fc, x))
    for key, value in ref.state_dict().items():
        assert torch.equal(det.model.state_dict()[key], value), key


def test_forward_features_is_the_patch_grid_of_the_chosen_block(tmp_path: Path):
    ref, fc = _reference()
    torch.save({"weight": fc.weight.detach(), "bias": fc.bias.detach()}, tmp_path / "fc.pth")
    ref.save_pretrained(tmp_path / "hf")
    x = _x()
    with torch.no_grad():
        hidden = ref(pixel_values=x, output_hidden_states=True).hidden_states  # embeddings, block 0, block 1
    maps = {}
    for block in (0, 1, -1):
        det = UFD(backbone=str(tmp_path / "hf"), vision=TINY, block=block).eval()
        det.load_checkpoint(tmp_path / "fc.pth")
        with torch.no_grad():
            f = det.forward_features(x)
            assert f.shape == (3, 32, GRID, GRID) and det.feature_channels == 32
            expected = hidden[det.block + 1][:, 1:].reshape(3, GRID, GRID, 32).permute(0, 3, 1, 2)
            assert torch.equal(f, expected)
            assert torch.equal(det.forward_head(f), _ufd_logits(ref, fc, x))  # same logit whatever the block
            assert det.pool(f).shape == (3, 32) and det.linear_head() is None
        maps[block] = f
        assert det.feature_layer == f"encoder.layers.{block % 2}"
    assert torch.equal(maps[1], maps[-1]) and not torch.allclose(maps[0], maps[1])


def test_forward_head_refuses_a_map_it_did_not_produce(tmp_path: Path):
    det = UFD(vision=TINY).eval()
    x = _x()
    with torch.inference_mode():  # how Lightning predicts
        f = det.forward_features(x)
        det.forward_head(f)
        with pytest.raises(RuntimeError, match="latest forward_features"):
            det.forward_head(f * 1.0)
        det.forward_features(x)
        with pytest.raises(RuntimeError, match="latest forward_features"):
            det.forward_head(f)


def test_patch_grid_is_raster_ordered():
    """With attention and MLP silenced each token only sees its own patch: a change in the patch at
    row 1, column 2 must change F at [1, 2] and nowhere else."""
    ref, _ = _reference()
    with torch.no_grad():
        for layer in ref.vision_model.encoder.layers:
            for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    det = UFD(vision=TINY)
    det.model.load_state_dict(ref.state_dict())
    x = _x(1)
    y = x.clone()
    y[:, :, 8:16, 16:24] += 1.0  # patch row 1, column 2
    with torch.no_grad():
        changed = (det.forward_features(y) - det.forward_features(x)).abs().amax(1)[0] > 0
    assert changed.nonzero().tolist() == [[1, 2]]


def _c2p_release(ref: CLIPVisionModelWithProjection, fc: nn.Linear, position_ids: bool) -> dict[str, torch.Tensor]:
    sd = {f"model.{k}": v for k, v in ref.state_dict().items()}
    sd["model.fc.weight"], sd["model.fc.bias"] = fc.weight.detach(), fc.bias.detach()
    if position_ids:  # what transformers < 4.31 saved
        sd["model.vision_model.embeddings.position_ids"] = torch.arange(GRID * GRID + 1).unsqueeze(0)
    return sd


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "hub_zip", "torch_zip"])
@pytest.mark.parametrize("position_ids", [False, True])
def test_c2p_release_round_trips(tmp_path: Path, fmt: str, position_ids: bool):
    ref, fc = _reference()
    sd = _c2p_release(ref, fc, position_ids)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "c2p.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    elif fmt == "hub_zip":  # torch.hub's legacy format: a zip around one checkpoint file
        torch.save(sd, tmp_path / "C2P_CLIP_release_20240901.pth")
        path = tmp_path / "C2P_CLIP_release_20240901.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(tmp_path / "C2P_CLIP_release_20240901.pth", "C2P_CLIP_release_20240901.pth")
    else:  # a plain torch.save file, also under a .zip name
        path = tmp_path / ("c2p.pth" if fmt == "pth" else "c2p.zip")
        torch.save(sd, path)
    det = C2PCLIP(vision=TINY).eval()
    det.load_checkpoint(path)
    x = _x()
    with torch.no_grad():
        f, logit = det(x)
    assert torch.equal(logit, _c2p_logits(ref, fc, x))
    assert f.shape == (3, 32, GRID, GRID)
    assert set(det.state_dict()) == set(_c2p_release(ref, fc, False))


def test_c2p_wrong_keys_are_listed_on_one_line(tmp_path: Path):
    ref, fc = _reference()
    sd = _c2p_release(ref, fc, False)
    sd["fc.weight"] = sd.pop("model.fc.weight")
    sd["model.visual_projection.weight"] = torch.zeros(8, 32)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(DearError) as err:
        C2PCLIP(vision=TINY).load_checkpoint(path)
    msg = str(err.value)
    assert "missing keys: model.fc.weight" in msg and "unexpected keys: fc.weight" in msg
    assert "shape mismatches: model.visual_projection.weight (8, 32) vs (16, 32)" in msg
    assert "\n" not in msg


def test_ufd_wrong_backbone_keys_are_listed(tmp_path: Path):
    ref, fc = _reference()
    openai = hf_to_openai(ref.state_dict(), 2)
    openai.pop("visual.ln_post.weight")
    openai["visual.attnpool.weight"] = torch.zeros(3)  # e.g. a ResNet CLIP
    torch.save(openai, tmp_path / "ViT.pt")
    torch.save({"weight": fc.weight.detach(), "bias": fc.bias.detach()}, tmp_path / "fc.pth")
    with pytest.raises(DearError) as err:
        UFD(backbone=str(tmp_path / "ViT.pt"), vision=TINY).load_checkpoint(tmp_path / "fc.pth")
    msg = str(err.value)
    assert "missing keys: vision_model.post_layernorm.weight" in msg
    assert "unexpected keys: visual.attnpool.weight" in msg
    assert "\n" not in msg
    # an fc file with a prefix is not the released layout
    ref.save_pretrained(tmp_path / "hf")
    torch.save({"fc.weight": fc.weight.detach(), "fc.bias": fc.bias.detach()}, tmp_path / "fc2.pth")
    with pytest.raises(DearError, match="missing keys: bias, weight; unexpected keys: fc.bias, fc.weight"):
        UFD(backbone=str(tmp_path / "hf"), vision=TINY).load_checkpoint(tmp_path / "fc2.pth")


def test_hf_folder_of_another_architecture_is_refused(tmp_path: Path):
    CLIPVisionModelWithProjection(CLIPVisionConfig(**{**TINY, "hidden_act": "gelu"})).save_pretrained(tmp_path / "hf")
    fc = nn.Linear(16, 1)
    torch.save({"weight": fc.weight.detach(), "bias": fc.bias.detach()}, tmp_path / "fc.pth")
    with pytest.raises(DearError, match="another architecture.*hidden_act 'gelu' vs 'quick_gelu'"):
        UFD(backbone=str(tmp_path / "hf"), vision=TINY).load_checkpoint(tmp_path / "fc.pth")


def test_missing_files_fail_with_one_actionable_line(tmp_path: Path):
    with pytest.raises(DearError) as err:
        UFD(backbone=str(tmp_path / "clip" / "ViT-L-14.pt"), vision=TINY).load_checkpoint(tmp_path / "fc.pth")
    msg = str(err.value)
    assert msg.startswith(f"CLIP backbone not found: {tmp_path}/clip/ViT-L-14.pt; download ViT-L-14.pt from https://")
    assert "detector.net.backbone=" in msg and "\n" not in msg
    ref, _ = _reference()
    ref.save_pretrained(tmp_path / "hf")
    with pytest.raises(DearError, match="checkpoint not found: .*fc.pth; get fc_weights.pth"):
        UFD(backbone=str(tmp_path / "hf"), vision=TINY).load_checkpoint(tmp_path / "fc.pth", hint="get fc_weights.pth")
    with pytest.raises(DearError, match="checkpoint not found: .*c2p.zip; extract it"):
        C2PCLIP(vision=TINY).load_checkpoint(tmp_path / "c2p.zip", hint="extract it")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickles_are_refused_without_running(tmp_path: Path):
    marker = tmp_path / "PWNED"
    ref, _ = _reference()
    ref.save_pretrained(tmp_path / "hf")
    torch.save({"weight": Payload(marker), "bias": torch.zeros(1)}, tmp_path / "fc_weights.pth")
    with pytest.raises(DearError, match="refusing to load"):
        UFD(backbone=str(tmp_path / "hf"), vision=TINY).load_checkpoint(tmp_path / "fc_weights.pth")
    torch.save({"visual.proj": Payload(marker)}, tmp_path / "ViT.pt")  # a backbone file, plain pickle
    with pytest.raises(DearError, match="refusing to load"):
        UFD(backbone=str(tmp_path / "ViT.pt"), vision=TINY).load_checkpoint(tmp_path / "fc_weights.pth")
    torch.save({"model.fc.weight": Payload(marker)}, tmp_path / "inner.pth")  # inside the C2P zip
    with zipfile.ZipFile(tmp_path / "c2p.zip", "w") as zf:
        zf.write(tmp_path / "inner.pth", "C2P_CLIP_release_20240901.pth")
    with pytest.raises(DearError, match=r"refusing to load .*c2p.zip \(member C2P_CLIP_release_20240901.pth\)"):
        C2PCLIP(vision=TINY).load_checkpoint(tmp_path / "c2p.zip")
    assert not marker.exists()
    assert pickle.dumps(UFD(vision=TINY))  # the weakly referenced stash does not block pickling


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown CLIPVisionConfig fields.*hiden_size"):
        UFD(vision={"hiden_size": 32})
    with pytest.raises(ValueError, match="block=2 is outside the 2 blocks"):
        UFD(vision=TINY, block=2)
    with pytest.raises(ValueError, match="center_crop=32"):
        UFD(vision=TINY).forward_features(torch.zeros(1, 3, 40, 40))
    vit_l = vision_config()
    assert (vit_l.hidden_size, vit_l.num_hidden_layers, vit_l.patch_size, vit_l.image_size) == (1024, 24, 14, 224)
    assert (vit_l.projection_dim, vit_l.hidden_act) == (768, "quick_gelu")


@pytest.mark.parametrize("name", ["ufd", "c2p_clip"])
def test_configs_compose_and_instantiate(compose_cfg, tmp_path: Path, name: str):
    cfg = compose_cfg(f"detector={name}", TINY_OVERRIDE)
    det = instantiate(cfg.detector.net)
    assert type(det) is {"ufd": UFD, "c2p_clip": C2PCLIP}[name]
    assert det.feature_channels == 32 and det.block == 1 and not cfg.detector.train_if_missing
    assert cfg.detector.sha256 is None
    pre = preprocess_of(cfg.detector)
    assert pre.mean == (0.48145466, 0.4578275, 0.40821073) and pre.std == (0.26862954, 0.26130258, 0.27577711)
    assert pre.center_crop == 224 and not pre.trim_odd
    assert pre.out_size(300, 200) == (224, 224)
    if name == "ufd":
        assert cfg.detector.checkpoint == f"{tmp_path}/checkpoints/ufd/fc_weights.pth"
        assert cfg.detector.net.backbone == f"{tmp_path}/checkpoints/clip/ViT-L-14.pt"
        assert pre.resize_short is None
    else:
        assert cfg.detector.checkpoint == f"{tmp_path}/checkpoints/c2p_clip/C2P_CLIP_release_20240901.pth"
        assert pre.resize_short == 224 and "zip" in cfg.detector.source_hint
    plain = compose_cfg(f"detector={name}")
    assert "vision" not in plain.detector.net and plain.detector.net.block == -1


def test_ufd_config_loads_the_default_paths_end_to_end(compose_cfg, tmp_path: Path):
    """build_detector with the config's own paths, as a run does: TorchScript backbone + fc file."""
    from dear_exp.refit import DEARModule

    ref, fc = _reference()
    (tmp_path / "checkpoints" / "clip").mkdir(parents=True)
    (tmp_path / "checkpoints" / "ufd").mkdir(parents=True)
    save_torchscript(_with_text_tower(hf_to_openai(ref.state_dict(), 2)), tmp_path / "checkpoints/clip/ViT-L-14.pt")
    torch.save({"weight": fc.weight.detach(), "bias": fc.bias.detach()}, tmp_path / "checkpoints/ufd/fc_weights.pth")
    cfg = compose_cfg("detector=ufd", TINY_OVERRIDE)
    from dear_exp import schema

    module = DEARModule(build_detector(cfg.detector), schema.build(cfg.head, "head"))
    x = _x()
    with torch.inference_mode():
        out = module.predict_step((x, torch.zeros(3), torch.arange(3)), 0)
    assert torch.equal(out["base"], _ufd_logits(ref, fc, x))
    assert torch.equal(out["dear"], torch.zeros(3))  # the refit head starts at zeros
