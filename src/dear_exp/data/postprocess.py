"""Test-time post-processing (JPEG, WebP, resize), seeded per image.

Every random parameter is drawn from a generator seeded by the global seed, the image's path
relative to its benchmark root and the operation's position and name, so a setting gives the same
pixels on any machine and in any file-listing order. Each op draws its parameters first
(`params`), so the output size is known before any pixel is touched (evaluation batches by size).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dear_exp.data.seeding import item_seed
from dear_exp.errors import DearError

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


def _draw(value: Any, rng: np.random.Generator, integer: bool) -> float:
    """A fixed value, or a [low, high] range drawn per image (inclusive for integers)."""
    if isinstance(value, (list, tuple)):
        lo, hi = value
        return int(rng.integers(lo, hi + 1)) if integer else float(rng.uniform(lo, hi))
    return int(value) if integer else float(value)


def _encode(img: Image.Image, fmt: str, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


@dataclass(frozen=True)
class Op:
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec["op"])

    def params(self, rng: np.random.Generator, size: tuple[int, int]) -> dict[str, Any]:
        s = self.spec
        if self.name in ("jpeg", "webp"):
            return {"quality": _draw(s["quality"], rng, integer=True)}
        if self.name == "resize":
            factor = _draw(s["factor"], rng, integer=False)
            w, h = size
            return {"size": (max(1, round(w * factor)), max(1, round(h * factor)))}
        raise AssertionError(self.name)

    @staticmethod
    def out_size(size: tuple[int, int], params: dict[str, Any]) -> tuple[int, int]:
        return params.get("size", size)

    def apply(self, img: Image.Image, params: dict[str, Any]) -> Image.Image:
        if self.name == "jpeg":
            return _encode(img, "JPEG", params["quality"])
        if self.name == "webp":
            return _encode(img, "WEBP", params["quality"])
        return img.resize(params["size"], RESAMPLE[self.spec.get("interpolation", "bicubic")])


OPS = ("jpeg", "webp", "resize")
REQUIRED = {"jpeg": ("quality",), "webp": ("quality",), "resize": ("factor",)}


def parse_chain(name: str, specs: list[dict[str, Any]]) -> list[Op]:
    ops = []
    for spec in specs:
        op = spec.get("op")
        if op not in OPS:
            raise DearError(f"postprocess setting {name!r}: unknown op {op!r}; choose one of {', '.join(OPS)}")
        missing = [k for k in REQUIRED[op] if k not in spec]
        if missing:
            raise DearError(f"postprocess setting {name!r}: op {op} needs {', '.join(missing)}")
        if op == "resize" and spec.get("interpolation", "bicubic") not in RESAMPLE:
            raise DearError(f"postprocess setting {name!r}: interpolation must be one of {', '.join(RESAMPLE)}")
        ops.append(Op(dict(spec)))
    return ops


class Chain:
    """An ordered list of ops, applied with per-image seeds."""

    def __init__(self, name: str, specs: list[dict[str, Any]], seed: int) -> None:
        self.name = name
        self.ops = parse_chain(name, specs)
        self.seed = seed

    def plan(self, key: str, size: tuple[int, int]) -> tuple[list[dict[str, Any]], tuple[int, int]]:
        """Parameters of every op for this image, and the final size."""
        plans = []
        for i, op in enumerate(self.ops):
            rng = np.random.default_rng(item_seed(self.seed, key, i, op.name))
            params = op.params(rng, size)
            plans.append(params)
            size = op.out_size(size, params)
        return plans, size

    def __call__(self, img: Image.Image, key: str) -> Image.Image:
        plans, _ = self.plan(key, img.size)
        for op, params in zip(self.ops, plans):
            img = op.apply(img, params)
        return img
