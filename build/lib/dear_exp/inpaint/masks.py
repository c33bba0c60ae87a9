"""Seeded rectangle masks and their blurred alpha, the reference's way (`gen_mask.py`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Rect:
    left: int
    top: int
    width: int
    height: int

    def area_fraction(self, image_width: int, image_height: int) -> float:
        return self.width * self.height / float(image_width * image_height)


def sample_rect(
    seed: int,
    width: int,
    height: int,
    area: tuple[float, float] = (0.02, 0.2),
    aspect: tuple[float, float] = (0.5, 2.0),
    tries: int = 100,
) -> Rect:
    """One rectangle covering `area` of a width x height image with w/h in `aspect`.

    The reference's draw, in the original image's pixels: area fraction and aspect uniform, sides
    rounded and clamped to the image, then top and left uniform. A draw whose rounded sides leave
    the area or aspect range (tiny images, clamping) is redrawn from the same stream, so the result
    depends only on the seed and the size. Raises ValueError when no draw fits (a tiny image).
    """
    rng = random.Random(seed)
    total = width * height
    for _ in range(tries):
        target = rng.uniform(*area) * total
        ratio = rng.uniform(*aspect)
        h = min(int(round((target / ratio) ** 0.5)), height)
        w = min(int(round((target * ratio) ** 0.5)), width)
        if w < 1 or h < 1:
            continue
        if area[0] <= w * h / total <= area[1] and aspect[0] <= w / h <= aspect[1]:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return Rect(left, top, w, h)
    raise ValueError(
        f"a {width}x{height} image is too small for a rectangle of {area[0]:.0%}-{area[1]:.0%} of its area "
        f"with aspect {aspect[0]}-{aspect[1]}"
    )


def rect_mask(width: int, height: int, rect: Rect) -> Image.Image:
    """The sharp mask: 255 inside the rectangle (generated), 0 outside, mode L."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (rect.left, rect.top, rect.left + rect.width, rect.top + rect.height))
    return mask


def blur(mask: Image.Image, blur_factor: float) -> Image.Image:
    """diffusers' `mask_processor.blur`: a PIL Gaussian blur of radius (sigma) `blur_factor` pixels."""
    return mask.filter(ImageFilter.GaussianBlur(blur_factor)) if blur_factor > 0 else mask.copy()
