"""From a real image to the pipeline's inputs, and from its output to the saved files.

`reference` reproduces the reference (`gen_inpaint_data.py`): the image squashed to the working
resolution (bicubic, mask nearest), the generated image composited there through the blurred mask
(`out*a + orig*(1-a)`, truncated to uint8), the result resized back (bicubic). Every pixel of an
image that is not already at the working size is resampled twice. `original` upsamples the
generated image and the blurred alpha to the image's own size and composites onto its original
pixels: where the alpha is 0 the pixels are bit-identical (inpainting.md, decision 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from dear_exp.inpaint.masks import Rect, blur, rect_mask, sample_rect
from dear_exp.inpaint.settings import InpaintSettings


@dataclass
class Prepared:
    """One image ready for the pipeline."""

    stem: str
    seed: int
    original: Image.Image  # RGB, native size
    rect: Rect
    mask: Image.Image  # sharp L mask, native size: the saved {stem}_mask.png
    work_image: Image.Image  # RGB at resolution x resolution
    work_alpha: Image.Image  # blurred L mask at the working size: the compositing weight
    pipe_mask: Image.Image  # what the pipeline gets: the blurred mask (reference) or the sharp one

    @property
    def size(self) -> tuple[int, int]:
        return self.original.size


def prepare(image: Image.Image, stem: str, seed: int, s: InpaintSettings) -> Prepared:
    """Sample the mask (seeded) and build the working-size inputs. ValueError for a tiny image."""
    width, height = image.size
    rect = sample_rect(seed, width, height, s.area, s.aspect)
    mask = rect_mask(width, height, rect)
    size = (s.resolution, s.resolution)
    work_image = image.resize(size, Image.Resampling.BICUBIC)
    work_mask = mask.resize(size, Image.Resampling.NEAREST)
    work_alpha = blur(work_mask, s.blur_factor)
    pipe_mask = work_alpha if s.pipeline_mask == "blurred" else work_mask
    return Prepared(stem, seed, image, rect, mask, work_image, work_alpha, pipe_mask)


def _alpha_at(alpha: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The working-size alpha in [0, 1], resized bilinearly (in float) to `size`: [H, W] float32."""
    a = Image.fromarray(np.asarray(alpha, dtype=np.float32) / 255.0)
    if a.size != size:
        a = a.resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(a, dtype=np.float32), 0.0, 1.0)


def composite(p: Prepared, generated: Image.Image, mode: str) -> tuple[Image.Image, Image.Image]:
    """(the inpainted image at native size, the compositing alpha at native size as an L image)."""
    generated = generated.convert("RGB")
    if generated.size != p.work_image.size:
        generated = generated.resize(p.work_image.size, Image.Resampling.BICUBIC)
    alpha = _alpha_at(p.work_alpha, p.size)
    if mode == "reference":
        a = np.asarray(p.work_alpha, dtype=np.float32)[..., None] / 255.0
        out = np.asarray(generated, dtype=np.float32) * a + np.asarray(p.work_image, dtype=np.float32) * (1 - a)
        result = Image.fromarray(out.astype(np.uint8))  # the reference truncates
        if result.size != p.size:
            result = result.resize(p.size, Image.Resampling.BICUBIC)
    elif mode == "original":
        up = generated.resize(p.size, Image.Resampling.BICUBIC) if generated.size != p.size else generated
        a = alpha[..., None]
        out = np.asarray(up, dtype=np.float32) * a + np.asarray(p.original, dtype=np.float32) * (1 - a)
        result = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    else:
        raise ValueError(f"unknown composite mode {mode}")
    alpha_image = Image.fromarray(np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8))
    return result, alpha_image
