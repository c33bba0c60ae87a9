"""The demo's real content: crops of the colour photographs bundled with scikit-image, each item
drawn from its own sha256-seeded generator; train and test crops come from disjoint columns."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from PIL import Image

# Photos feed train/val/inpaint crops left of this fraction of their width, test crops right of it.
TRAIN_WIDTH_FRACTION = 0.7
DOWNSCALE_RANGE = (0.5, 1.0)
_MIN_CROP_STD = 6.0  # reject near-flat crops (black backgrounds of retina / hubble)
_CROP_TRIES = 10

# Colour photographs bundled in the scikit-image wheel (no network needed).
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


@lru_cache(maxsize=1)
def load_photos() -> tuple[np.ndarray, ...]:
    """Load the bundled photos once per process (RGB uint8)."""
    import skimage.data

    out: list[np.ndarray] = []
    for name in PHOTO_NAMES:
        if name == "motorcycle":
            img = skimage.data.stereo_motorcycle()[0]
        else:
            img = getattr(skimage.data, name)()
        img = np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[..., :3])
        out.append(img)
    return tuple(out)


def item_rng(seed: int, split: str, cls: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{split}/{cls}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def region(photo: np.ndarray, part: str) -> tuple[int, int]:
    """Column range [x0, x1) of a photo; train and test ranges never overlap."""
    width = photo.shape[1]
    split_x = int(width * TRAIN_WIDTH_FRACTION)
    return (0, split_x) if part == "train" else (split_x, width)


def sample_crop(rng: np.random.Generator, part: str, size: int) -> np.ndarray:
    """A random square crop at a random content scale, resized to size x size."""
    photos = load_photos()
    crop = np.zeros((size, size, 3), np.uint8)
    for _ in range(_CROP_TRIES):
        photo = photos[int(rng.integers(len(photos)))]
        x0, x1 = region(photo, part)
        height = photo.shape[0]
        avail = min(x1 - x0, height)
        if avail < size:  # cannot happen with the bundled photos; keeps the loop safe
            continue
        s_min = max(DOWNSCALE_RANGE[0], size / avail)
        scale = float(rng.uniform(s_min, DOWNSCALE_RANGE[1]))
        window = min(avail, max(size, int(round(size / scale))))
        cx = int(rng.integers(x0, x1 - window + 1))
        cy = int(rng.integers(0, height - window + 1))
        flip = bool(rng.integers(2))
        patch = photo[cy : cy + window, cx : cx + window]
        if window != size:
            patch = np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.LANCZOS))
        if flip:
            patch = patch[:, ::-1]
        crop = np.ascontiguousarray(patch)
        if float(crop.std()) >= _MIN_CROP_STD:
            break
    return crop
