"""Test-time post-processing, seeded per image.

A setting is an ordered list of ops (`conf/postprocess/<preset>.yaml`: `settings: {name: [op, ...]}`),
applied to the decoded RGB image before the detector's own preprocessing. Every random parameter is
drawn from `np.random.default_rng(item_seed(seed, key, position, op))`: the global seed, the image's
path relative to its benchmark root (`key`), the op's position in the chain and its name. A setting
therefore gives the same pixels on any machine and in any file-listing order. Each op draws all its
parameters first (`Op.params`), so the output size is known from the header before any pixel is
touched (`Chain.plan`; evaluation batches images of one size together).

A numeric parameter is either fixed or a `[low, high]` range drawn per image: integers uniformly in
`low..high` inclusive (`rng.integers(low, high + 1)`), floats uniformly (`rng.uniform(low, high)`).

Ops and the exact library calls (`img` is a PIL RGB image, `arr = np.array(img)`):

- `jpeg` (`quality` 1-100; `backend: pil` default, or `cv2`).
  pil: `img.save(buf, format="JPEG", quality=q)`, decoded by `Image.open(buf).convert("RGB")`
  (Pillow's defaults: 4:2:0 subsampling, baseline), the `pil_jpg` of CNNDetection/AIGCDB/SIDB/UFD.
  cv2: `cv2.imencode(".jpg", arr[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])`, decoded by
  `cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]` (RGB -> BGR -> RGB), CNNDetection's `cv2_jpg`.
- `webp` (`quality` 1-100): `img.save(buf, format="WEBP", quality=q)` (lossy, Pillow's defaults),
  decoded by PIL.
- `resize`: exactly one of `factor` (> 0; sides `round(w * f)`, or `int(w * f)` with
  `rounding: floor`), `short_side` (the shorter side becomes it, the longer one keeps the aspect
  ratio, rounded likewise; `rounding: floor` is torchvision's `Resize(int)`) or `size: [w, h]`.
  `interpolation` (default bicubic) and `backend`:
  pil (default): `img.resize((w, h), Image.Resampling.<NEAREST|BILINEAR|BICUBIC|LANCZOS|BOX|HAMMING>)`;
  Pillow's filters widen their support when downscaling, so it is always antialiased (this is also
  what torchvision's `Resize` does to a PIL image).
  cv2: `cv2.resize(arr, (w, h), interpolation=cv2.INTER_<NEAREST|LINEAR|CUBIC|LANCZOS4|AREA>)`
  (names nearest, bilinear, bicubic, lanczos, area); no antialiasing except `area`.
  torch: `torchvision.transforms.functional.resize(chw_uint8, [h, w], interpolation=InterpolationMode.
  <NEAREST|BILINEAR|BICUBIC>, antialias=antialias)` (`antialias` default true; only this backend takes it).
- `blur` (Gaussian, float `sigma` >= 0; `backend: scipy` default, or `pil`).
  scipy: `scipy.ndimage.gaussian_filter(arr[:, :, c], output=arr[:, :, c], sigma=s)` for c = 0, 1, 2
  (mode reflect, truncate 4.0, result written into the uint8 array), as AIGCDB, SIDB, UFD and
  CNNDetection call it; sigma 0 leaves the image unchanged.
  pil: `img.filter(ImageFilter.GaussianBlur(radius=s))` (Pillow's radius is the standard deviation;
  extended box filters approximating a Gaussian).
- `noise` (Gaussian, `std` >= 0 in pixel units of 0-255): a per-image seed is drawn with the other
  parameters, then `np.clip(np.rint(arr + np.random.default_rng(seed).normal(0, std, arr.shape)), 0, 255)`.
- `brightness`, `contrast`, `sharpness`, `color` (`factor` >= 0, 1 = unchanged):
  `ImageEnhance.<Brightness|Contrast|Sharpness|Color>(img).enhance(f)`.
- `crop` (square; `size` fixed or a range for the side, clamped to the shorter side; `mode: center`
  default, with torchvision CenterCrop's offsets `int(round((w - s) / 2))`, or `random`, the corner
  drawn uniformly): `img.crop((x, y, x + s, y + s))`.
- `dear_processed`: DEAR's `test_processed` (its `scripts/processed_data_gen/process_test_data.py`,
  after AlignedForensics issue #9), in the reference's order: JPEG quality `randint(50, 95)`; a fair
  coin between an up-scale factor `U(1, min(1024/W, 1024/H))` and a down-scale factor
  `U(max(256/W, 256/H), 1)` (drawn as Python's `random.uniform`, `a + (b - a) * u`, so a reversed
  interval works the same way); new sides `int(W * f)`, `int(H * f)`, each clamped to [256, 1024];
  `img.resize((w, h), Image.Resampling.BICUBIC)` (Pillow's default filter for `img.resize((w, h))`);
  `ImageEnhance.Brightness`, `.Contrast`, `.Sharpness`, `.Color`, each `enhance(U(0.8, 1.2))`, in that
  order; then saved as JPEG by PIL at the drawn quality. Parameters `quality`, `side`, `enhance`
  default to those numbers. One difference, on purpose: the reference draws from a single
  `random.seed(42)` stream per folder, so an image's parameters depend on the listing order of its
  folder (`iterdir`, unsorted); here they are drawn per image from its own seed, so they cannot.
- `corvi_social`: Corvi et al. 2023's "social network" operations (GRIP's `random_operations.py`):
  square crop side `randint(max(m * 5 // 8, 160), m)` with `m = min(W, H, 2048)` (the lower bound is
  clamped to `m` when the image is smaller than 160 px; the reference refuses such images), corner
  `randint(0, W - side)`, `randint(0, H - side)`; `resize((200, 200), LANCZOS if side > 200 else
  BICUBIC)` (PIL's ANTIALIAS and CUBIC); JPEG (PIL) quality `randint(65, 100)`. Parameters `crop`,
  `crop_ratio`, `size`, `quality` default to those numbers.

`jpeg`, `webp`, `dear_processed` and `corvi_social` encode: when one ends a chain, `Chain.process`
also returns the exact bytes it wrote (`task=export` writes them as they are, never re-encoded).
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from dear_exp.data.seeding import item_seed
from dear_exp.errors import DearError

Size = tuple[int, int]
Params = dict[str, Any]

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
CV2_INTERPOLATION = ("nearest", "bilinear", "bicubic", "lanczos", "area")
TORCH_INTERPOLATION = ("nearest", "bilinear", "bicubic")
INTERPOLATION = {"pil": tuple(RESAMPLE), "cv2": CV2_INTERPOLATION, "torch": TORCH_INTERPOLATION}
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


def _pil_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _pil_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as out:
        out.load()
        return out.convert("RGB")


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
        return _pil_decode(data)


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
            return _pil_jpeg(img, params["quality"])
        import cv2

        ok, buf = cv2.imencode(
            ".jpg", np.ascontiguousarray(np.array(img)[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), params["quality"]]
        )
        if not ok:
            raise DearError(f"postprocess setting {self.setting!r}: cv2 could not encode a {img.size} image as JPEG")
        return buf.tobytes()

    def decode(self, data: bytes) -> Image.Image:
        if self.get("backend") == "pil":
            return _pil_decode(data)
        import cv2

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


class Webp(Op):
    name = "webp"
    DEFAULTS = {"quality": _REQUIRED}
    encodes = ".webp"

    def check(self) -> None:
        self.check_value("quality", integer=True, lo=1, hi=100)

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"quality": _draw(self.spec["quality"], rng, integer=True)}

    def encode(self, img: Image.Image, params: Params) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=params["quality"])
        return buf.getvalue()


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
        w, h = params["size"]
        interp, backend = self.get("interpolation"), self.get("backend")
        if backend == "pil":
            return img.resize((w, h), RESAMPLE[interp])
        if backend == "cv2":
            import cv2

            flags = {
                "nearest": cv2.INTER_NEAREST,
                "bilinear": cv2.INTER_LINEAR,
                "bicubic": cv2.INTER_CUBIC,
                "lanczos": cv2.INTER_LANCZOS4,
                "area": cv2.INTER_AREA,
            }
            return Image.fromarray(cv2.resize(np.array(img), (w, h), interpolation=flags[interp]))
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.functional import resize

        antialias = True if self.spec.get("antialias") is None else bool(self.spec["antialias"])
        chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        out = resize(chw, [h, w], interpolation=InterpolationMode(interp), antialias=antialias)
        return Image.fromarray(np.ascontiguousarray(out.permute(1, 2, 0).numpy()))


class Blur(Op):
    name = "blur"
    DEFAULTS = {"sigma": _REQUIRED, "backend": "scipy"}

    def check(self) -> None:
        self.check_value("sigma", lo=0)
        self.check_choice("backend", ("scipy", "pil"))

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"sigma": _draw(self.spec["sigma"], rng, integer=False)}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        if self.get("backend") == "pil":
            return img.filter(ImageFilter.GaussianBlur(radius=params["sigma"]))
        from scipy.ndimage import gaussian_filter

        arr = np.array(img)
        for c in range(3):
            gaussian_filter(arr[:, :, c], output=arr[:, :, c], sigma=params["sigma"])
        return Image.fromarray(arr)


class Noise(Op):
    name = "noise"
    DEFAULTS = {"std": _REQUIRED}

    def check(self) -> None:
        self.check_value("std", lo=0)

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"std": _draw(self.spec["std"], rng, integer=False), "seed": int(rng.integers(2**63 - 1))}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        arr = np.array(img).astype(np.float64)
        noisy = arr + np.random.default_rng(params["seed"]).normal(0.0, params["std"], arr.shape)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


class Enhance(Op):
    DEFAULTS = {"factor": _REQUIRED}
    ENHANCER: ClassVar[Any]

    def check(self) -> None:
        self.check_value("factor", lo=0)

    def params(self, rng: np.random.Generator, size: Size) -> Params:
        return {"factor": _draw(self.spec["factor"], rng, integer=False)}

    def apply(self, img: Image.Image, params: Params) -> Image.Image:
        return type(self).ENHANCER(img).enhance(params["factor"])


class Brightness(Enhance):
    name = "brightness"
    ENHANCER = ImageEnhance.Brightness


class Contrast(Enhance):
    name = "contrast"
    ENHANCER = ImageEnhance.Contrast


class Sharpness(Enhance):
    name = "sharpness"
    ENHANCER = ImageEnhance.Sharpness


class Color(Enhance):
    name = "color"
    ENHANCER = ImageEnhance.Color


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
        return img.crop(params["box"])


class DearProcessed(Op):
    name = "dear_processed"
    DEFAULTS = {"quality": [50, 95], "side": [256, 1024], "enhance": [0.8, 1.2]}
    encodes = ".jpg"
    ENHANCERS = (
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("sharpness", ImageEnhance.Sharpness),
        ("color", ImageEnhance.Color),
    )

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
        for key, _ in self.ENHANCERS:
            params[key] = elo + (ehi - elo) * float(rng.random())  # random.uniform(0.8, 1.2)
        return params

    def encode(self, img: Image.Image, params: Params) -> bytes:
        img = img.resize(params["size"], Image.Resampling.BICUBIC)
        for key, enhancer in self.ENHANCERS:
            img = enhancer(img).enhance(params[key])
        return _pil_jpeg(img, params["quality"])


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
        img = img.crop(params["box"]).resize(params["size"], RESAMPLE[params["resample"]])
        return _pil_jpeg(img, params["quality"])


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
    ops = []
    for spec in specs:
        op = spec.get("op") if isinstance(spec, dict) else None
        if op not in OP_CLASSES:
            raise DearError(f"postprocess setting {name!r}: unknown op {op!r}; choose one of {', '.join(OPS)}")
        ops.append(OP_CLASSES[op](spec, name))
    return ops


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
