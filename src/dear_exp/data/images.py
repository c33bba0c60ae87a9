"""Reading images and turning them into the tensors a detector declares it needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from dear_exp.errors import DearError


def load_image(path: Path, mode: str = "RGB") -> Image.Image:
    """Decode fully now, so a truncated or corrupt file fails here with its name."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DearError(f"corrupt or unreadable image {path} ({exc}); replace or remove the file") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DearError(f"corrupt or unreadable image {path} ({exc}); replace or remove the file") from None


@dataclass(frozen=True)
class Preprocess:
    """What a detector needs after augmentation/post-processing (declared in detector.preprocess)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    trim_odd: bool = False  # NPR: crop the last row/column of odd-sized images

    def out_size(self, width: int, height: int) -> tuple[int, int]:
        return (width - width % 2, height - height % 2) if self.trim_odd else (width, height)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """HWC uint8 -> normalised CHW float32."""
        if self.trim_odd:
            h, w = image.shape[:2]
            image = image[: h - h % 2, : w - w % 2]
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def mask(self, mask: np.ndarray) -> torch.Tensor:
        """HW uint8 mask (255 = generated) -> float [H, W] in [0, 1], trimmed like the image."""
        if self.trim_odd:
            h, w = mask.shape[:2]
            mask = mask[: h - h % 2, : w - w % 2]
        return torch.from_numpy(np.ascontiguousarray(mask)).float().div_(255.0)
