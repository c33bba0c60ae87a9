"""A tiny random SD inpainting pipeline, built offline and saved with save_pretrained, and small
real-image folders: what tests/test_inpaint.py generates from (inpainting.md, "Tiny offline pipeline")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dear_exp.inpaint.tiny import build_tiny_sd_inpaint  # noqa: F401  (built by the package: make bench-gpu times it)


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, photo-like RGB image (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    channels = [127 + 100 * np.sin(x / (9 + 5 * c) + y / (13 + 3 * c) + phase[c]) for c in range(3)]
    image = np.stack(channels, -1) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_real_dir(folder: Path, sizes: list[tuple[int, int]], corrupt: bool = False) -> list[str]:
    """JPEGs and PNGs of the given sizes (one in a subfolder), optionally one corrupt file; the stems."""
    stems = []
    for i, (w, h) in enumerate(sizes):
        sub = folder / ("nested" if i == 1 else "")
        sub.mkdir(parents=True, exist_ok=True)
        stem = f"real_{i:02d}"
        if i % 2:
            photo(w, h, i).save(sub / f"{stem}.png")
        else:
            photo(w, h, i).save(sub / f"{stem}.jpg", quality=90)
        stems.append(stem)
    if corrupt:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return stems
