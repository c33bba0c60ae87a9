"""Post-processing ops against their libraries' own calls, per-image determinism, the DEAR and Corvi
chains, and every preset's numbers against the protocols in docs/benchmarks.md."""

import hashlib
import io
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter
from scipy.ndimage import gaussian_filter

from dear_exp.__main__ import CONF_DIR
from dear_exp.data.postprocess import OPS, Chain
from dear_exp.errors import DearError

ROOT = Path(__file__).resolve().parent.parent


def _image(w: int = 61, h: int = 47, seed: int = 0) -> Image.Image:
    """Smooth gradients plus texture: JPEG, blur and resampling all change it visibly."""
    if w * h > 500_000:  # large inputs: a small one upscaled, cheaply
        return _image(97, 83, seed).resize((w, h), Image.BILINEAR)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _run(specs: list[dict], img: Image.Image, key: str = "fake/x.png", seed: int = 0) -> tuple[np.ndarray, list]:
    chain = Chain("t", specs, seed)
    plans, size = chain.plan(key, img.size)
    out = chain(img, key)
    assert out.mode == "RGB" and out.size == size, (out.size, size)  # plan() predicts the size
    return np.array(out), plans


# --- each op equals its library's own call --------------------------------------------------------


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_pil_equals_pil_encode_decode(quality):
    img = _image()
    out, plans = _run([{"op": "jpeg", "quality": quality}], img)
    buf = io.BytesIO()
    img.save(buf, format="jpeg", quality=quality)
    expected = np.array(Image.open(io.BytesIO(buf.getvalue())))
    assert plans == [{"quality": quality}]
    assert np.array_equal(out, expected) and not np.array_equal(out, np.array(img))


@pytest.mark.parametrize("quality", [30, 90])
def test_jpeg_cv2_equals_cv2_encode_decode_in_rgb(quality):
    img = _image()
    out, _ = _run([{"op": "jpeg", "backend": "cv2", "quality": quality}], img)
    arr = np.array(img)
    _, enc = cv2.imencode(".jpg", arr[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), quality])  # CNNDetection cv2_jpg
    expected = cv2.imdecode(enc, 1)[:, :, ::-1]
    assert np.array_equal(out, expected) and not np.array_equal(out, arr)
    red = Image.new("RGB", (32, 32), (220, 10, 10))  # channels not swapped
    r, g, b = np.array(Chain("t", [{"op": "jpeg", "backend": "cv2", "quality": quality}], 0)(red, "k")).mean((0, 1))
    assert r > 200 and g < 40 and b < 40


def test_webp_equals_pil():
    img = _image()
    out, _ = _run([{"op": "webp", "quality": 60}], img)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=60)
    assert np.array_equal(out, np.array(Image.open(buf).convert("RGB"))) and not np.array_equal(out, np.array(img))


PIL_FILTERS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}
CV2_FLAGS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
    "area": cv2.INTER_AREA,
}


@pytest.mark.parametrize("interp", list(PIL_FILTERS))
def test_resize_pil_equals_pil(interp):
    img = _image()
    out, plans = _run([{"op": "resize", "factor": 0.5, "interpolation": interp}], img)
    assert plans[0]["size"] == (30, 24)  # round(30.5) = 30 (half to even), round(23.5) = 24
    assert np.array_equal(out, np.array(img.resize((30, 24), PIL_FILTERS[interp])))


@pytest.mark.parametrize("interp", list(CV2_FLAGS))
def test_resize_cv2_equals_cv2(interp):
    img = _image()
    out, _ = _run([{"op": "resize", "factor": 1.5, "interpolation": interp, "backend": "cv2"}], img)
    assert np.array_equal(out, cv2.resize(np.array(img), (92, 70), interpolation=CV2_FLAGS[interp]))


@pytest.mark.parametrize(
    ("interp", "antialias"), [("bilinear", True), ("bicubic", True), ("bicubic", False), ("nearest", False)]
)
def test_resize_torch_equals_torchvision(interp, antialias):
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    img = _image()
    out, _ = _run(
        [{"op": "resize", "size": [23, 17], "interpolation": interp, "backend": "torch", "antialias": antialias}], img
    )
    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    expected = resize(chw, [17, 23], interpolation=InterpolationMode(interp), antialias=antialias)
    assert np.array_equal(out, expected.permute(1, 2, 0).numpy())


def test_resize_sizes_short_side_and_rounding():
    img = _image(61, 47)
    assert _run([{"op": "resize", "short_side": 20}], img)[1][0]["size"] == (26, 20)  # 25.96 rounds up
    assert _run([{"op": "resize", "short_side": 20, "rounding": "floor"}], img)[1][0]["size"] == (25, 20)
    assert _run([{"op": "resize", "short_side": 20}], _image(47, 61))[1][0]["size"] == (20, 26)
    assert _run([{"op": "resize", "factor": 0.5, "rounding": "floor"}], img)[1][0]["size"] == (30, 23)
    from torchvision.transforms import Resize  # floor is torchvision's Resize(int) on a PIL image, exactly

    out, _ = _run([{"op": "resize", "short_side": 20, "rounding": "floor", "interpolation": "bilinear"}], img)
    assert np.array_equal(out, np.array(Resize(20)(img)))


def test_blur_scipy_equals_gaussian_filter_per_channel_and_pil_equals_gaussianblur():
    img = _image()
    for sigma in (1.0, 2.5):
        out, _ = _run([{"op": "blur", "sigma": sigma}], img)
        expected = np.array(img)
        for c in range(3):  # the AIGCDB / SIDB / UFD call, written into the uint8 array
            gaussian_filter(expected[:, :, c], output=expected[:, :, c], sigma=sigma)
        assert np.array_equal(out, expected) and not np.array_equal(out, np.array(img))
        out, _ = _run([{"op": "blur", "sigma": sigma, "backend": "pil"}], img)
        assert np.array_equal(out, np.array(img.filter(ImageFilter.GaussianBlur(radius=sigma))))
    assert np.array_equal(_run([{"op": "blur", "sigma": 0}], img)[0], np.array(img))


def test_noise_is_gaussian_in_pixel_units_clipped_and_seeded_per_image():
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    out, plans = _run([{"op": "noise", "std": 10}], grey)
    diff = out.astype(float) - 128
    assert abs(diff.std() - 10) < 0.5 and abs(diff.mean()) < 0.5
    expected = np.clip(np.rint(128 + np.random.default_rng(plans[0]["seed"]).normal(0, 10, (64, 64, 3))), 0, 255)
    assert np.array_equal(out, expected)
    white = np.array(Chain("t", [{"op": "noise", "std": 50}], 0)(Image.new("RGB", (16, 16), (255,) * 3), "k"))
    assert white.max() == 255 and white.min() < 255  # clipped, not wrapped
    assert np.array_equal(_run([{"op": "noise", "std": 0}], grey)[0], np.array(grey))
    a, b = _run([{"op": "noise", "std": 10}], grey, key="a")[0], _run([{"op": "noise", "std": 10}], grey, key="b")[0]
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("op", "enhancer"),
    [
        ("brightness", ImageEnhance.Brightness),
        ("contrast", ImageEnhance.Contrast),
        ("sharpness", ImageEnhance.Sharpness),
        ("color", ImageEnhance.Color),
    ],
)
def test_enhance_ops_equal_imageenhance(op, enhancer):
    img = _image()
    out, _ = _run([{"op": op, "factor": 1.3}], img)
    assert np.array_equal(out, np.array(enhancer(img).enhance(1.3))) and not np.array_equal(out, np.array(img))
    out, plans = _run([{"op": op, "factor": [0.8, 1.2]}], img)
    assert 0.8 <= plans[0]["factor"] <= 1.2
    assert np.array_equal(out, np.array(enhancer(img).enhance(plans[0]["factor"])))


def test_crop_center_matches_torchvision_and_random_stays_inside():
    from torchvision.transforms import CenterCrop

    img = _image(61, 47)
    out, _ = _run([{"op": "crop", "size": 32}], img)
    assert np.array_equal(out, np.array(CenterCrop(32)(img)))
    assert _run([{"op": "crop", "size": 100}], img)[0].shape == (47, 47, 3)  # clamped to the image
    for key in ("a", "b", "c", "d"):
        out, plans = _run([{"op": "crop", "size": [20, 40], "mode": "random"}], img, key=key)
        x0, y0, x1, y1 = plans[0]["box"]
        assert 20 <= x1 - x0 == y1 - y0 <= 40 and x0 >= 0 and y0 >= 0 and x1 <= 61 and y1 <= 47
        assert np.array_equal(out, np.array(img)[y0:y1, x0:x1])


def test_chains_apply_in_the_stated_order():
    img = _image()
    blur_then_jpeg, _ = _run([{"op": "blur", "sigma": 2}, {"op": "jpeg", "quality": 50}], img)
    jpeg_then_blur, _ = _run([{"op": "jpeg", "quality": 50}, {"op": "blur", "sigma": 2}], img)
    blurred = _run([{"op": "blur", "sigma": 2}], img)[0]
    assert np.array_equal(blur_then_jpeg, _run([{"op": "jpeg", "quality": 50}], Image.fromarray(blurred))[0])
    assert not np.array_equal(blur_then_jpeg, jpeg_then_blur)


def test_every_op_predicts_its_output_size():
    specs = [
        {"op": "jpeg", "quality": [40, 90]},
        {"op": "webp", "quality": 50},
        {"op": "blur", "sigma": [0, 2]},
        {"op": "noise", "std": 3},
        {"op": "brightness", "factor": 0.9},
        {"op": "contrast", "factor": 1.1},
        {"op": "sharpness", "factor": 1.5},
        {"op": "color", "factor": 0.7},
        {"op": "resize", "factor": [0.3, 1.7], "backend": "cv2", "interpolation": "area"},
        {"op": "resize", "short_side": [16, 40], "backend": "torch"},
        {"op": "crop", "size": [5, 30], "mode": "random"},
        {"op": "dear_processed"},
        {"op": "corvi_social"},
    ]
    assert {s["op"] for s in specs} == set(OPS)
    for spec in specs:
        for size in ((61, 47), (33, 90)):
            for key in ("a", "b"):
                _run([spec], _image(*size), key=key)  # asserts out.size == plan's size
    _run(specs[:11], _image(), key="whole-chain")


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"op": "sharpen"}, "unknown op 'sharpen'"),
        ({"op": "jpeg"}, "op jpeg needs quality"),
        ({"op": "jpeg", "quality": 0}, "quality must be an integer in [1, 100]"),
        ({"op": "jpeg", "quality": 101}, "quality must be an integer in [1, 100]"),
        ({"op": "jpeg", "quality": [95, 50]}, "low <= high"),
        ({"op": "jpeg", "quality": 50, "backend": "libjpeg"}, "backend must be one of pil, cv2"),
        ({"op": "jpeg", "qualty": 50}, "has no parameter 'qualty'"),
        ({"op": "webp", "quality": 0}, "quality must be an integer in [1, 100]"),
        ({"op": "blur", "sigma": -1}, "sigma must be a number >= 0"),
        ({"op": "noise", "std": -2}, "std must be a number >= 0"),
        ({"op": "resize", "factor": 0}, "factor must be a number > 0"),
        ({"op": "resize"}, "needs exactly one of factor, short_side, size"),
        ({"op": "resize", "factor": 0.5, "size": [3, 3]}, "needs exactly one of"),
        ({"op": "resize", "factor": 0.5, "interpolation": "area"}, "interpolation must be one of"),
        ({"op": "resize", "factor": 0.5, "antialias": False}, "antialias applies to backend torch only"),
        ({"op": "crop", "size": 0}, "size must be an integer >= 1"),
        ({"op": "contrast", "factor": "high"}, "factor must be a number"),
    ],
)
def test_impossible_specs_are_one_line_errors(spec, fragment):
    with pytest.raises(DearError) as err:
        Chain("bad", [spec], seed=0)
    assert fragment in str(err.value) and "\n" not in str(err.value) and "'bad'" in str(err.value)


# --- determinism -----------------------------------------------------------------------------------

MIX = [
    {"op": "crop", "size": [24, 40], "mode": "random"},
    {"op": "resize", "factor": [0.6, 1.4]},
    {"op": "blur", "sigma": [0.0, 1.5]},
    {"op": "noise", "std": [1, 5]},
    {"op": "jpeg", "quality": [30, 95], "backend": "cv2"},
]
KEYS = [f"{d}/{i:02d}.png" for d in ("real/r", "fake/a", "fake/b") for i in range(4)]


def _outputs(keys: list[str], specs: list[dict], seed: int = 3) -> dict[str, bytes]:
    chains = {
        name: Chain(name, s, seed)
        for name, s in (("mix", specs), ("dear", [{"op": "dear_processed"}]), ("corvi", [{"op": "corvi_social"}]))
    }
    out = {}
    for key in keys:
        img = _image(64, 48, seed=int(hashlib.sha256(key.encode()).hexdigest()[:6], 16))
        for name, chain in chains.items():
            out[f"{name}:{key}"] = np.array(chain(img, key)).tobytes()
    return out


def _digest(out: dict[str, bytes]) -> str:
    return hashlib.sha256(b"".join(k.encode() + out[k] for k in sorted(out))).hexdigest()


def test_same_pixels_per_key_in_any_order():
    shuffled = list(KEYS)
    random.Random(1).shuffle(shuffled)
    assert shuffled != KEYS
    assert _outputs(KEYS, MIX) == _outputs(shuffled, MIX)


def test_same_pixels_in_another_process():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.test_postprocess import _outputs, _digest, KEYS,"
        " MIX; print(_digest(_outputs(KEYS, MIX)))"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code, str(ROOT)], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert outs[0] == outs[1] == _digest(_outputs(KEYS, MIX))


def test_another_global_seed_draws_other_parameters():
    for spec in MIX + [
        {"op": "dear_processed"},
        {"op": "corvi_social"},
        {"op": "webp", "quality": [10, 90]},
        {"op": "brightness", "factor": [0.5, 1.5]},
        {"op": "resize", "short_side": [10, 40]},
    ]:
        a = [Chain("s", [spec], 0).plan(k, (300, 200))[0] for k in KEYS]
        b = [Chain("s", [spec], 1).plan(k, (300, 200))[0] for k in KEYS]
        assert a != b, spec
        assert a == [Chain("s", [spec], 0).plan(k, (300, 200))[0] for k in KEYS]


# --- DEAR's test_processed -------------------------------------------------------------------------


class _Replay:
    """Stands in for Python's `random` in the reference script, answering with our drawn values and
    checking the reference asks for them in the same order, with the same bounds."""

    def __init__(self, p: dict, w: int, h: int) -> None:
        self.p, self.w, self.h, self.calls = p, w, h, []

    def randint(self, a, b):
        assert (a, b) == (50, 95)
        self.calls.append("randint")
        return self.p["quality"]

    def choice(self, seq):
        assert list(seq) == [True, False]
        self.calls.append("choice")
        return self.p["upscale"]

    def uniform(self, a, b):
        self.calls.append("uniform")
        if self.calls.count("uniform") == 1:
            w, h = self.w, self.h
            assert (a, b) == ((1.0, min(1024 / w, 1024 / h)) if self.p["upscale"] else (max(256 / w, 256 / h), 1.0))
            assert min(a, b) <= self.p["factor"] <= max(a, b)
            return self.p["factor"]
        assert (a, b) == (0.8, 1.2)
        return self.p[("brightness", "contrast", "sharpness", "color")[self.calls.count("uniform") - 2]]


def _reference_process_test_data(image, random):
    """DEAR's scripts/processed_data_gen/process_test_data.py, apply_random_transformations + save."""
    quality = random.randint(50, 95)
    original_width, original_height = image.size
    if random.choice([True, False]):
        scale_factor = random.uniform(1.0, min(1024 / original_width, 1024 / original_height))
    else:
        scale_factor = random.uniform(max(256 / original_width, 256 / original_height), 1.0)
    new_width = max(256, min(1024, int(original_width * scale_factor)))
    new_height = max(256, min(1024, int(original_height * scale_factor)))
    image = image.resize((new_width, new_height))
    image = ImageEnhance.Brightness(image).enhance(random.uniform(0.8, 1.2))
    image = ImageEnhance.Contrast(image).enhance(random.uniform(0.8, 1.2))
    image = ImageEnhance.Sharpness(image).enhance(random.uniform(0.8, 1.2))
    image = ImageEnhance.Color(image).enhance(random.uniform(0.8, 1.2))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(120, 90), (300, 200), (200, 1300), (1500, 1100), (2400, 180)])
def test_dear_processed_draws_in_protocol_ranges_and_matches_the_reference(size):
    w, h = size
    chain = Chain("processed", [{"op": "dear_processed"}], seed=0)
    coins = set()
    for i in range(40):
        (p,), out_size = chain.plan(f"fake/flux/{i}.png", size)
        coins.add(p["upscale"])
        assert 50 <= p["quality"] <= 95 and isinstance(p["quality"], int)
        lo, hi = (1.0, min(1024 / w, 1024 / h)) if p["upscale"] else (max(256 / w, 256 / h), 1.0)
        assert min(lo, hi) <= p["factor"] <= max(lo, hi)
        assert (
            out_size
            == p["size"]
            == (max(256, min(1024, int(w * p["factor"]))), max(256, min(1024, int(h * p["factor"]))))
        )
        assert all(256 <= s <= 1024 for s in out_size)
        assert all(0.8 <= p[k] <= 1.2 for k in ("brightness", "contrast", "sharpness", "color"))
    assert coins == {True, False}  # both branches of the coin are taken
    img = _image(w, h)
    for i in range(2):  # bytes equal the reference script's, fed the same draws
        key = f"fake/flux/{i}.png"
        (p,), _ = chain.plan(key, size)
        replay = _Replay(p, w, h)
        out, data = chain.process(img, key)
        assert data == _reference_process_test_data(img, replay)
        assert replay.calls == ["randint", "choice"] + ["uniform"] * 5
        saved = Image.open(io.BytesIO(data))  # a JPEG at the drawn quality: the same quantisation tables
        assert saved.format == "JPEG" and saved.size == p["size"] and np.array_equal(np.array(out), np.array(saved))
        probe = io.BytesIO()
        Image.new("RGB", (8, 8)).save(probe, format="JPEG", quality=p["quality"])
        assert saved.quantization == Image.open(probe).quantization


# --- Corvi's social-network chain ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1024, 768), (3000, 2500), (180, 170), (120, 150)])
def test_corvi_social_follows_grip_random_operations(size):
    w, h = size
    chain = Chain("social", [{"op": "corvi_social"}], seed=0)
    m = min(w, h, 2048)
    low = min(max(m * 5 // 8, 160), m)
    for i in range(30):
        (p,), out_size = chain.plan(f"img{i}.png", size)
        x0, y0, x1, y1 = p["box"]
        assert low <= p["crop"] <= m and x1 - x0 == y1 - y0 == p["crop"]
        assert 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h
        assert 65 <= p["quality"] <= 100 and out_size == (200, 200)
        assert p["resample"] == ("lanczos" if p["crop"] > 200 else "bicubic")
    img = _image(w, h)
    (p,), _ = chain.plan("img0.png", size)
    _, data = chain.process(img, "img0.png")
    ref = img.crop(p["box"]).resize((200, 200), Image.LANCZOS if p["crop"] > 200 else Image.BICUBIC)
    buf = io.BytesIO()
    ref.save(buf, "JPEG", quality=p["quality"])
    assert data == buf.getvalue()


# --- presets against the protocols (docs/benchmarks.md "Robustness protocols") ----------------------


def _settings(compose_cfg, preset: str) -> dict:
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(compose_cfg(f"postprocess={preset}").postprocess.settings)
    for name, specs in settings.items():
        Chain(name, specs, 0).plan("k", (512, 384))  # every preset parses and plans
    return settings


def _jpeg(q: int) -> list[dict]:
    return [{"op": "jpeg", "backend": "pil", "quality": q}]


def _blur(s: float) -> list[dict]:
    return [{"op": "blur", "backend": "scipy", "sigma": s}]


def test_aigcdb_preset(compose_cfg):
    # JPEG PIL --jpg_qual 95; blur gaussian_filter --blur_sig 1.0; Resize((H/2, W/2)) bilinear
    assert _settings(compose_cfg, "aigcdb") == {
        "clean": [],
        "jpeg95": _jpeg(95),
        "blur1.0": _blur(1.0),
        "resize0.5": [
            {"op": "resize", "factor": 0.5, "interpolation": "bilinear", "backend": "pil", "rounding": "floor"}
        ],
    }


def test_sidbench_preset_with_blur_before_jpeg(compose_cfg):
    s = _settings(compose_cfg, "sidbench")
    assert s == {
        "clean": [],
        **{f"jpeg{q}": _jpeg(q) for q in (95, 90, 50, 30)},
        **{f"blur{g}": _blur(g) for g in (2, 4)},
        "blur2_jpeg50": _blur(2) + _jpeg(50),
    }
    assert [op["op"] for op in s["blur2_jpeg50"]] == ["blur", "jpeg"]


def test_ufd_preset(compose_cfg):
    assert _settings(compose_cfg, "ufd") == {
        "clean": [],
        **{f"jpeg{q}": _jpeg(q) for q in range(100, 29, -10)},
        **{f"blur{g}": _blur(g) for g in range(5)},
    }


def test_genimage_preset(compose_cfg):
    s = _settings(compose_cfg, "genimage")
    assert s == {
        "clean": [],
        "lowres112": [{"op": "resize", "size": [112, 112], "interpolation": "bilinear", "backend": "pil"}],
        "lowres64": [{"op": "resize", "size": [64, 64], "interpolation": "bilinear", "backend": "pil"}],
        "jpeg65": _jpeg(65),
        "jpeg30": _jpeg(30),
        "blur3": _blur(3),
        "blur5": _blur(5),
    }


def test_corvi_social_preset(compose_cfg):
    assert _settings(compose_cfg, "corvi_social") == {
        "clean": [],
        "social": [
            {"op": "corvi_social", "crop": [160, 2048], "crop_ratio": [5, 8], "size": 200, "quality": [65, 100]}
        ],
    }


def test_dear_processed_preset(compose_cfg):
    assert _settings(compose_cfg, "dear_processed") == {
        "clean": [],
        "processed": [{"op": "dear_processed", "quality": [50, 95], "side": [256, 1024], "enhance": [0.8, 1.2]}],
    }


def test_sweep_presets(compose_cfg):
    assert _settings(compose_cfg, "jpeg_sweep") == {"clean": [], **{f"jpeg{q}": _jpeg(q) for q in range(100, 29, -10)}}
    assert _settings(compose_cfg, "webp_sweep") == {
        "clean": [],
        **{f"webp{q}": [{"op": "webp", "quality": q}] for q in range(100, 29, -10)},
    }
    assert _settings(compose_cfg, "short_side_bicubic_sweep") == {
        "clean": [],
        **{
            f"short{int(r * 512)}": [
                {
                    "op": "resize",
                    "short_side": int(r * 512),
                    "interpolation": "bicubic",
                    "backend": "pil",
                    "rounding": "floor",
                }
            ]
            for r in (0.5, 0.75, 1.0, 1.5, 2.0)
        },
    }


def test_existing_presets_still_parse(compose_cfg):
    assert _settings(compose_cfg, "clean") == {"clean": []}
    assert _settings(compose_cfg, "clean_jpeg")["jpeg75"] == [{"op": "jpeg", "quality": 75}]
    assert set(_settings(compose_cfg, "robust")) == {"clean", "jpeg75", "webp75", "resize0.5", "jpeg50-95"}
    presets = sorted(p.stem for p in (Path(CONF_DIR) / "postprocess").glob("*.yaml"))
    assert presets == sorted(
        [
            "aigcdb",
            "alignedforensics_resolution",
            "clean",
            "clean_jpeg",
            "cnndetection",
            "corvi_social",
            "dear_processed",
            "dear_resize_ratio",
            "genimage",
            "jpeg_sweep",
            "resize_sweep",  # retired: a stub that names the replacements (tests/test_resize_protocols.py)
            "robust",
            "short_side_bicubic_sweep",
            "sidbench",
            "ufd",
            "webp_sweep",
        ]
    )
