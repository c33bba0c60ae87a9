"""Reading images and turning them into the tensors a detector declares it needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dear_exp.errors import DearError

# modes whose samples are integers above 8 bits: PIL's convert("RGB") clips them at 255 (a 16-bit
# grey PNG becomes white), so they are scaled to 8 bits here instead
WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: Path, mode: str = "RGB") -> Image.Image:
    """Decode fully now, so a truncated or corrupt file fails here with its name. 16-bit greyscale is
    scaled to 8 bits (x / 257, rounded); floating-point images have no agreed 8-bit scale: refused."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in WIDE_INTEGER_MODES:
                return _to_8bit(np.asarray(img), path).convert(mode)
            if img.mode == "F":
                raise DearError(
                    f"{path} holds floating-point samples (PIL mode F), which have no agreed 8-bit scale; "
                    "convert it to an 8-bit or 16-bit PNG first"
                )
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DearError(f"corrupt or unreadable image {path} ({exc}); replace or remove the file") from None


def _to_8bit(samples: np.ndarray, path: Path) -> Image.Image:
    wide = samples.astype(np.int64)
    if wide.min() < 0 or wide.max() > 65535:
        raise DearError(
            f"{path} holds 32-bit integer samples outside 0..65535 (min {wide.min()}, max {wide.max()}); "
            "convert it to an 8-bit or 16-bit PNG first"
        )
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def image_header(path: Path) -> tuple[str | None, tuple[int, int]]:
    """(format, (width, height)) from the header only: nothing is decoded."""
    try:
        with Image.open(path) as img:
            return img.format, img.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DearError(f"corrupt or unreadable image {path} ({exc}); replace or remove the file") from None


@dataclass(frozen=True)
class Preprocess:
    """What a detector needs after augmentation/post-processing (declared in detector.preprocess)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    trim_odd: bool = False  # NPR: crop the last row/column of odd-sized images
    resize_short: int | None = None  # C2P-CLIP: shorter side to this (bilinear) before the crop
    center_crop: int | None = None  # CLIP detectors: a fixed 224 input (zero padding if smaller)

    def out_size(self, width: int, height: int) -> tuple[int, int]:
        if self.resize_short:
            width, height = self._short_side(width, height)
        if self.center_crop:
            return self.center_crop, self.center_crop
        return (width - width % 2, height - height % 2) if self.trim_odd else (width, height)

    def _short_side(self, width: int, height: int) -> tuple[int, int]:
        """torchvision Resize(int) sizes: the shorter side becomes resize_short."""
        s = self.resize_short
        assert s is not None
        if width <= height:
            return s, int(s * height / width)
        return int(s * width / height), s

    def geometry(self, image: np.ndarray) -> np.ndarray:
        """Resize / centre-crop / trim of an HWC array (the image's and its mask's shared geometry)."""
        h, w = image.shape[:2]
        if self.resize_short:
            from PIL import Image

            nw, nh = self._short_side(w, h)
            mode = Image.Resampling.BILINEAR if image.ndim == 3 else Image.Resampling.NEAREST
            image = np.array(Image.fromarray(image).resize((nw, nh), mode))
            h, w = nh, nw
        if self.center_crop:
            c = self.center_crop
            if h < c or w < c:  # torchvision CenterCrop pads with zeros
                ph, pw = max(0, c - h), max(0, c - w)
                pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (image.ndim - 2)
                image = np.pad(image, pad)
                h, w = image.shape[:2]
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
            return image[top : top + c, left : left + c]
        if self.trim_odd:
            image = image[: h - h % 2, : w - w % 2]
        return image

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 -> normalised CHW float32."""
        image = self.geometry(image)
        x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def mask(self, mask: np.ndarray) -> torch.Tensor:
        """HW uint8 mask (255 = generated) -> float [H, W] in [0, 1], same geometry as the image."""
        mask = self.geometry(mask)
        return torch.from_numpy(np.require(mask, requirements=["C", "W"])).float().div_(255.0)
