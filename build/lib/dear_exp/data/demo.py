"""A miniature, offline stand-in for the DEAR data sets, built on first use.

It exists so that a newcomer can run the whole pipeline on a laptop CPU in
minutes without downloading anything. It is a toy, not a benchmark: a handful
of scikit-image sample photographs and four hand-made "generators"; numbers
measured on it say nothing about real detectors on real data.

It reproduces the situation the DEAR paper studies. Real training photos are
JPEG files (format bias) while fakes are PNG files from generators whose
upsampling decoders leave weak, generator-specific local pixel correlations
(the traces NPR keys on). A detector trained on it can learn "JPEG traces mean
real", so its accuracy on fakes collapses once the fakes are JPEG re-compressed.

A given (scale, seed) builds byte-identical files every time: each item draws
from its own sha256-seeded generator, and the generators use element-wise
float32 numpy only (no BLAS, no thread-dependent reductions) before PIL's
deterministic encoders. Other Pillow / libjpeg versions may encode differently.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from PIL import Image

__all__ = ["SCALES", "GENERATORS", "ensure_demo_data"]

# Bump whenever the content of a build changes, so that stale folders are noticed.
_VERSION = 1

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

GENERATORS: tuple[str, ...] = ("gen_a", "gen_b", "gen_c")  # gen_a seen in training; gen_b, gen_c unseen
_TRAIN_GENERATOR = "gen_a"
_INPAINTER = "inpainter"

_GENERATOR_DESCRIPTIONS: dict[str, str] = {
    "gen_a": "2x average-pool encoder; stride-2 4x4 transposed-conv decoder (bilinear kernel "
    "plus a fixed random perturbation: checkerboard traces); near-identity 3x3 refinement conv",
    "gen_b": "4x average-pool encoder with a mild fixed colour matrix; two nearest-neighbour 2x "
    "upsamplings, each followed by a fixed random-ish 3x3 smoothing conv",
    "gen_c": "2x average-pool encoder; bilinear 2x upsampling, slight saturation boost and a weak "
    "fixed period-2 high-frequency pattern",
    _INPAINTER: "inpainting decoder: 2x average-pool; sub-pixel (pixel-shuffle) conv decoder with "
    "fixed per-phase 3x3 kernels; composited into a JPEG-decoded real photo through a "
    "Gaussian-blurred rectangular mask",
}

# Real photos are JPEG at a quality drawn per image in this inclusive range.
_JPEG_QUALITY = (70, 95)
# Photos feed train/val/inpaint crops left of this fraction of their width, test crops right of it.
_TRAIN_WIDTH_FRACTION = 0.7
_DOWNSCALE_RANGE = (0.5, 1.0)
_MIN_CROP_STD = 6.0  # reject near-flat crops (black backgrounds of retina / hubble)
_CROP_TRIES = 10
_MASK_AREA = (0.02, 0.20)
_MASK_ASPECT = (0.5, 2.0)
_MASK_BLUR_SIGMA_AT_96 = 2.0

# Colour photographs bundled in the scikit-image wheel (no network needed).
_PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


# ----------------------------------------------------------------------------- sources


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """Load the bundled photos once per process (RGB uint8)."""
    import skimage.data

    out: list[np.ndarray] = []
    for name in _PHOTO_NAMES:
        if name == "motorcycle":
            img = skimage.data.stereo_motorcycle()[0]
        else:
            img = getattr(skimage.data, name)()
        img = np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[..., :3])
        out.append(img)
    return tuple(out)


def _item_rng(seed: int, split: str, cls: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{split}/{cls}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def _region(photo: np.ndarray, part: str) -> tuple[int, int]:
    """Column range [x0, x1) of a photo; train and test ranges never overlap."""
    width = photo.shape[1]
    split_x = int(width * _TRAIN_WIDTH_FRACTION)
    return (0, split_x) if part == "train" else (split_x, width)


def _sample_crop(rng: np.random.Generator, part: str, size: int) -> np.ndarray:
    """A random square crop at a random content scale, resized to size x size."""
    photos = _photos()
    crop = np.zeros((size, size, 3), np.uint8)
    for _ in range(_CROP_TRIES):
        photo = photos[int(rng.integers(len(photos)))]
        x0, x1 = _region(photo, part)
        height = photo.shape[0]
        avail = min(x1 - x0, height)
        if avail < size:  # cannot happen with the bundled photos; keeps the loop safe
            continue
        s_min = max(_DOWNSCALE_RANGE[0], size / avail)
        scale = float(rng.uniform(s_min, _DOWNSCALE_RANGE[1]))
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


# -------------------------------------------------------------------- miniature generators
# All operators below are sums of shifted slices (no reductions, no BLAS), so results are
# bit-for-bit reproducible. Images are float32 arrays of shape (H, W, 3) in [0, 255].


def _param_rng(name: str) -> np.random.Generator:
    """Generator weights are fixed per generator, independent of the data set seed."""
    digest = hashlib.sha256(f"dear-exp-demo/generator/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def _avg_pool(x: np.ndarray, f: int) -> np.ndarray:
    acc = np.zeros_like(x[0::f, 0::f])
    for dy in range(f):
        for dx in range(f):
            acc = acc + x[dy::f, dx::f]
    return acc * np.float32(1.0 / (f * f))


def _pad(x: np.ndarray, p: int) -> np.ndarray:
    return np.pad(x, ((p, p), (p, p), (0, 0)), mode="edge")


def _depthwise3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """3x3 per-channel correlation with edge padding; k has shape (3, 3, C)."""
    h, w = x.shape[:2]
    xp = _pad(x, 1)
    out = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            out = out + xp[dy : dy + h, dx : dx + w] * k[dy, dx]
    return out


def _full3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """3x3 conv mixing channels with edge padding; k has shape (3, 3, C_in, C_out)."""
    h, w, c = x.shape
    planes = np.ascontiguousarray(_pad(x, 1).transpose(2, 0, 1))  # contiguous windows: faster
    out = np.empty_like(x)
    for co in range(k.shape[3]):
        acc = np.zeros((h, w), np.float32)
        for dy in range(3):
            for dx in range(3):
                for ci in range(c):
                    acc = acc + planes[ci, dy : dy + h, dx : dx + w] * k[dy, dx, ci, co]
        out[:, :, co] = acc
    return out


def _interleave(phases: list[list[np.ndarray]]) -> np.ndarray:
    """Pixel shuffle: phases[py][px] (h, w, C) -> (2h, 2w, C)."""
    h, w, c = phases[0][0].shape
    out = np.empty((2 * h, 2 * w, c), np.float32)
    for py in range(2):
        for px in range(2):
            out[py::2, px::2] = phases[py][px]
    return out


def _conv_transpose2x(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Stride-2, padding-1, 4x4 per-channel transposed conv (k: (4, 4, C)), edge-padded input.

    Output pixel 2i+p receives input i with tap 1+p and input i-1+2p with tap 3-3p (per axis),
    which is exactly what torch's conv_transpose2d(stride=2, padding=1) computes.
    """
    h, w = x.shape[:2]
    xp = _pad(x, 1)
    phases: list[list[np.ndarray]] = []
    for py in range(2):
        row: list[np.ndarray] = []
        for px in range(2):
            acc = np.zeros_like(x)
            for ty, oy in ((1 + py, 0), (3 - 3 * py, -1 + 2 * py)):
                for tx, ox in ((1 + px, 0), (3 - 3 * px, -1 + 2 * px)):
                    acc = acc + xp[1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w] * k[ty, tx]
            row.append(acc)
        phases.append(row)
    return _interleave(phases)


def _nearest2x(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)


def _bilinear2x(x: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling with half-pixel centres (align_corners=False), edge clamped."""
    q, t = np.float32(0.25), np.float32(0.75)

    def up_rows(a: np.ndarray) -> np.ndarray:
        ap = np.concatenate([a[:1], a, a[-1:]], axis=0)
        out = np.empty((2 * a.shape[0],) + a.shape[1:], np.float32)
        out[0::2] = ap[1:-1] * t + ap[:-2] * q
        out[1::2] = ap[1:-1] * t + ap[2:] * q
        return out

    return up_rows(up_rows(x).transpose(1, 0, 2)).transpose(1, 0, 2)


def _colour(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-pixel colour matrix: out[..., o] = sum_i x[..., i] * m[i, o]."""
    out = np.zeros_like(x)
    for ci in range(3):
        out = out + x[:, :, ci : ci + 1] * m[ci]
    return out


def _saturate(x: np.ndarray, factor: float) -> np.ndarray:
    r, g, b = x[:, :, 0:1], x[:, :, 1:2], x[:, :, 2:3]
    gray = r * np.float32(0.299) + g * np.float32(0.587) + b * np.float32(0.114)
    return gray + (x - gray) * np.float32(factor)


@cache
def _params(name: str) -> dict[str, np.ndarray]:
    rng = _param_rng(name)
    f32 = np.float32
    if name == "gen_a":
        k1 = np.array([0.25, 0.75, 0.75, 0.25])
        up = np.outer(k1, k1)[:, :, None] + 0.006 * rng.standard_normal((4, 4, 3))
        refine = 0.01 * rng.standard_normal((3, 3, 3, 3))
        refine[1, 1] += np.eye(3)
        refine /= refine.sum(axis=(0, 1, 2), keepdims=True)  # unit DC gain per output channel
        return {"up": up.astype(f32), "refine": refine.astype(f32)}
    if name == "gen_b":
        colour = np.eye(3) + 0.03 * rng.standard_normal((3, 3))
        colour /= colour.sum(axis=0, keepdims=True)
        base = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])[:, :, None]
        smooth = []
        for _ in range(2):
            k = base * (1.0 + 0.3 * rng.uniform(-1.0, 1.0, (3, 3, 3)))
            smooth.append((k / k.sum(axis=(0, 1), keepdims=True)).astype(f32))
        return {"colour": colour.astype(f32), "smooth0": smooth[0], "smooth1": smooth[1]}
    if name == "gen_c":
        pattern = rng.standard_normal((2, 2, 3))
        pattern -= pattern.mean(axis=(0, 1), keepdims=True)
        pattern *= 1.5 / pattern.std()
        return {"pattern": pattern.astype(f32)}
    if name == _INPAINTER:
        base = np.array([[0.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 0.0]])[:, :, None] / 8.0
        colour = np.eye(3) + 0.025 * rng.standard_normal((3, 3))
        colour /= colour.sum(axis=0, keepdims=True)
        out: dict[str, np.ndarray] = {"colour": colour.astype(f32)}
        for py in range(2):
            for px in range(2):
                k = base + 0.015 * rng.standard_normal((3, 3, 3))
                out[f"phase{py}{px}"] = k.astype(f32)
        return out
    raise KeyError(name)


def _run_generator(name: str, x: np.ndarray) -> np.ndarray:
    p = _params(name)
    if name == "gen_a":
        y = _conv_transpose2x(_avg_pool(x, 2), p["up"])
        return _full3(y, p["refine"])
    if name == "gen_b":
        y = _colour(_avg_pool(x, 4), p["colour"])
        y = _depthwise3(_nearest2x(y), p["smooth0"])
        return _depthwise3(_nearest2x(y), p["smooth1"])
    if name == "gen_c":
        y = _saturate(_bilinear2x(_avg_pool(x, 2)), 1.12)
        h, w = y.shape[:2]
        return y + np.tile(p["pattern"], (h // 2, w // 2, 1))
    if name == _INPAINTER:
        y = _colour(_avg_pool(x, 2), p["colour"])
        phases = [[_depthwise3(y, p[f"phase{py}{px}"]) for px in range(2)] for py in range(2)]
        return _interleave(phases)
    raise KeyError(name)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _apply_generator(name: str, image: np.ndarray) -> np.ndarray:
    """Map an RGB uint8 image (H, W divisible by 4) through a miniature generator.

    name is one of GENERATORS or "inpainter". Exposed for tests and inspection.
    """
    if name not in GENERATORS and name != _INPAINTER:
        choices = ", ".join(GENERATORS + (_INPAINTER,))
        raise ValueError(f"unknown generator {name!r}; choose one of: {choices}")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {img.dtype} {img.shape}")
    if img.shape[0] % 4 or img.shape[1] % 4:
        raise ValueError(f"image height and width must be multiples of 4, got {img.shape[:2]}")
    return _to_uint8(_run_generator(name, img.astype(np.float32)))


# ----------------------------------------------------------------------------- items


def _save_jpeg(img: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(img).save(path, format="JPEG", quality=quality)


_PNG_LEVEL = 3  # ~3x faster than the default 6, files ~15 % larger


def _save_png(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path, format="PNG", compress_level=_PNG_LEVEL)


def _jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _jpeg_quality(rng: np.random.Generator) -> int:
    return int(rng.integers(_JPEG_QUALITY[0], _JPEG_QUALITY[1] + 1))


def _make_real(rng: np.random.Generator, part: str, size: int, path: Path) -> None:
    crop = _sample_crop(rng, part, size)
    _save_jpeg(crop, path, _jpeg_quality(rng))


def _make_fake(rng: np.random.Generator, part: str, size: int, generator: str, path: Path) -> None:
    crop = _sample_crop(rng, part, size)
    _save_png(_apply_generator(generator, crop), path)


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


def _make_inpaint(rng: np.random.Generator, size: int, stem_path: Path) -> float:
    """Write {stem}_inpaint.png and {stem}_mask.png; return the mask's area fraction."""
    crop = _sample_crop(rng, "train", size)
    orig = _jpeg_roundtrip(crop, _jpeg_quality(rng)).astype(np.float32)
    mask = _sample_mask(rng, size)
    generated = _run_generator(_INPAINTER, orig)
    soft = _gaussian_blur(mask.astype(np.float32), _MASK_BLUR_SIGMA_AT_96 * size / 96.0)[:, :, None]
    out = generated * soft + orig * (np.float32(1.0) - soft)
    _save_png(_to_uint8(out), stem_path.with_name(stem_path.name + "_inpaint.png"))
    _save_png(mask.astype(np.uint8) * np.uint8(255), stem_path.with_name(stem_path.name + "_mask.png"))
    return float(mask.mean())


# ----------------------------------------------------------------------------- build


def _build(out: Path, scale: str, seed: int) -> dict[str, Any]:
    cfg = SCALES[scale]
    size: int = cfg["size"]
    test_sizes: tuple[int, ...] = tuple(cfg["test_sizes"])
    counts: dict[str, int] = {}

    def folder(rel: str, n: int) -> Path:
        d = out / rel
        d.mkdir(parents=True)
        counts[rel] = n
        return d

    gen = _TRAIN_GENERATOR
    for split in ("train", "val"):
        d = folder(f"{split}/real/photos", cfg[f"{split}_real"])
        for i in range(cfg[f"{split}_real"]):
            _make_real(_item_rng(seed, split, "real", i), "train", size, d / f"{split}_real_{i:04d}.jpg")
        d = folder(f"{split}/fake/{gen}", cfg[f"{split}_fake"])
        for i in range(cfg[f"{split}_fake"]):
            _make_fake(_item_rng(seed, split, gen, i), "train", size, gen, d / f"{split}_{gen}_{i:04d}.png")

    d = folder("inpaint", cfg["inpaint"])
    areas = [
        _make_inpaint(_item_rng(seed, "inpaint", "inpaint", i), size, d / f"inpaint_{i:04d}")
        for i in range(cfg["inpaint"])
    ]
    if areas and not all(_MASK_AREA[0] <= a <= _MASK_AREA[1] for a in areas):
        raise AssertionError(f"inpaint mask areas {min(areas)}..{max(areas)} outside {_MASK_AREA}")

    # Test images alternate between sizes so that evaluation has to batch by image size.
    d = folder("test/real/photos", cfg["test_real"])
    for i in range(cfg["test_real"]):
        sz = test_sizes[i % len(test_sizes)]
        _make_real(_item_rng(seed, "test", "real", i), "test", sz, d / f"test_real_{i:04d}.jpg")
    for gen in GENERATORS:
        d = folder(f"test/fake/{gen}", cfg["test_fake_per_generator"])
        for i in range(cfg["test_fake_per_generator"]):
            sz = test_sizes[i % len(test_sizes)]
            _make_fake(_item_rng(seed, "test", gen, i), "test", sz, gen, d / f"test_{gen}_{i:04d}.png")

    manifest: dict[str, Any] = {
        "version": _VERSION,
        "scale": scale,
        "seed": seed,
        "note": "miniature offline demo data built from scikit-image sample photos; not a benchmark",
        "counts": counts,  # images per folder; for "inpaint", image/mask pairs
        "image_size": size,
        "test_sizes": list(test_sizes),
        "real_format": "JPEG",
        "real_jpeg_quality": list(_JPEG_QUALITY),
        "fake_format": "PNG",
        "train_generator": _TRAIN_GENERATOR,
        "generators": {g: _GENERATOR_DESCRIPTIONS[g] for g in GENERATORS + (_INPAINTER,)},
        "inpaint_mask_area": {"min": min(areas) if areas else None, "max": max(areas) if areas else None},
        "inpaint_mask_blur_sigma": _MASK_BLUR_SIGMA_AT_96 * size / 96.0,
        "sources": {
            "photos": list(_PHOTO_NAMES),
            "train_val_inpaint_columns": f"left {_TRAIN_WIDTH_FRACTION:.0%} of each photo's width",
            "test_columns": f"right {1 - _TRAIN_WIDTH_FRACTION:.0%} of each photo's width",
            "downscale_range": list(_DOWNSCALE_RANGE),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _is_built(final: Path, scale: str, seed: int) -> bool:
    """True if final holds a finished build; raise if it holds anything else."""
    if not final.exists():
        return False
    manifest_path = final / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"demo data folder {final} exists but has no readable manifest.json "
            f"(an interrupted or hand-made build?); delete it and run again"
        ) from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"demo data folder {final} has a malformed manifest.json; delete it and run again")
    found = (manifest.get("version"), manifest.get("scale"), manifest.get("seed"))
    expected = (_VERSION, scale, seed)
    if found != expected:
        raise ValueError(
            f"demo data folder {final} holds version/scale/seed {found}, expected {expected}; delete it and run again"
        )
    return True


def ensure_demo_data(root: Path | str, scale: str = "demo", seed: int = 0) -> Path:
    """Build the data set under root/<scale>-seed<seed>/ if not there yet; return that folder.

    Safe to call from several processes at once: one builds into a temporary sibling folder
    under a file lock and renames it into place, the others wait and reuse it.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown demo scale {scale!r}; choose one of: {', '.join(SCALES)}")
    root = Path(root)
    final = root / f"{scale}-seed{seed}"
    if _is_built(final, scale, seed):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{final.name}.lock")):
        if _is_built(final, scale, seed):
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        try:
            _build(tmp, scale, seed)
            os.chmod(tmp, 0o755)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
