"""CLIP ViT detectors: UFD / UnivFD (detectors.md §4) and C2P-CLIP (§6a).

How DEAR reads a ViT. DEAR's mask and refit head were defined on a CNN's last feature map; the
paper does not say how they apply to a vision transformer, so this is the reading implemented here.
The dissected map F is the residual stream after one transformer block (`net.block`, default the
last): its patch tokens, CLS dropped, laid back on their grid in raster order, give
F [N, 1024, 16, 16] for ViT-L/14 at 224 px, so channel k at (i, j) is residual dimension k of the
token of the 14x14 patch in row i, column j. RAD then compares each residual dimension inside and
outside the inpainted region exactly as for a CNN (the mask resized bilinearly to the 16x16 grid),
pruning zeroes whole residual dimensions, and the refit DEAR head is Linear(1024, 1) on the mean of
the masked patch tokens, pool(m * F). That head is a new linear probe, not a pruned copy of the
released one: UFD's and C2P's fc read the CLS token after the last block, post-LayerNorm and the
768-d projection (L2-normalised for C2P), and LayerNorm and the projection mix the 1024 dimensions,
so there is no per-channel mask in the fc's basis; hence `linear_head()` is None and the head starts
from zeros (head.init=zeros). Patch tokens attend to the whole image from the first block on, so a
token's receptive field is global: RAD says which dimensions are stronger on generated patches, not
which are caused by them alone. The detector's own logit is reproduced exactly from the same
backbone pass: `forward_features` keeps the image embedding of that pass (weakly tied to the map it
returns) and `forward_head(F)` applies the released fc to it, so `forward_head` must receive the
very tensor `forward_features` returned.

Checkpoints: UFD spans two files, OpenAI's CLIP ViT-L/14 (`net.backbone`: the TorchScript
`ViT-L-14.pt`, a plain OpenAI-layout state dict, or a local Hugging Face `openai/clip-vit-large-patch14`
folder) and `fc_weights.pth` (`detector.checkpoint`); C2P-CLIP is one state dict with a `model.`
prefix (or the released zip around it). Both load strictly into transformers'
`CLIPVisionModelWithProjection`; OpenAI keys are converted to its names (the same weights and function
as OpenAI's own code; float rounding can differ, since transformers runs q, k, v as three matmuls
and attention through SDPA).
"""

from __future__ import annotations

import re
import tempfile
import warnings
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dear_exp.detectors.base import Detector
from dear_exp.detectors.checkpoint import check_sha256, load_strict, read_state_dict
from dear_exp.errors import DearError

# the URL openai/CLIP's clip.py downloads ViT-L/14 from; its path segment is the file's SHA-256
OPENAI_VIT_L14_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"
)
VIT_L14: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
# what must agree between a Hugging Face folder's config and the detector's (weights carry the rest)
ARCH_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "projection_dim",
    "hidden_act",
    "layer_norm_eps",
    "num_channels",
)
POSITION_IDS = "embeddings.position_ids"  # a non-persistent buffer; older transformers saved it


def vision_config(vision: Mapping[str, Any] | None = None) -> Any:
    """A `CLIPVisionConfig`: ViT-L/14 (OpenAI's, QuickGELU) with `vision` merged over it."""
    from transformers import CLIPVisionConfig

    overrides = dict(vision or {})
    known = set(CLIPVisionConfig().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown CLIPVisionConfig fields in detector.net.vision: {', '.join(unknown)}")
    return CLIPVisionConfig(**{**VIT_L14, **overrides})


def build_vision_model(config: Any, init_weights: bool) -> nn.Module:
    """`CLIPVisionModelWithProjection(config)`. Without `init_weights` the random initialisation is
    skipped (it takes seconds for ViT-L and `load_checkpoint` replaces every weight) and the
    parameters are zeros, so an unloaded model is deterministic and finite."""
    from transformers import CLIPVisionModelWithProjection

    if init_weights:
        return CLIPVisionModelWithProjection(config)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = CLIPVisionModelWithProjection(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.vision_model.embeddings
        emb.position_ids.copy_(torch.arange(emb.position_ids.shape[-1]).expand_as(emb.position_ids))
    return model


# ---- OpenAI CLIP -> transformers key conversion --------------------------------------------------

_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_BLOCK_RENAMES = {
    "attn.out_proj.": "self_attn.out_proj.",
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
_TOP_RENAMES = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}


def openai_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI CLIP vision keys (`visual.*`, or the visual tower's own state dict) -> the keys of
    transformers' `CLIPVisionModelWithProjection`. `in_proj_weight/bias` split into q, k, v (in that
    order); `proj` [width, dim] becomes `visual_projection.weight` = proj.T. The text tower is
    ignored; any other `visual.*` key is kept under its own name so a strict load lists it."""
    if any(k.startswith("visual.") for k in state):
        visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    else:
        visual = dict(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in visual.items():
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.t()
        elif (m := _BLOCK.fullmatch(key)) is not None:
            i, rest = m.group(1), m.group(2)
            layer = f"vision_model.encoder.layers.{i}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias") and value.shape[0] % 3 == 0:
                kind = "weight" if rest.endswith("weight") else "bias"
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}self_attn.{name}.{kind}"] = part
            else:
                new = next((rest.replace(a, b, 1) for a, b in _BLOCK_RENAMES.items() if rest.startswith(a)), None)
                out[layer + new if new else f"visual.{key}"] = value
        else:
            out[f"visual.{key}"] = value
    return out


def hf_vision_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP state dict (CLIPModel or CLIPVisionModelWithProjection) reduced to the
    vision tower: the text tower and the `position_ids` buffer dropped."""
    drop = ("text_model.", "text_projection.", "logit_scale")
    return {k: v for k, v in state.items() if not k.startswith(drop) and not k.endswith(POSITION_IDS)}


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's `ViT-L-14.pt`): a zip with a `code/` folder and `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist())


def read_torchscript_state(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive. `torch.jit.load` deserialises TorchScript only (no
    arbitrary Python is unpickled); no method of the loaded module is ever called."""
    check_sha256(path, sha256)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the only reader
            module = torch.jit.load(str(path), map_location="cpu")
        return {k: v.detach() for k, v in module.state_dict().items()}
    except Exception as exc:
        raise DearError(
            f"cannot read TorchScript archive {path} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); re-download it"
        ) from None


# ---- the detectors --------------------------------------------------------------------------------


class CLIPDetector(Detector):
    """A transformers CLIP vision tower + projection + a 1-logit fc on the projected CLS.

    `self.model` is a `CLIPVisionModelWithProjection`; subclasses say where their fc lives
    (`classifier()`) and whether the embedding is L2-normalised (`normalize`).
    """

    normalize: bool = False

    def __init__(self, vision: Mapping[str, Any] | None = None, block: int = -1, init_weights: bool = False) -> None:
        super().__init__()
        config = vision_config(vision)
        layers = config.num_hidden_layers
        if not -layers <= block < layers:
            raise ValueError(f"block={block} is outside the {layers} blocks of this ViT (use -{layers}..{layers - 1})")
        self.block = block % layers
        self.feature_layer = f"encoder.layers.{self.block}"
        self.grid = config.image_size // config.patch_size
        self.image_size = config.image_size
        self.model = build_vision_model(config, init_weights)
        self._stash: tuple[weakref.ref[torch.Tensor], torch.Tensor] | None = None

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def feature_channels(self) -> int:
        return int(self.model.config.hidden_size)

    def classifier(self) -> nn.Linear:
        raise NotImplementedError

    def linear_head(self) -> nn.Linear | None:
        return None  # the released fc reads the projected CLS, not pool(F)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass: (patch tokens after `self.block` [N, L, C], image embedding [N, D])."""
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{type(self).__name__} needs {self.image_size}x{self.image_size} inputs, got "
                f"{tuple(x.shape[-2:])}; keep detector.preprocess.center_crop={self.image_size}"
            )
        tapped: list[torch.Tensor] = []

        def tap(module: nn.Module, args: Any, output: Any) -> None:
            tapped.append(output[0] if isinstance(output, tuple) else output)

        handle = self.model.vision_model.encoder.layers[self.block].register_forward_hook(tap)
        try:
            embeds = self.model(pixel_values=x).image_embeds
        finally:
            handle.remove()
        if self.normalize:
            embeds = embeds / embeds.norm(p=2, dim=-1, keepdim=True)
        return tapped[0][:, 1:], embeds

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of block `self.block` as a map [N, C, g, g] (token r*g + c -> row r, column c);
        the image embedding of the same pass is kept for `forward_head`."""
        tokens, embeds = self.embed(x)
        n, _, c = tokens.shape
        features = tokens.reshape(n, self.grid, self.grid, c).permute(0, 3, 1, 2)
        self._stash = (weakref.ref(features), embeds)
        return features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The released logit [N] of the pass that produced `features` (the fc reads the CLS embedding,
        which the patch map does not contain)."""
        stash = self._stash
        if stash is None or stash[0]() is not features:
            raise RuntimeError(
                f"{type(self).__name__}.forward_head needs the tensor returned by the latest forward_features "
                "call (its logit comes from the CLS embedding of that pass, not from the patch map)"
            )
        return self.classifier()(stash[1]).squeeze(1)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stash"] = None  # a weak reference does not pickle
        return state


class UFD(CLIPDetector):
    """UnivFD (Ojha et al., CVPR 2023): frozen OpenAI CLIP ViT-L/14, `fc` = Linear(768, 1) on the
    projected CLS embedding (`image_embeds`, no L2 norm).

    `backbone` is OpenAI's TorchScript `ViT-L-14.pt`, a plain OpenAI-layout state dict, or a local
    Hugging Face folder (e.g. a downloaded `openai/clip-vit-large-patch14`); `detector.checkpoint` is
    `fc_weights.pth` (`{'weight': [1,768], 'bias': [1]}`). `vision` overrides ViT-L/14's config.
    """

    def __init__(
        self,
        backbone: str | None = None,
        vision: Mapping[str, Any] | None = None,
        block: int = -1,
        backbone_sha256: str | None = None,
        init_weights: bool = False,
    ) -> None:
        super().__init__(vision=vision, block=block, init_weights=init_weights)
        self.backbone = backbone
        self.backbone_sha256 = backbone_sha256
        self.fc = nn.Linear(self.config.projection_dim, 1)
        if not init_weights:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def classifier(self) -> nn.Linear:
        return self.fc

    def load_checkpoint(self, path: Path, hint: str = "", sha256: str | None = None) -> None:
        backbone = Path(self.backbone) if self.backbone else None
        if backbone is None or not backbone.exists():
            raise DearError(
                f"CLIP backbone not found: {backbone}; download ViT-L-14.pt from {OPENAI_VIT_L14_URL} into "
                "checkpoints/clip/ (or use a local Hugging Face openai/clip-vit-large-patch14 folder) and set "
                "detector.net.backbone=/path/to/it"
            )
        fc_state = read_state_dict(Path(path), hint=hint, sha256=sha256)  # small: fail on it before the backbone
        self.load_backbone(backbone)
        load_strict(self.fc, fc_state, str(path))

    def load_backbone(self, path: Path) -> None:
        """Load the CLIP vision tower strictly from an OpenAI file or a Hugging Face folder."""
        path = Path(path)
        if path.is_dir():
            state = self._read_hf_folder(path)
        elif is_torchscript(path):
            state = openai_to_hf(read_torchscript_state(path, self.backbone_sha256))
        else:
            raw = read_state_dict(path, hint="re-download ViT-L-14.pt", sha256=self.backbone_sha256)
            state = hf_vision_keys(raw) if any(k.startswith("vision_model.") for k in raw) else openai_to_hf(raw)
        load_strict(self.model, state, str(path))

    def _read_hf_folder(self, path: Path) -> dict[str, torch.Tensor]:
        from transformers import CLIPVisionModelWithProjection
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the text tower's keys are expected to be unused
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                str(path), local_files_only=True, output_loading_info=True
            )
        except Exception as exc:
            raise DearError(
                f"cannot load the Hugging Face CLIP folder {path} ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]}); re-download it"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        ours, theirs = self.config.to_dict(), model.config.to_dict()
        differ = [f"{k} {theirs.get(k)!r} vs {ours.get(k)!r}" for k in ARCH_FIELDS if theirs.get(k) != ours.get(k)]
        if differ:
            raise DearError(
                f"the CLIP folder {path} has another architecture than detector.net.vision: {', '.join(differ)}"
            )
        missing = sorted(k for k in info.get("missing_keys", []) if not k.endswith(POSITION_IDS))
        if missing or info.get("mismatched_keys"):
            more = f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
            raise DearError(
                f"the CLIP folder {path} lacks vision weights: missing keys: "
                f"{', '.join(missing[:8])}{more}; mismatched: {info.get('mismatched_keys') or 'none'}"
            )
        return hf_vision_keys(model.state_dict())


class C2PCLIP(CLIPDetector):
    """C2P-CLIP (Tan et al., 2024): fine-tuned CLIP ViT-L/14 vision tower, L2-normalised projected CLS,
    `fc` = Linear(768, 1). Module names follow the release, so its keys are `model.vision_model.*`,
    `model.visual_projection.weight`, `model.fc.{weight,bias}`."""

    normalize = True

    def __init__(self, vision: Mapping[str, Any] | None = None, block: int = -1, init_weights: bool = False) -> None:
        super().__init__(vision=vision, block=block, init_weights=init_weights)
        self.model.fc = nn.Linear(self.config.projection_dim, 1)
        if not init_weights:
            nn.init.zeros_(self.model.fc.weight)
            nn.init.zeros_(self.model.fc.bias)

    def classifier(self) -> nn.Linear:
        return self.model.fc

    def load_checkpoint(self, path: Path, hint: str = "", sha256: str | None = None) -> None:
        state = read_release(Path(path), hint=hint, sha256=sha256)
        state = {k: v for k, v in state.items() if not k.endswith(POSITION_IDS)}
        load_strict(self, state, str(path))


def read_release(path: Path, hint: str = "", sha256: str | None = None) -> dict[str, torch.Tensor]:
    """`read_state_dict`, plus torch.hub's legacy zip (a zip around one checkpoint file, as C2P-CLIP's
    `C2P_CLIP_release_20240901.zip`): torch.load cannot read that zip itself, so its one member is
    copied to a temporary folder and read from there, still with weights_only=True."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return read_state_dict(path, hint=hint, sha256=sha256)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) != 1 or infos[0].is_dir():  # a torch.save archive is a zip of many members
            return read_state_dict(path, hint=hint, sha256=sha256)
        check_sha256(path, sha256)
        member = infos[0]
        suffix = ".safetensors" if member.filename.endswith(".safetensors") else ".pth"
        with tempfile.TemporaryDirectory(prefix="dear_zip_") as tmp:
            inner = Path(tmp) / f"member{suffix}"  # never the member's own path: no traversal
            with zf.open(member) as src, open(inner, "wb") as dst:
                while block := src.read(1 << 24):
                    dst.write(block)
            try:
                return read_state_dict(inner, hint=hint)
            except DearError as exc:
                raise DearError(str(exc).replace(str(inner), f"{path} (member {member.filename})")) from None
