"""The image operations themselves: pure functions of a PIL RGB image and fully drawn parameters
(no validation, no randomness: `specs` checks the config and draws the numbers). The exact library
calls are listed in the `dear_exp.data.postprocess` docstring."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

Size = tuple[int, int]
Box = tuple[int, int, int, int]

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
ENHANCERS = {
    "brightness": ImageEnhance.Brightness,
    "contrast": ImageEnhance.Contrast,
    "sharpness": ImageEnhance.Sharpness,
    "color": ImageEnhance.Color,
}


def pil_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pil_decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as out:
        out.load()
        return out.convert("RGB")


def cv2_jpeg(img: Image.Image, quality: int) -> bytes:
    """OpenCV's JPEG of the image (RGB -> BGR); ValueError when cv2 cannot encode it."""
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(np.array(img)[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    )
    if not ok:
        raise ValueError(f"cv2 could not encode a {img.size} image as JPEG")
    return buf.tobytes()


def cv2_decode(data: bytes) -> Image.Image:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def webp(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=quality)
    return buf.getvalue()


def resize(img: Image.Image, size: Size, interpolation: str, backend: str, antialias: bool = True) -> Image.Image:
    """`size` is (w, h); `antialias` applies to the torch backend only."""
    w, h = size
    if backend == "pil":
        return img.resize((w, h), RESAMPLE[interpolation])
    if backend == "cv2":
        import cv2

        flags = {
            "nearest": cv2.INTER_NEAREST,
            "bilinear": cv2.INTER_LINEAR,
            "bicubic": cv2.INTER_CUBIC,
            "lanczos": cv2.INTER_LANCZOS4,
            "area": cv2.INTER_AREA,
        }
        return Image.fromarray(cv2.resize(np.array(img), (w, h), interpolation=flags[interpolation]))
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize as tv_resize

    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    out = tv_resize(chw, [h, w], interpolation=InterpolationMode(interpolation), antialias=antialias)
    return Image.fromarray(np.ascontiguousarray(out.permute(1, 2, 0).numpy()))


def blur(img: Image.Image, sigma: float, backend: str) -> Image.Image:
    if backend == "pil":
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))
    from scipy.ndimage import gaussian_filter

    arr = np.array(img)
    for c in range(3):
        gaussian_filter(arr[:, :, c], output=arr[:, :, c], sigma=sigma)
    return Image.fromarray(arr)


def noise(img: Image.Image, std: float, seed: int) -> Image.Image:
    arr = np.array(img).astype(np.float64)
    noisy = arr + np.random.default_rng(seed).normal(0.0, std, arr.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def enhance(img: Image.Image, kind: str, factor: float) -> Image.Image:
    """`kind`: brightness, contrast, sharpness or color."""
    return ENHANCERS[kind](img).enhance(factor)


def crop(img: Image.Image, box: Box) -> Image.Image:
    return img.crop(box)


def dear_processed(img: Image.Image, size: Size, factors: dict[str, float], quality: int) -> bytes:
    """Bicubic resize, then brightness, contrast, sharpness, color (in that order), then PIL JPEG."""
    img = img.resize(size, Image.Resampling.BICUBIC)
    for kind in ("brightness", "contrast", "sharpness", "color"):
        img = ENHANCERS[kind](img).enhance(factors[kind])
    return pil_jpeg(img, quality)


def corvi_social(img: Image.Image, box: Box, size: Size, resample: str, quality: int) -> bytes:
    """Crop, resize, PIL JPEG."""
    return pil_jpeg(img.crop(box).resize(size, RESAMPLE[resample]), quality)
