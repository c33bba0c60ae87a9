"""The demo's miniature "generators": fixed-weight encoder/decoder pairs whose upsampling leaves
weak, generator-specific local pixel correlations (the traces NPR keys on), and the inpainter.

Every generator, seen or unseen, and the inpainter end with the same last stage: they add the shared
texture (`shared_tile`), a fixed luminance pattern of periods 6 and 12 px (the demo's cue (c): a
generation artefact common to all generators that JPEG, WebP and resizing to half size keep, unlike
the generator-specific traces, which they erase). `demo/cues.py` lists the demo world's cues.

All operators below are sums of shifted slices (no reductions, no BLAS), so results are
bit-for-bit reproducible. Images are float32 arrays of shape (H, W, 3) in [0, 255].
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np

GENERATORS: tuple[str, ...] = ("gen_a", "gen_b", "gen_c")  # gen_a seen in training; gen_b, gen_c unseen
TRAIN_GENERATOR = "gen_a"
INPAINTER = "inpainter"

DESCRIPTIONS: dict[str, str] = {
    "gen_a": "2x average-pool encoder; stride-2 4x4 transposed-conv decoder (bilinear kernel "
    "plus a fixed random perturbation: checkerboard traces); near-identity 3x3 refinement conv",
    "gen_b": "4x average-pool encoder with a mild fixed colour matrix; two nearest-neighbour 2x "
    "upsamplings, each followed by a fixed random-ish 3x3 smoothing conv",
    "gen_c": "2x average-pool encoder; bilinear 2x upsampling, slight saturation boost and a weak "
    "fixed period-2 high-frequency pattern",
    INPAINTER: "inpainting decoder: 2x average-pool; sub-pixel (pixel-shuffle) conv decoder with "
    "fixed per-phase 3x3 kernels; composited into a JPEG-decoded real photo through a "
    "Gaussian-blurred rectangular mask",
}


# Cue (c), the shared texture: cosines of periods 12 and 6 px along both axes, each of amplitude
# SHARED_TEXTURE_AMPLITUDE grey levels (std 3 * sqrt(2) = 4.2 in all). Set by what the cue must do,
# before any detector saw it (never tuned on a DEAR result): an 8x8 DCT coefficient of a cosine of
# amplitude A is about 4 A, which must reach JPEG's quantisation step at quality 50 (about 12 for the
# lowest frequencies) for the texture to outlive `jpeg50-95`; periods 12 and 6 become 6 and 3 after
# halving the size, so a response learnt at period 6 still fires on a halved image. The periods are
# incommensurate with JPEG's 8 px grid: a period dividing 16 would put structure on the block grid
# and mimic the real-side cue (a).
SHARED_TEXTURE_AMPLITUDE = 3.0
SHARED_TEXTURE_PERIOD = 12
# spatial frequencies (fy, fx) in cycles per SHARED_TEXTURE_PERIOD px
_SHARED_FREQUENCIES = ((1, 0), (0, 1), (2, 0), (0, 2))


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
    if name == INPAINTER:
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


@cache
def shared_tile(amplitude: float = SHARED_TEXTURE_AMPLITUDE) -> np.ndarray:
    """One period (SHARED_TEXTURE_PERIOD px square) of the shared texture, float32 with zero mean: a sum
    of cosines with fixed random phases, the same on R, G and B (JPEG's chroma subsampling keeps it)."""
    rng = _param_rng("shared_texture")
    n = SHARED_TEXTURE_PERIOD
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    tile = np.zeros((n, n))
    for fy, fx in _SHARED_FREQUENCIES:
        tile += amplitude * np.cos(2 * np.pi * (fy * yy + fx * xx) / n + rng.uniform(0, 2 * np.pi))
    return tile.astype(np.float32)


def add_shared_texture(x: np.ndarray, amplitude: float = SHARED_TEXTURE_AMPLITUDE) -> np.ndarray:
    """x (H, W, 3) float32 plus the shared texture (each cosine of `amplitude` grey levels), tiled from
    the top-left corner."""
    h, w = x.shape[:2]
    n = SHARED_TEXTURE_PERIOD
    tile = np.tile(shared_tile(amplitude), (-(-h // n), -(-w // n)))[:h, :w]
    return x + tile[:, :, None]


def run_fingerprint(name: str, x: np.ndarray) -> np.ndarray:
    """The generator's own decoder, without the shared last stage: its specific traces alone."""
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
    if name == INPAINTER:
        y = _colour(_avg_pool(x, 2), p["colour"])
        phases = [[_depthwise3(y, p[f"phase{py}{px}"]) for px in range(2)] for py in range(2)]
        return _interleave(phases)
    raise KeyError(name)


def run_generator(name: str, x: np.ndarray, texture: float = SHARED_TEXTURE_AMPLITUDE) -> np.ndarray:
    """A generator's whole decoder: its own traces, then the shared texture every generator adds
    (`texture`: its amplitude; 0 leaves the world without cue (c))."""
    return add_shared_texture(run_fingerprint(name, x), texture)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def apply_generator(name: str, image: np.ndarray, texture: float = SHARED_TEXTURE_AMPLITUDE) -> np.ndarray:
    """Map an RGB uint8 image (H, W divisible by 4) through a miniature generator.

    name is one of GENERATORS or "inpainter". Exposed for tests and inspection.
    """
    if name not in GENERATORS and name != INPAINTER:
        choices = ", ".join(GENERATORS + (INPAINTER,))
        raise ValueError(f"unknown generator {name!r}; choose one of: {choices}")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array of shape (H, W, 3), got {img.dtype} {img.shape}")
    if img.shape[0] % 4 or img.shape[1] % 4:
        raise ValueError(f"image height and width must be multiples of 4, got {img.shape[:2]}")
    return to_uint8(run_generator(name, img.astype(np.float32), texture))
