"""The ops as a config names them: each `Op` checks its spec at parse time (one-line `DearError`),
draws its per-image parameters (`params`) and predicts the output size (`out_size`); the pixels are
changed by the pure functions of `ops`. `OP_CLASSES` maps an op name to its class, and
`parse_chain` turns a setting's list of specs into ops."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from dear_exp.data.postprocess import ops
from dear_exp.data.postprocess.ops import INTERPOLATION, Size
from dear_exp.errors import DearError

Params = dict[str, Any]
_REQUIRED = object()


def _draw(value: Any, rng: np.random.Generator, integer: bool) -> Any:
    """A fixed value, or a [low, high] range drawn per image (inclusive for integers)."""
    if isinstance(value, (list, tuple)):
        lo, hi = value
        return int(rng.integers(lo, hi + 1)) if integer else float(rng.uniform(lo, hi))
    return int(value) if integer else float(value)


def _is_number(x: Any, integer: bool) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, (int, np.integer)) if integer else isinstance(x, (int, float, np.integer, np.floating))


class Op:
    """One post-processing step: `params` draws, `out_size` predicts, `apply` changes pixels."""

    name: ClassVar[str]
    DEFAULTS: ClassVar[dict[str, Any]] = {}  # every allowed parameter; _REQUIRED where it has no default
    encodes: ClassVar[str | None] = None  # file extension of the bytes an encoding op writes

    def __init__(self, spec: dict[str, Any], setting: str) -> None:
        self.spec = dict(spec)
        self.setting = setting
        unknown = [k for k in self.spec if k != "op" and k not in self.DEFAULTS]
        if unknown:
            raise self.error(f"has no parameter {unknown[0]!r}; it takes {', '.join(self.DEFAULTS) or 'none'}", " ")
        missing = [k for k, v in self.DEFAULTS.items() if v is _REQUIRED and k not in self.spec]
        if missing:
            raise self.error(f"needs {', '.join(missing)}", " ")
        self.check()

    def error(self, message: str, sep: str = ": ") -> DearError:
        return DearError(f"postprocess setting {self.setting!r}: op {self.name}{sep}{message}")

    def get(self, key: str) -> Any:
        return self.spec.get(key, self.DEFAULTS.get(key))

    def check(self) -> None:
        """Refuse impossible values at parse time (DearError, one line)."""

    def check_value(
        self,
        key: str,
        *,
        integer: bool = False,
        lo: float | None = None,
        hi: float | None = None,
        positive: bool = False,
        ranged: bool = True,
    ) -> None:
        value = self.get(key)
        kind = "an integer" if integer else "a number"
        if positive:
            bounds = f" > {lo}"
        elif hi is not None:
            bounds = f" in [{lo}, {hi}]"
        else:
            bounds = f" >= {lo}" if lo is not None else ""
        what = f"{key} must be {kind}{bounds}" + (" or a [low, high] range of them" if ranged else "")
        if isinstance(value, (list, tuple)) and ranged:
            if len(value) != 2 or not all(_is_number(v, integer) for v in value) or value[0] > value[1]:
                raise self.error(f"{what}, low <= high; got {list(value)}")
            values = list(value)
        elif _is_number(value, integer):
            values = [value]
        else:
            raise self.error(f"{what}; got {value!r}")
        for v in values:
            if (positive and v <= (lo or 0)) or (lo is not None and v < lo) or (hi is not None and v > hi):
                raise self.error(f"{what}; got {value!r}")

    def check_choice(self, key: str, choices: tuple[str, ...]) -> None:
        if self.get(key) not in choices:
            raise self.error(f"{key} must be one of {', '.join(choices)}; got {self.get(key)!r}")

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {}

    @staticmethod
    def out_size(size: Size, params: Params) -> Size:
        return tuple(params.get("size", size))  # type: ignore[return-value]

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        return self.decode(self.encode(img, params))

    def encode(self, img: Image.Image, params: Params) -> bytes:
        raise NotImplementedError(self.name)

    def decode(self, data: bytes) -> Image.Image:
        return ops.pil_decode(data)


class Jpeg(Op):
    name = "jpeg"
    DEFAULTS = {"quality": _REQUIRED, "backend": "pil"}
    encodes = ".jpg"

    def check(self) -> None:
        self.check_value("quality", integer=True, lo=1, hi=100)
        self.check_choice("backend", ("pil", "cv2"))

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"quality": _draw(self.spec["quality"], rng, integer=True)}

    def encode(self, img: Image.Image, params: Params) -> bytes:
        if self.get("backend") == "pil":
            return ops.pil_jpeg(img, params["quality"])
        try:
            return ops.cv2_jpeg(img, params["quality"])
        except ValueError as exc:
            raise DearError(f"postprocess setting {self.setting!r}: {exc}") from None

    def decode(self, data: bytes) -> Image.Image:
        return ops.pil_decode(data) if self.get("backend") == "pil" else ops.cv2_decode(data)


class Webp(Op):
    name = "webp"
    DEFAULTS = {"quality": _REQUIRED}
    encodes = ".webp"

    def check(self) -> None:
        self.check_value("quality", integer=True, lo=1, hi=100)

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"quality": _draw(self.spec["quality"], rng, integer=True)}

    def encode(self, img: Image.Image, params: Params) -> bytes:
        return ops.webp(img, params["quality"])


class Resize(Op):
    name = "resize"
    DEFAULTS = {
        "factor": None,
        "short_side": None,
        "size": None,
        "interpolation": "bicubic",
        "backend": "pil",
        "antialias": None,
        "rounding": "round",
    }

    def check(self) -> None:
        given = [k for k in ("factor", "short_side", "size") if self.spec.get(k) is not None]
        if len(given) != 1:
            raise self.error(f"needs exactly one of factor, short_side, size; got {', '.join(given) or 'none'}", " ")
        mode = given[0]
        if mode == "factor":
            self.check_value("factor", positive=True, lo=0)
        elif mode == "short_side":
            self.check_value("short_side", integer=True, lo=1)
        else:
            size = self.spec["size"]
            if not (
                isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_number(v, True) and v >= 1 for v in size)
            ):
                raise self.error(f"size must be [width, height], two integers >= 1; got {size!r}")
        self.check_choice("backend", tuple(INTERPOLATION))
        self.check_choice("interpolation", INTERPOLATION[self.get("backend")])
        self.check_choice("rounding", ("round", "floor"))
        if self.spec.get("antialias") is not None:
            if self.get("backend") != "torch":
                raise self.error(
                    "antialias applies to backend torch only (pil always antialiases; cv2 never, "
                    "except interpolation area)"
                )
            if not isinstance(self.spec["antialias"], bool):
                raise self.error(f"antialias must be true or false; got {self.spec['antialias']!r}")

    def _round(self, x: float) -> int:
        return max(1, int(x) if self.get("rounding") == "floor" else round(x))

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        s = self.spec
        w, h = size
        if s.get("factor") is not None:
            factor = _draw(s["factor"], rng, integer=False)
            return {"size": (self._round(w * factor), self._round(h * factor))}
        if s.get("short_side") is not None:
            side = _draw(s["short_side"], rng, integer=True)
            if w <= h:
                return {"size": (side, self._round(side * h / w))}
            return {"size": (self._round(side * w / h), side)}
        return {"size": (int(s["size"][0]), int(s["size"][1]))}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        antialias = True if self.spec.get("antialias") is None else bool(self.spec["antialias"])
        return ops.resize(img, params["size"], self.get("interpolation"), self.get("backend"), antialias)


class Blur(Op):
    name = "blur"
    DEFAULTS = {"sigma": _REQUIRED, "backend": "scipy"}

    def check(self) -> None:
        self.check_value("sigma", lo=0)
        self.check_choice("backend", ("scipy", "pil"))

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"sigma": _draw(self.spec["sigma"], rng, integer=False)}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        return ops.blur(img, params["sigma"], self.get("backend"))


class Noise(Op):
    name = "noise"
    DEFAULTS = {"std": _REQUIRED}

    def check(self) -> None:
        self.check_value("std", lo=0)

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"std": _draw(self.spec["std"], rng, integer=False), "seed": int(rng.integers(2**63 - 1))}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        return ops.noise(img, params["std"], params["seed"])


class Enhance(Op):
    """brightness, contrast, sharpness, color: `ops.enhance` of the op's own name."""

    DEFAULTS = {"factor": _REQUIRED}

    def check(self) -> None:
        self.check_value("factor", lo=0)

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"factor": _draw(self.spec["factor"], rng, integer=False)}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        return ops.enhance(img, self.name, params["factor"])


class Brightness(Enhance):
    name = "brightness"


class Contrast(Enhance):
    name = "contrast"


class Sharpness(Enhance):
    name = "sharpness"


class Color(Enhance):
    name = "color"


class Crop(Op):
    name = "crop"
    DEFAULTS = {"size": _REQUIRED, "mode": "center"}

    def check(self) -> None:
        self.check_value("size", integer=True, lo=1)
        self.check_choice("mode", ("center", "random"))

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        w, h = size
        side = min(_draw(self.spec["size"], rng, integer=True), w, h)
        if self.get("mode") == "center":
            x, y = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
        else:
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        return {"box": (x, y, x + side, y + side), "size": (side, side)}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        return ops.crop(img, params["box"])


class DearProcessed(Op):
    name = "dear_processed"
    DEFAULTS = {"quality": [50, 95], "side": [256, 1024], "enhance": [0.8, 1.2]}
    encodes = ".jpg"
    ENHANCED = ("brightness", "contrast", "sharpness", "color")  # drawn, and applied, in this order

    def check(self) -> None:
        for key, kw in (
            ("quality", {"integer": True, "lo": 1, "hi": 100}),
            ("side", {"integer": True, "lo": 1}),
            ("enhance", {"lo": 0}),
        ):
            if not isinstance(self.get(key), (list, tuple)):
                raise self.error(f"{key} must be a [low, high] range; got {self.get(key)!r}")
            self.check_value(key, **kw)  # type: ignore[arg-type]

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        w, h = size
        qlo, qhi = self.get("quality")
        slo, shi = self.get("side")
        elo, ehi = self.get("enhance")
        quality = int(rng.integers(qlo, qhi + 1))  # random.randint(50, 95)
        upscale = bool(rng.random() < 0.5)  # random.choice([True, False])
        a, b = (1.0, min(shi / w, shi / h)) if upscale else (max(slo / w, slo / h), 1.0)
        factor = a + (b - a) * float(rng.random())  # random.uniform(a, b)
        nw = max(slo, min(shi, int(w * factor)))
        nh = max(slo, min(shi, int(h * factor)))
        params: Params = {"quality": quality, "upscale": upscale, "factor": factor, "size": (nw, nh)}
        for key in self.ENHANCED:
            params[key] = elo + (ehi - elo) * float(rng.random())  # random.uniform(0.8, 1.2)
        return params

    def encode(self, img: Image.Image, params: Params) -> bytes:
        factors = {key: params[key] for key in self.ENHANCED}
        return ops.dear_processed(img, params["size"], factors, params["quality"])


class CorviSocial(Op):
    name = "corvi_social"
    DEFAULTS = {"crop": [160, 2048], "crop_ratio": [5, 8], "size": 200, "quality": [65, 100]}
    encodes = ".jpg"

    def check(self) -> None:
        self.check_value("crop", integer=True, lo=1)
        self.check_value("quality", integer=True, lo=1, hi=100)
        self.check_value("size", integer=True, lo=1, ranged=False)
        ratio = self.get("crop_ratio")
        if not (
            isinstance(ratio, (list, tuple)) and len(ratio) == 2 and all(_is_number(v, True) and v >= 1 for v in ratio)
        ):
            raise self.error(f"crop_ratio must be [numerator, denominator], two integers >= 1; got {ratio!r}")
        for key in ("crop", "quality"):
            if not isinstance(self.get(key), (list, tuple)):
                raise self.error(f"{key} must be a [low, high] range; got {self.get(key)!r}")

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        w, h = size
        cmin, cmax = self.get("crop")
        num, den = self.get("crop_ratio")
        qlo, qhi = self.get("quality")
        out = int(self.get("size"))
        top = min(w, h, cmax)
        low = min(max(top * num // den, cmin), top)
        side = int(rng.integers(low, top + 1))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        quality = int(rng.integers(qlo, qhi + 1))
        return {
            "crop": side,
            "box": (x, y, x + side, y + side),
            "quality": quality,
            "size": (out, out),
            "resample": "lanczos" if side > out else "bicubic",
        }

    def encode(self, img: Image.Image, params: Params) -> bytes:
        return ops.corvi_social(img, params["box"], params["size"], params["resample"], params["quality"])


OP_CLASSES: dict[str, type[Op]] = {
    cls.name: cls
    for cls in (
        Jpeg,
        Webp,
        Resize,
        Blur,
        Noise,
        Brightness,
        Contrast,
        Sharpness,
        Color,
        Crop,
        DearProcessed,
        CorviSocial,
    )
}
OPS = tuple(OP_CLASSES)


def parse_chain(name: str, specs: Any) -> list[Op]:
    if specs is None:
        return []
    if not isinstance(specs, (list, tuple)):
        raise DearError(
            f"postprocess setting {name!r} must be a list of ops, e.g. [{{op: jpeg, quality: 75}}]; got {specs!r}"
        )
    chain = []
    for spec in specs:
        op = spec.get("op") if isinstance(spec, dict) else None
        if op not in OP_CLASSES:
            raise DearError(f"postprocess setting {name!r}: unknown op {op!r}; choose one of {', '.join(OPS)}")
        chain.append(OP_CLASSES[op](spec, name))
    return chain
