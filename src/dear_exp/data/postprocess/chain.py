"""A setting's chain of ops, applied to one image with its own seeds."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from dear_exp.data.postprocess.ops import Size
from dear_exp.data.postprocess.specs import Params, parse_chain
from dear_exp.data.seeding import item_seed


class Chain:
    """An ordered list of ops, applied with per-image seeds."""

    def __init__(self, name: str, specs: list[dict[str, Any]], seed: int) -> None:
        self.name = name
        self.specs = specs
        self.ops = parse_chain(name, specs)
        self.seed = seed

    @property
    def encodes(self) -> str | None:
        """The file extension of the bytes the last op writes, if it encodes (JPEG, WebP)."""
        return self.ops[-1].encodes if self.ops else None

    def plan(self, key: str, size: Size) -> tuple[list[Params], Size]:
        """Parameters of every op for this image, and the final size."""
        plans = []
        for i, op in enumerate(self.ops):
            rng = np.random.default_rng(item_seed(self.seed, key, i, op.name))
            params = op.params(rng, size)
            plans.append(params)
            size = op.out_size(size, params)
        return plans, size

    def process(self, img: Image.Image, key: str) -> tuple[Image.Image, bytes | None]:
        """The processed image and, when the last op encodes, the exact bytes it wrote."""
        plans, _ = self.plan(key, img.size)
        data = None
        for i, (op, params) in enumerate(zip(self.ops, plans)):
            if i == len(self.ops) - 1 and op.encodes:
                data = op.encode(img, params)
                img = op.decode(data)
            else:
                img = op.apply(img, params)
        return img, data

    def __call__(self, img: Image.Image, key: str) -> Image.Image:
        return self.process(img, key)[0]
