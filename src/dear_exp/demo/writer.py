"""Writing a demo build: real photos as JPEG, fakes as PNG, inpainted images with their masks,
and `manifest.json`, into a temporary folder renamed into place under a file lock."""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from PIL import Image

from dear_exp.demo.cues import CUES, JPEG_QUALITY, jpeg_quality, jpeg_roundtrip
from dear_exp.demo.generators import (
    DESCRIPTIONS,
    GENERATORS,
    INPAINTER,
    SHARED_TEXTURE_AMPLITUDE,
    TRAIN_GENERATOR,
    apply_generator,
    run_generator,
    to_uint8,
)
from dear_exp.demo.photos import DOWNSCALE_RANGE, PHOTO_NAMES, TRAIN_WIDTH_FRACTION, item_rng, sample_crop
from dear_exp.errors import DearError
from dear_exp.files import atomic_dir, write_atomic

log = logging.getLogger(__name__)

# Bump whenever the content of a build changes: older builds are rebuilt, and the demo base detector
# (its file name carries the version) is retrained.
VERSION = 2  # 2: every generator adds the shared texture (cue (c))

SCALES: dict[str, dict[str, Any]] = {
    "demo": {
        "train_real": 600,
        "train_fake": 600,
        "val_real": 100,
        "val_fake": 100,
        "inpaint": 300,
        "test_real": 150,
        "test_fake_per_generator": 150,
        "size": 96,
        "test_sizes": (96, 128),
    },
    # `make bench`: the demo's training and inpaint sets, test images at benchmark-like sizes, so
    # one run's cost is dominated by the backbone as on real data (not by per-job start-up)
    "bench": {
        "train_real": 600,
        "train_fake": 600,
        "val_real": 100,
        "val_fake": 100,
        "inpaint": 300,
        "test_real": 100,
        "test_fake_per_generator": 100,
        "size": 96,
        "test_sizes": (224, 256),
    },
    "tiny": {
        "train_real": 16,
        "train_fake": 16,
        "val_real": 8,
        "val_fake": 8,
        "inpaint": 12,
        "test_real": 8,
        "test_fake_per_generator": 8,
        "size": 96,
        "test_sizes": (96, 128),
    },
}

_MASK_AREA = (0.02, 0.20)
_MASK_ASPECT = (0.5, 2.0)
_MASK_BLUR_SIGMA_AT_96 = 2.0


def _save(img: np.ndarray, path: Path, **options: Any) -> None:
    """Encode in memory, then `write_atomic`: a file is whole or absent."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, **options)
    write_atomic(path, buf.getvalue())


def _save_jpeg(img: np.ndarray, path: Path, quality: int) -> None:
    _save(img, path, format="JPEG", quality=quality)


_PNG_LEVEL = 3  # ~3x faster than the default 6, files ~15 % larger


def _save_png(img: np.ndarray, path: Path) -> None:
    _save(img, path, format="PNG", compress_level=_PNG_LEVEL)


def make_real(rng: np.random.Generator, part: str, size: int, path: Path) -> None:
    crop = sample_crop(rng, part, size)
    _save_jpeg(crop, path, jpeg_quality(rng))


def make_fake(
    rng: np.random.Generator,
    part: str,
    size: int,
    generator: str,
    path: Path,
    texture: float = SHARED_TEXTURE_AMPLITUDE,
) -> None:
    crop = sample_crop(rng, part, size)
    _save_png(apply_generator(generator, crop, texture), path)


def _gaussian_blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a 2-D float32 array, edge padded (weights via math.exp)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    weights = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(weights)
    kern = [np.float32(w / total) for w in weights]
    out = mask
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(kern):
            acc = acc + (padded[i : i + n] if axis == 0 else padded[:, i : i + n]) * w
        out = acc
    return out


def _sample_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sharp rectangular mask (bool), area 2-20 % of the image, aspect w/h in [0.5, 2]."""
    area = size * size
    lo, hi = _MASK_AREA
    while True:  # rounding rarely pushes a draw out of range; redraw from the same stream
        frac = float(rng.uniform(lo, hi))
        aspect = float(math.exp(rng.uniform(math.log(_MASK_ASPECT[0]), math.log(_MASK_ASPECT[1]))))
        w = int(round(math.sqrt(frac * area * aspect)))
        h = int(round(math.sqrt(frac * area / aspect)))
        if not (1 <= w <= size and 1 <= h <= size):
            continue
        if not (lo <= w * h / area <= hi and _MASK_ASPECT[0] <= w / h <= _MASK_ASPECT[1]):
            continue
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        mask = np.zeros((size, size), bool)
        mask[y0 : y0 + h, x0 : x0 + w] = True
        return mask


def make_inpaint(
    rng: np.random.Generator, size: int, stem_path: Path, texture: float = SHARED_TEXTURE_AMPLITUDE
) -> float:
    """Write {stem}_inpaint.png and {stem}_mask.png; return the mask's area fraction."""
    crop = sample_crop(rng, "train", size)
    orig = jpeg_roundtrip(crop, jpeg_quality(rng)).astype(np.float32)
    mask = _sample_mask(rng, size)
    generated = run_generator(INPAINTER, orig, texture)
    soft = _gaussian_blur(mask.astype(np.float32), _MASK_BLUR_SIGMA_AT_96 * size / 96.0)[:, :, None]
    out = generated * soft + orig * (np.float32(1.0) - soft)
    _save_png(to_uint8(out), stem_path.with_name(stem_path.name + "_inpaint.png"))
    _save_png(mask.astype(np.uint8) * np.uint8(255), stem_path.with_name(stem_path.name + "_mask.png"))
    return float(mask.mean())


def _build(out: Path, scale: str, seed: int, texture: float) -> dict[str, Any]:
    cfg = SCALES[scale]
    size: int = cfg["size"]
    test_sizes: tuple[int, ...] = tuple(cfg["test_sizes"])
    counts: dict[str, int] = {}

    def folder(rel: str, n: int) -> Path:
        d = out / rel
        d.mkdir(parents=True)
        counts[rel] = n
        return d

    gen = TRAIN_GENERATOR
    for split in ("train", "val"):
        d = folder(f"{split}/real/photos", cfg[f"{split}_real"])
        for i in range(cfg[f"{split}_real"]):
            make_real(item_rng(seed, split, "real", i), "train", size, d / f"{split}_real_{i:04d}.jpg")
        d = folder(f"{split}/fake/{gen}", cfg[f"{split}_fake"])
        for i in range(cfg[f"{split}_fake"]):
            make_fake(item_rng(seed, split, gen, i), "train", size, gen, d / f"{split}_{gen}_{i:04d}.png", texture)

    d = folder("inpaint", cfg["inpaint"])
    areas = [
        make_inpaint(item_rng(seed, "inpaint", "inpaint", i), size, d / f"inpaint_{i:04d}", texture)
        for i in range(cfg["inpaint"])
    ]
    if areas and not all(_MASK_AREA[0] <= a <= _MASK_AREA[1] for a in areas):
        raise AssertionError(f"inpaint mask areas {min(areas)}..{max(areas)} outside {_MASK_AREA}")

    # Test images alternate between sizes so that evaluation has to batch by image size.
    d = folder("test/real/photos", cfg["test_real"])
    for i in range(cfg["test_real"]):
        sz = test_sizes[i % len(test_sizes)]
        make_real(item_rng(seed, "test", "real", i), "test", sz, d / f"test_real_{i:04d}.jpg")
    for gen in GENERATORS:
        d = folder(f"test/fake/{gen}", cfg["test_fake_per_generator"])
        for i in range(cfg["test_fake_per_generator"]):
            sz = test_sizes[i % len(test_sizes)]
            make_fake(item_rng(seed, "test", gen, i), "test", sz, gen, d / f"test_{gen}_{i:04d}.png", texture)

    manifest: dict[str, Any] = {
        "version": VERSION,
        "scale": scale,
        "seed": seed,
        "note": "miniature offline demo data built from scikit-image sample photos; not a benchmark",
        "counts": counts,  # images per folder; for "inpaint", image/mask pairs
        "image_size": size,
        "test_sizes": list(test_sizes),
        "real_format": "JPEG",
        "real_jpeg_quality": list(JPEG_QUALITY),
        "fake_format": "PNG",
        "train_generator": TRAIN_GENERATOR,
        "generators": {g: DESCRIPTIONS[g] for g in GENERATORS + (INPAINTER,)},
        "cues": {name: cue.description for name, cue in CUES.items()},
        "shared_texture_amplitude": texture,
        "inpaint_mask_area": {"min": min(areas) if areas else None, "max": max(areas) if areas else None},
        "inpaint_mask_blur_sigma": _MASK_BLUR_SIGMA_AT_96 * size / 96.0,
        "sources": {
            "photos": list(PHOTO_NAMES),
            "train_val_inpaint_columns": f"left {TRAIN_WIDTH_FRACTION:.0%} of each photo's width",
            "test_columns": f"right {1 - TRAIN_WIDTH_FRACTION:.0%} of each photo's width",
            "downscale_range": list(DOWNSCALE_RANGE),
        },
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


class DemoDataError(DearError, ValueError):
    """A demo data folder this dear-exp cannot use (one line, exit 2)."""


def _is_built(final: Path, scale: str, seed: int, texture: float) -> bool:
    """True if final holds a finished build of this version; False if absent or built by an older
    dear-exp (derived data: rebuilt, with a warning); raise if it holds anything else."""
    if not final.exists():
        return False
    manifest_path = final / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise DemoDataError(
            f"demo data folder {final} exists but has no readable manifest.json "
            f"(an interrupted or hand-made build?); delete it and run again"
        ) from exc
    if not isinstance(manifest, dict):
        raise DemoDataError(f"demo data folder {final} has a malformed manifest.json; delete it and run again")
    found = (manifest.get("version"), manifest.get("scale"), manifest.get("seed"))
    expected = (VERSION, scale, seed)
    amplitude = manifest.get("shared_texture_amplitude", SHARED_TEXTURE_AMPLITUDE)  # early v2 builds: the default
    if found == expected and amplitude != texture:
        raise DemoDataError(
            f"demo data folder {final} holds shared texture amplitude {amplitude}, "
            f"expected {texture}; delete it and run again"
        )
    if found == expected:
        return True
    version = found[0]
    if found[1:] == expected[1:] and isinstance(version, int) and 0 < version < VERSION:
        return False  # an older build of the same scale and seed: `ensure_demo_data` replaces it
    raise DemoDataError(
        f"demo data folder {final} holds version/scale/seed {found}, expected {expected}; delete it and run again"
    )


def folder_name(scale: str, seed: int, texture: float = SHARED_TEXTURE_AMPLITUDE) -> str:
    """<scale>-seed<seed>, with -texture<amplitude> when the shared texture is not the default's."""
    suffix = "" if texture == SHARED_TEXTURE_AMPLITUDE else f"-texture{texture:g}"
    return f"{scale}-seed{seed}{suffix}"


def ensure_demo_data(
    root: Path | str, scale: str = "demo", seed: int = 0, texture: float = SHARED_TEXTURE_AMPLITUDE
) -> Path:
    """Build the data set under root/`folder_name(...)` if not there yet; return that folder.
    `texture`: the amplitude of the shared texture, cue (c) (0: a world without it).

    Safe to call from several processes at once: one builds into a temporary sibling folder
    under a file lock and renames it into place, the others wait and reuse it.
    """
    if scale not in SCALES:
        raise DemoDataError(f"unknown demo scale {scale!r}; choose one of: {', '.join(SCALES)}")
    root = Path(root)
    if not (isinstance(texture, (int, float)) and 0 <= texture <= 64):
        raise DemoDataError(
            f"demo.texture={texture!r} must be a number of grey levels in [0, 64] (e.g. demo.texture=3.0)"
        )
    final = root / folder_name(scale, seed, texture)
    if _is_built(final, scale, seed, texture):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{final.name}.lock")):
        if _is_built(final, scale, seed, texture):
            return final
        if final.exists():
            log.warning("demo data in %s was built by an older dear-exp; rebuilding it as version %d", final, VERSION)
            shutil.rmtree(final)
        with atomic_dir(final) as tmp:
            _build(tmp, scale, seed, float(texture))
    return final
