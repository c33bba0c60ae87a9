"""Loading a diffusers inpainting pipeline by hub id or local folder, and calling it (inpainting.md).

The model's class is read from `model_index.json` before anything heavy happens, so a folder that
is not an inpainting pipeline, or a hub id that is neither cached nor reachable, stops with one line
at once (no ~25 s retry loop of the Hub client).
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dear_exp.errors import DearError
from dear_exp.hub import hub_offline, hub_unreachable
from dear_exp.inpaint.settings import InpaintSettings

log = logging.getLogger(__name__)

FLUX_FILL = "FluxFillPipeline"
EXAMPLES = (
    "stable-diffusion-v1-5/stable-diffusion-inpainting, diffusers/stable-diffusion-xl-1.0-inpainting-0.1 "
    "or black-forest-labs/FLUX.1-Fill-dev"
)


@dataclass(frozen=True)
class ModelSource:
    """Where the pipeline comes from and what class it is."""

    name: str  # a local folder or a hub id, as given to from_pretrained
    class_name: str
    local: bool
    local_files_only: bool


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") != 1 or Path(model).expanduser().exists()


def _class_of(index: Path, model: str) -> str:
    try:
        meta = json.loads(index.read_text())
        return str(meta["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DearError(
            f"inpaint.model={model}: cannot read the pipeline class from {index} ({exc}); "
            "save the pipeline with pipe.save_pretrained(folder)"
        ) from None


def _check_inpainting(class_name: str, model: str) -> None:
    if class_name != FLUX_FILL and "Inpaint" not in class_name:
        raise DearError(
            f"inpaint.model={model} is a {class_name}, not an inpainting pipeline; give an "
            f"inpainting checkpoint such as {EXAMPLES}"
        )


def resolve_model(s: InpaintSettings) -> ModelSource:
    """A local folder, or a hub id that is cached or fetchable; raises DearError otherwise, fast."""
    model = str(s.model)
    if _looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise DearError(
                f"inpaint.model={model}: no such folder; give a local pipeline folder "
                f"(pipe.save_pretrained(folder)) or a hub id such as {EXAMPLES}"
            )
        index = folder / "model_index.json"
        if not index.is_file():
            raise DearError(
                f"inpaint.model={folder} is not a diffusers pipeline folder (no model_index.json); "
                f"save one with pipe.save_pretrained(folder) or give a hub id such as {EXAMPLES}"
            )
        class_name = _class_of(index, model)
        _check_inpainting(class_name, model)
        return ModelSource(str(folder), class_name, local=True, local_files_only=True)

    from huggingface_hub import constants, try_to_load_from_cache

    offline = hub_offline() or s.local_files_only
    cached = try_to_load_from_cache(model, "model_index.json", revision=s.revision)
    if isinstance(cached, str):
        class_name = _class_of(Path(cached), model)
        _check_inpainting(class_name, model)
        # cached but the Hub does not answer: load from the cache instead of retrying for ~25 s
        local_only = offline or hub_unreachable() is not None
        return ModelSource(model, class_name, local=False, local_files_only=local_only)
    where = (
        f"download it where there is network (`hf download {model}`) or set "
        "inpaint.model=/path/to/a/local/pipeline/folder"
    )
    if offline:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "inpaint.local_files_only=true"
        raise DearError(
            f"inpaint.model={model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}; {where}"
        )
    reason = hub_unreachable()
    if reason:
        raise DearError(
            f"inpaint.model={model} is not in the Hugging Face cache and the Hub cannot be reached ({reason}); {where}"
        )
    from huggingface_hub import hf_hub_download

    try:
        index = Path(hf_hub_download(model, "model_index.json", revision=s.revision))
    except Exception as exc:  # gated (FLUX.1-Fill-dev needs HF_TOKEN and the licence accepted), missing, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DearError(
            f"inpaint.model={model}: cannot fetch model_index.json from the Hugging Face Hub "
            f"({type(exc).__name__}: {first}); check the id, and for a gated model accept its "
            "licence and set HF_TOKEN"
        ) from None
    class_name = _class_of(index, model)
    _check_inpainting(class_name, model)
    return ModelSource(model, class_name, local=False, local_files_only=False)


def quiet_diffusers() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_pipeline(s: InpaintSettings, device: torch.device, source: ModelSource | None = None) -> Any:
    """The pipeline on `device` in the dtype configured for its type; the safety checker and the
    SDXL watermark off (a kept checker returns black images for flagged outputs)."""
    source = source or resolve_model(s)
    quiet_diffusers()
    import diffusers

    concrete = getattr(diffusers, source.class_name, None)
    if concrete is None:
        raise DearError(
            f"inpaint.model={s.model} is a {source.class_name}, which diffusers {diffusers.__version__} "
            "does not know; upgrade diffusers or give another pipeline"
        )
    params = inspect.signature(concrete.__init__).parameters
    kwargs: dict[str, Any] = {"dtype": getattr(torch, s.dtype_for(device.type))}
    if "safety_checker" in params:
        kwargs["safety_checker"] = None
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = False
    if source.local_files_only:
        kwargs["local_files_only"] = True
    if s.revision and not source.local:
        kwargs["revision"] = s.revision
    if s.variant:
        kwargs["variant"] = s.variant
    loader = diffusers.FluxFillPipeline if source.class_name == FLUX_FILL else diffusers.AutoPipelineForInpainting
    log.info("Loading %s (%s) as %s on %s", source.name, source.class_name, kwargs["dtype"], device)
    try:
        pipe = loader.from_pretrained(source.name, **kwargs)
    except DearError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DearError(
            f"cannot load the inpainting pipeline {source.name} ({type(exc).__name__}: {first}); "
            "check inpaint.model, inpaint.variant and that all its weights are present"
        ) from None
    multiple = int(getattr(pipe, "vae_scale_factor", 8)) * (2 if source.class_name == FLUX_FILL else 1)
    if s.resolution % multiple:
        raise DearError(f"inpaint.resolution={s.resolution} must be a multiple of {multiple} for {source.class_name}")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate(
    pipe: Any, images: list[Image.Image], masks: list[Image.Image], seeds: list[int], s: InpaintSettings
) -> list[Image.Image]:
    """One batch: an empty prompt per image and one CPU generator per image, so an image's noise
    does not depend on the batch it is in or on the device."""
    n = len(images)
    call = inspect.signature(type(pipe).__call__).parameters
    kwargs: dict[str, Any] = {
        "prompt": [s.prompt] * n,
        "image": images,
        "mask_image": masks,
        "generator": [torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        "num_inference_steps": s.steps,
        "guidance_scale": s.guidance_scale,
        "height": s.resolution,
        "width": s.resolution,
        "output_type": "pil",
    }
    if s.strength is not None and "strength" in call:
        kwargs["strength"] = s.strength
    kwargs.update(s.call_kwargs)
    out = pipe(**kwargs).images
    if len(out) != n:
        raise RuntimeError(f"the pipeline returned {len(out)} images for {n} inputs")
    return list(out)
