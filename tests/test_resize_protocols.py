"""The resize and robustness presets named after a peer's protocol, each checked against that peer's own
calls: the test computes the peer's pixels with torchvision, PIL, scipy or cv2 exactly as the peer's code
calls them, and compares them with the preset's output. Also: the retired resize_sweep, AIGCDetectBenchmark's
evaluation preprocessing (a detector preprocess, not a preset) and the schema check of every preset."""

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf
from PIL import Image
from scipy.ndimage import gaussian_filter
from torchvision import transforms

from dear_exp.__main__ import CONF_DIR, user_message
from dear_exp.data.postprocess import Chain
from dear_exp.errors import DearError
from dear_exp.schema import validate

PRESET_DIR = Path(CONF_DIR) / "postprocess"
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
# landscape, portrait, square, an odd aspect ratio, and a short side (384) that one target already has
SIZES = [(61, 47), (47, 61), (128, 128), (97, 230), (512, 384)]


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    """Gradients plus noise: every resampling filter changes it in its own way."""
    rng = np.random.default_rng(seed + 7919 * w + h)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


def _settings(compose_cfg, preset: str) -> dict:
    return OmegaConf.to_container(compose_cfg(f"postprocess={preset}").postprocess.settings)


def _run(specs: list[dict], img: Image.Image, key: str = "fake/x.png") -> tuple[np.ndarray, tuple[int, int]]:
    chain = Chain("t", specs, 0)
    _, size = chain.plan(key, img.size)
    out = chain(img, key)
    assert out.mode == "RGB" and out.size == size
    return np.array(out), size


# --- DEAR's resize_ratio (dahyedahye/dear, pipelines/utils.py make_test_transform) ------------------------

RATIOS = (0.5, 0.75, 1.0, 1.5, 2.0)


def test_dear_resize_ratio_equals_the_reference_transform(compose_cfg):
    settings = _settings(compose_cfg, "dear_resize_ratio")
    assert list(settings) == ["clean"] + [f"resize{r}" for r in RATIOS]  # the reference's suffix _resize{r}
    for size in SIZES:
        img = _image(*size)  # FolderDataset: Image.open(path).convert('RGB'), a PIL image
        for r in RATIOS:
            reference = transforms.Resize(int(r * 512))(img)  # the reference's call, default interpolation
            out, planned = _run(settings[f"resize{r}"], img)
            assert planned == reference.size, (size, r)
            assert min(planned) == int(r * 512)
            assert np.array_equal(out, np.array(reference)), (size, r)


def test_dear_resize_ratio_is_the_pil_path_not_bicubic_nor_the_tensor_path(compose_cfg):
    """What the reference's call is not: the preset that used to carry its name (bicubic), and the same
    Resize applied to a tensor (antialiased bilinear in float, rounded differently)."""
    dear = _settings(compose_cfg, "dear_resize_ratio")
    bicubic = _settings(compose_cfg, "short_side_bicubic_sweep")
    img = _image(97, 230)
    for r in (0.5, 2.0):
        out, _ = _run(dear[f"resize{r}"], img)
        other, _ = _run(bicubic[f"short{int(r * 512)}"], img)
        assert other.shape == out.shape and not np.array_equal(other, out)
        chw = torch.from_numpy(np.array(img)).permute(2, 0, 1)
        tensor_path = transforms.Resize(int(r * 512))(chw).permute(1, 2, 0).numpy()
        assert tensor_path.shape == out.shape and not np.array_equal(tensor_path, out)


def test_dear_webp_then_resize_equals_the_reference_compose():
    """webp_quality and resize_ratio together: the reference's Compose applies the WebP first."""

    def webp_compress(image, quality):  # dear/utils.py
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=quality)
        return Image.open(buffer)

    reference = transforms.Compose([lambda x: webp_compress(x, 80), transforms.Resize(int(0.75 * 512))])
    specs = [
        {"op": "webp", "quality": 80},
        {"op": "resize", "short_side": 384, "interpolation": "bilinear", "backend": "pil", "rounding": "floor"},
    ]
    for size in SIZES[:3]:
        img = _image(*size)
        out, _ = _run(specs, img)
        assert np.array_equal(out, np.array(reference(img).convert("RGB")))


# --- AlignedForensics' resolution sweep (AniSundar18/AlignedForensics, test_code/sweepers.py) ---------------


def test_alignedforensics_resolution_equals_the_reference_transform(compose_cfg):
    settings = _settings(compose_cfg, "alignedforensics_resolution")
    assert list(settings) == ["clean", "res256", "res512", "res1024"]
    for size in SIZES:
        img = _image(*size)  # UnlabeledImageDataset: Image.open(img_path).convert("RGB")
        for res in (256, 512, 1024):
            # create_transform(resolution), before ToTensor and Normalize
            reference = transforms.Resize((res, res), interpolation=Image.BICUBIC, antialias=True)(img)
            out, planned = _run(settings[f"res{res}"], img)
            assert planned == reference.size == (res, res)
            assert np.array_equal(out, np.array(reference)), (size, res)


# --- CNNDetection's robustness test (PeterWang512/CNNDetection, data/datasets.py data_augment) ---------------


def _cnnd_data_augment(img: Image.Image, blur_sig=None, jpg_qual=None, jpg_method="cv2") -> Image.Image:
    """data_augment with --blur_prob 1 --blur_sig s and/or --jpg_prob 1 --jpg_qual q (one value each, so
    sample_continuous and sample_discrete return it)."""
    img = np.array(img)
    if blur_sig is not None:  # gaussian_blur
        gaussian_filter(img[:, :, 0], output=img[:, :, 0], sigma=blur_sig)
        gaussian_filter(img[:, :, 1], output=img[:, :, 1], sigma=blur_sig)
        gaussian_filter(img[:, :, 2], output=img[:, :, 2], sigma=blur_sig)
    if jpg_qual is not None and jpg_method == "cv2":  # cv2_jpg
        img_cv2 = img[:, :, ::-1]
        encode_param = [int(cv2.IMWRITE_JPEG_QUALITY), jpg_qual]
        result, encimg = cv2.imencode(".jpg", img_cv2, encode_param)
        decimg = cv2.imdecode(encimg, 1)
        img = decimg[:, :, ::-1]
    elif jpg_qual is not None:  # pil_jpg
        out = io.BytesIO()
        Image.fromarray(img).save(out, format="jpeg", quality=jpg_qual)
        img = np.array(Image.open(out))
    return Image.fromarray(img)


def test_cnndetection_preset_equals_data_augment(compose_cfg):
    settings = _settings(compose_cfg, "cnndetection")
    assert list(settings) == ["clean", "blur1", "blur2", "blur3", "jpeg90", "jpeg75", "jpeg50", "jpeg30"]
    for size in SIZES[:4]:
        img = _image(*size)
        for name, specs in settings.items():
            if name == "clean":
                reference = img
            elif name.startswith("blur"):
                reference = _cnnd_data_augment(img, blur_sig=float(name[4:]))
            else:  # the test flags' default --jpg_method is cv2
                reference = _cnnd_data_augment(img, jpg_qual=int(name[4:]))
            out, _ = _run(specs, img)
            assert np.array_equal(out, np.array(reference)), (size, name)
            assert name == "clean" or not np.array_equal(out, np.array(img))


def test_cnndetection_blur_then_jpeg_and_the_pil_method():
    img = _image(61, 47)
    both = [{"op": "blur", "backend": "scipy", "sigma": 2}, {"op": "jpeg", "backend": "cv2", "quality": 50}]
    out, _ = _run(both, img)
    assert np.array_equal(out, np.array(_cnnd_data_augment(img, blur_sig=2.0, jpg_qual=50)))
    out, _ = _run([{"op": "jpeg", "backend": "pil", "quality": 50}], img)
    assert np.array_equal(out, np.array(_cnnd_data_augment(img, jpg_qual=50, jpg_method="pil")))


# --- AIGCDetectBenchmark's evaluation preprocessing: a detector preprocess, after the post-processing ----------


def test_aigcdb_evaluation_preprocessing_is_the_detector_preprocess(compose_cfg):
    """read_data_new.__getitem__ applies custom_augment (the --noise_type op) first, then processing():
    custom_resize = TF.resize(img, loadSize=256, interpolation=Image.BILINEAR), CenterCrop(CropSize=224),
    ToTensor, Normalize. Here: postprocess=aigcdb, then detector.preprocess (resize_short, center_crop)."""
    from dear_exp.detectors import preprocess_of

    cfg = compose_cfg("postprocess=aigcdb", "detector=cnnspot", "detector.preprocess.resize_short=256")
    validate(cfg)
    pre = preprocess_of(cfg.detector)
    assert (pre.resize_short, pre.center_crop) == (256, 224)
    normalise = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]
    )
    for size in [(300, 260), (260, 300), (640, 480), (256, 256), (229, 700)]:
        img = _image(*size)
        for name, specs in OmegaConf.to_container(cfg.postprocess.settings).items():
            degraded = Chain(name, specs, 0)(img, "fake/x.png")
            reference = transforms.CenterCrop(224)(TF.resize(degraded, 256, interpolation=Image.BILINEAR))
            assert pre.out_size(*degraded.size) == reference.size == (224, 224)
            assert np.array_equal(pre.geometry(np.array(degraded)), np.array(reference)), (size, name)
            assert torch.equal(pre(np.array(degraded)), normalise(reference))


# --- the retired preset, and every preset through the schema -------------------------------------------------


def test_resize_sweep_is_retired_in_one_line_that_names_the_replacements(compose_cfg):
    cfg = compose_cfg("postprocess=resize_sweep")
    with pytest.raises(DearError) as err:
        validate(cfg)  # the schema check, run before any work
    message = str(err.value)
    assert message.startswith("postprocess=resize_sweep is retired: ") and "\n" not in message
    assert user_message(err.value, cfg) == message
    for name in ("dear_resize_ratio", "alignedforensics_resolution", "short_side_bicubic_sweep"):
        assert f"postprocess={name} " in message and (PRESET_DIR / f"{name}.yaml").is_file()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_schema_and_parses(compose_cfg, preset):
    cfg = compose_cfg(f"postprocess={preset}")
    if "settings" not in cfg.postprocess:  # a retired preset: it stops at the schema check
        with pytest.raises(DearError, match="is retired"):
            validate(cfg)
        return
    validate(cfg)
    settings = OmegaConf.to_container(cfg.postprocess.settings)
    assert settings.get("clean") == [], "every preset starts from the untouched images"
    for name, specs in settings.items():
        Chain(name, specs, 0).plan("fake/x.png", (640, 480))
