"""task=make_inpaint: masks, compositing, loading, errors, resume, determinism and DDP sharding,
on a tiny random SD inpainting pipeline built offline and loaded back through the real loader."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from dear_exp.__main__ import run_task
from dear_exp.data.folders import InpaintPair, inpaint_pairs
from dear_exp.data.seeding import item_seed
from dear_exp.errors import DearError, one_line
from dear_exp.inpaint.composite import composite, prepare
from dear_exp.inpaint.masks import Rect, blur, rect_mask, sample_rect
from dear_exp.inpaint.settings import InpaintSettings
from dear_exp.tasks.make_inpaint import SUMMARY_FILE, capped_devices
from tests.helpers import run_cli
from tests.inpaint_fixtures import build_tiny_sd_inpaint, make_real_dir, photo

pytestmark = pytest.mark.xdist_group("inpaint")  # one worker builds the tiny pipeline once
SIZES = [(96, 64), (80, 80), (120, 90), (64, 100)]
FAST = ("inpaint.resolution=64", "inpaint.steps=2", "logger=none")
IMAGE_DIR, MASK_DIR = "lsun_inpaint_sd", "lsun_inpaint_mask"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd_inpaint(tmp_path_factory.mktemp("tiny_sd_inpaint"))


def _compose(compose_cfg, real: Path, out: Path, model: Path, *extra: str):
    return compose_cfg(
        "task=make_inpaint",
        f"inpaint.real_dir={real}",
        f"inpaint.out_dir={out}",
        f"inpaint.model={model}",
        *FAST,
        *extra,
    )


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / SUMMARY_FILE).read_text())


# ---------------------------------------------------------------- masks and compositing, no model


def test_rect_masks_cover_2_to_20_percent_with_aspect_half_to_two():
    for width, height in [(512, 512), (1024, 768), (64, 100), (37, 29), (4000, 300)]:
        for i in range(200):
            seed = item_seed(0, f"img{i}")
            r = sample_rect(seed, width, height)
            assert r == sample_rect(seed, width, height)  # deterministic per seed
            assert 0.02 <= r.area_fraction(width, height) <= 0.2
            assert 0.5 <= r.width / r.height <= 2.0
            assert 0 <= r.left and r.left + r.width <= width and 0 <= r.top and r.top + r.height <= height
    rects = {sample_rect(item_seed(0, f"img{i}"), 512, 512) for i in range(50)}
    assert len(rects) == 50
    assert sample_rect(item_seed(0, "a"), 512, 512) != sample_rect(item_seed(1, "a"), 512, 512)
    with pytest.raises(ValueError, match="too small"):
        sample_rect(1, 2, 2)
    mask = np.asarray(rect_mask(10, 8, Rect(2, 1, 3, 4)))
    assert mask.shape == (8, 10) and set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 12


def test_blur_is_the_pipelines_mask_blur():
    from diffusers.image_processor import VaeImageProcessor

    mask = rect_mask(128, 96, Rect(30, 20, 40, 30))
    for factor in (0, 4, 33):
        assert np.array_equal(np.asarray(blur(mask, factor)), np.asarray(VaeImageProcessor.blur(mask, factor)))


def test_composite_original_keeps_pixels_the_alpha_does_not_touch():
    image = photo(300, 200, 0)
    settings = InpaintSettings(model="unused", resolution=64, blur_factor=4)
    p = prepare(image, "x", 7, settings)
    generated = Image.new("RGB", (64, 64), (255, 0, 255))
    out_ref, alpha = composite(p, generated, "reference")
    out_orig, alpha2 = composite(p, generated, "original")
    assert out_ref.size == out_orig.size == alpha.size == image.size and alpha.mode == "L"
    assert np.array_equal(np.asarray(alpha), np.asarray(alpha2))
    a = np.asarray(alpha)
    far = a == 0
    assert far.mean() > 0.3 and a.max() > 128
    orig = np.asarray(image)
    assert np.array_equal(np.asarray(out_orig)[far], orig[far])  # bit-identical where nothing was composited
    assert not np.array_equal(np.asarray(out_ref)[far], orig[far])  # the reference resamples every pixel
    inside = np.asarray(p.mask) == 255
    assert np.abs(np.asarray(out_orig, dtype=int)[inside] - [255, 0, 255]).mean() < 60


def test_settings_are_validated():
    with pytest.raises(DearError, match="inpaint.composite=blend"):
        InpaintSettings(model="m", composite="blend")  # type: ignore[arg-type]
    with pytest.raises(DearError, match="multiple of 8"):
        InpaintSettings(model="m", resolution=500)
    with pytest.raises(DearError, match="inpaint.dtype.cuda=half"):
        InpaintSettings(model="m", dtype={"cuda": "half"})


def test_every_inpaint_option_composes_under_make_inpaint(compose_cfg):
    assert "inpaint" not in compose_cfg()  # other tasks do not carry it
    expected = {
        "sd15": (512, "stable-diffusion-v1-5/stable-diffusion-inpainting", "float16"),
        "sdxl": (1024, "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "float16"),
        "flux_fill": (1024, "black-forest-labs/FLUX.1-Fill-dev", "bfloat16"),
    }
    for option, (resolution, model, gpu_dtype) in expected.items():
        cfg = compose_cfg("task=make_inpaint", f"inpaint={option}")
        s = InpaintSettings.from_cfg(cfg.inpaint)
        got = (s.resolution, s.model, s.dtype_for("cuda"), s.dtype_for("cpu"))
        assert got == (resolution, model, gpu_dtype, "float32")
        assert s.blur_factor == 33 and s.composite == "reference" and not s.save_alpha
    cfg = compose_cfg("task=make_inpaint")
    assert cfg.inpaint.name == "sd15" and cfg.inpaint.guidance_scale == 1.0
    assert cfg.inpaint.out_dir.endswith("data/train/fake") and cfg.inpaint.image_dir == IMAGE_DIR


def test_devices_are_capped_at_the_number_of_images():
    def cap(n, **trainer):
        return capped_devices(OmegaConf.create(trainer), n)

    assert cap(3, accelerator="gpu", devices=8) == 3
    assert cap(8, accelerator="gpu", devices=8) is None
    assert cap(1, accelerator="cpu", devices=2) == 1
    assert cap(2, accelerator="gpu", devices=[0, 1, 2, 3]) == [0, 1]
    assert cap(5, accelerator="cpu", devices="auto") is None
    with pytest.raises(DearError, match="ranks"):
        cap(3, accelerator="gpu", devices=4, num_nodes=2)


# ---------------------------------------------------------------- errors: one line, before any work


def test_input_errors_are_one_line(compose_cfg, tmp_path, tiny_pipeline):
    real = tmp_path / "real"

    def error(cfg) -> str:
        with pytest.raises(DearError) as err:
            run_task(cfg)
        assert "\n" not in str(err.value)
        return one_line(err.value)

    cfg = _compose(compose_cfg, real, tmp_path / "set", tiny_pipeline)
    assert "inpaint.real_dir" in error(cfg) and "not found" in error(cfg)
    real.mkdir()
    assert "no images in" in error(cfg)
    for sub, ext in (("a", "png"), ("b", "jpg")):
        (real / sub).mkdir()
        photo(32, 32, 0).save(real / sub / f"same.{ext}")
    assert "(same: a/same.png, b/same.jpg); rename them" in error(cfg)
    inside = _compose(compose_cfg, tmp_path, tmp_path / "set", tiny_pipeline)
    assert "lies inside inpaint.real_dir" in error(inside)
    spawn = _compose(compose_cfg, real, tmp_path / "set", tiny_pipeline, "+trainer.strategy=ddp_spawn")
    assert "trainer.strategy=ddp_spawn is not supported" in error(spawn)
    (real / "b" / "same.jpg").unlink()
    assert "no such folder" in error(_compose(compose_cfg, real, tmp_path / "set", tmp_path / "no_model"))
    assert not (tmp_path / "set").exists()  # nothing written before the inputs and the model are known good


def test_model_errors_are_one_line_and_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from dear_exp.inpaint.pipeline import resolve_model

    def error(model: str, **kw) -> str:
        with pytest.raises(DearError) as err:
            resolve_model(InpaintSettings(model=model, **kw))
        return one_line(err.value)

    assert "no such folder" in error(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "not a diffusers pipeline folder (no model_index.json)" in error(str(tmp_path / "empty"))
    (tmp_path / "txt2img").mkdir()
    (tmp_path / "txt2img" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert "is a StableDiffusionPipeline, not an inpainting pipeline" in error(str(tmp_path / "txt2img"))

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    line = error("dear-exp-tests/not-cached-inpainting")
    assert time.perf_counter() - start < 2.0, "must fail at once, not after the Hub client's retries"
    assert "not in the Hugging Face cache" in line and "HF_HUB_OFFLINE is set" in line and "inpaint.model=" in line
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert "inpaint.local_files_only=true" in error("dear-exp-tests/not-cached-inpainting", local_files_only=True)


def test_loader_picks_the_class_and_turns_off_checker_and_watermark(tmp_path, monkeypatch):
    import diffusers
    import torch

    from dear_exp.inpaint.pipeline import load_pipeline

    calls = []

    class Fake:
        vae_scale_factor = 8

        def set_progress_bar_config(self, **kw):
            pass

        def to(self, device):
            return self

    def record(name):
        return classmethod(lambda cls, path, **kw: calls.append((name, path, kw)) or Fake())

    monkeypatch.setattr(diffusers.FluxFillPipeline, "from_pretrained", record("flux"))
    monkeypatch.setattr(diffusers.AutoPipelineForInpainting, "from_pretrained", record("auto"))
    for cls in ("FluxFillPipeline", "StableDiffusionXLInpaintPipeline", "StableDiffusionInpaintPipeline"):
        folder = tmp_path / cls
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": cls}))
        load_pipeline(InpaintSettings(model=str(folder), resolution=1024), torch.device("cpu"))
    (flux, flux_path, flux_kw), (xl, _, xl_kw), (sd, _, sd_kw) = calls
    assert flux == "flux" and flux_kw == {"dtype": torch.float32, "local_files_only": True}
    assert xl == "auto" and xl_kw["add_watermarker"] is False and "safety_checker" not in xl_kw
    assert sd == "auto" and sd_kw["safety_checker"] is None and sd_kw["requires_safety_checker"] is False
    with pytest.raises(DearError, match="multiple of 16 for FluxFillPipeline"):
        load_pipeline(InpaintSettings(model=flux_path, resolution=1000), torch.device("cpu"))


# ---------------------------------------------------------------- generation with the tiny pipeline


def test_generate_resume_and_rerun_byte_identical(compose_cfg, tmp_path, tiny_pipeline):
    real, out = tmp_path / "real", tmp_path / "set"
    stems = make_real_dir(real, SIZES, corrupt=True)
    cfg = _compose(compose_cfg, real, out, tiny_pipeline)
    metrics = run_task(cfg)
    assert (metrics["written"], metrics["skipped"], metrics["failed"], metrics["images"]) == (4, 0, 1, 5)
    summary = _summary(cfg)
    assert summary["failures"][0]["stem"] == "broken" and "corrupt or unreadable" in summary["failures"][0]["reason"]
    for stem, (w, h) in zip(stems, SIZES):
        with Image.open(out / IMAGE_DIR / f"{stem}_inpaint.png") as inpaint:
            assert inpaint.size == (w, h) and inpaint.mode == "RGB"
        mask = np.asarray(Image.open(out / MASK_DIR / f"{stem}_mask.png"))
        assert mask.shape == (h, w)
        expected = rect_mask(w, h, sample_rect(item_seed(0, stem), w, h))  # seeded per image from its stem
        assert np.array_equal(mask, np.asarray(expected)) and 0.02 <= (mask == 255).mean() <= 0.2
    assert not list(out.rglob("*_alpha.png")) and not list(out.rglob(".*"))
    assert json.loads((out / IMAGE_DIR / "make_inpaint.json").read_text())["seed"] == 0  # the set's settings
    assert len(inpaint_pairs(out, IMAGE_DIR, MASK_DIR, "")) == 4  # what the diagnostic DataModule reads
    first = _files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}

    # a rerun skips finished pairs and touches nothing
    metrics = run_task(_compose(compose_cfg, real, out, tiny_pipeline))
    assert (metrics["written"], metrics["skipped"], metrics["failed"]) == (0, 4, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes

    # an interrupted pair (mask written, inpaint not) and a killed writer's temporary are redone / removed
    (out / IMAGE_DIR / f"{stems[2]}_inpaint.png").unlink()
    stale = out / IMAGE_DIR / f".{stems[2]}_inpaint.png.12345.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    metrics = run_task(_compose(compose_cfg, real, out, tiny_pipeline))
    assert (metrics["written"], metrics["skipped"]) == (1, 3)
    assert _files(out) == first

    # other settings into the same folder would mix two sets: refused
    with pytest.raises(DearError, match=r"holds a set made with other settings \(seed: 0 -> 1\)"):
        run_task(_compose(compose_cfg, real, out, tiny_pipeline, "inpaint.seed=1"))

    # from scratch: byte-identical
    for p in out.rglob("*.png"):
        p.unlink()
    run_task(_compose(compose_cfg, real, out, tiny_pipeline))
    assert _files(out) == first


def test_default_512_path_composited_onto_original_pixels_with_alpha(compose_cfg, tmp_path, tiny_pipeline):
    real, out = tmp_path / "real", tmp_path / "set"
    real.mkdir()
    image = photo(200, 150, 3)
    image.save(real / "room.png")
    cfg = compose_cfg(
        "task=make_inpaint",
        f"inpaint.real_dir={real}",
        f"inpaint.out_dir={out}",
        f"inpaint.model={tiny_pipeline}",
        "inpaint.steps=2",
        "logger=none",
        "inpaint.composite=original",
        "inpaint.save_alpha=true",
    )
    assert cfg.inpaint.resolution == 512
    assert run_task(cfg)["written"] == 1
    result = np.asarray(Image.open(out / IMAGE_DIR / "room_inpaint.png"))
    alpha = np.asarray(Image.open(out / MASK_DIR / "room_alpha.png"))
    mask = np.asarray(Image.open(out / MASK_DIR / "room_mask.png"))
    assert result.shape == (150, 200, 3) and alpha.shape == mask.shape == (150, 200)
    far = alpha == 0
    assert far.any() and np.array_equal(result[far], np.asarray(image)[far])
    assert alpha[mask == 255].mean() > alpha[mask == 0].mean()
    assert [p.image.name for p in inpaint_pairs(out, IMAGE_DIR, MASK_DIR, "")] == ["room_inpaint.png"]


def test_cached_hub_id_loads_offline(compose_cfg, tmp_path, tiny_pipeline, monkeypatch):
    """A hub id in the Hugging Face cache loads with HF_HUB_OFFLINE=1, without touching the network."""
    import shutil

    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf_cache" / "models--dear-exp-tests--tiny-inpaint"
    shutil.copytree(tiny_pipeline, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = tmp_path / "real"
    make_real_dir(real, SIZES[:1])
    cfg = _compose(compose_cfg, real, tmp_path / "set", "dear-exp-tests/tiny-inpaint")
    assert run_task(cfg)["written"] == 1
    assert _summary(cfg)["model"] == "dear-exp-tests/tiny-inpaint"


@pytest.mark.skipif(
    "alpha" not in InpaintPair.__dataclass_fields__,
    reason="needs {stem}_alpha.png reading in data/ and soft RAD weights (proposed with issue 5)",
)
def test_diagnostic_data_weights_rad_by_the_saved_alpha(compose_cfg, tmp_path, tiny_pipeline):
    import torch

    from dear_exp.data.datamodules import DiagnosticDataModule
    from dear_exp.data.images import Preprocess
    from dear_exp.dissect import dissect, rad_per_image

    real, out = tmp_path / "real", tmp_path / "set"
    make_real_dir(real, SIZES)
    cfg = compose_cfg(
        "task=make_inpaint",
        f"inpaint.real_dir={real}",
        f"inpaint.out_dir={out}",
        f"inpaint.model={tiny_pipeline}",
        *FAST,
        "inpaint.save_alpha=true",
        "inpaint.blur_factor=4",
    )
    run_task(cfg)
    pairs = inpaint_pairs(out, IMAGE_DIR, MASK_DIR, "")
    assert len(pairs) == 4 and all(p.alpha is not None and p.alpha.name.endswith("_alpha.png") for p in pairs)
    pre = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    kw = dict(
        root=str(out),
        image_dir=IMAGE_DIR,
        mask_dir=MASK_DIR,
        augment={"name": "none", "crop": 1},
        preprocess=pre,
        batch_size=1,
        num_workers=0,
    )
    soft = DiagnosticDataModule(**kw, rad_weight="alpha")
    soft.setup("fit")
    _, weight, target = soft.dataset[0]
    alpha = np.asarray(Image.open(pairs[0].alpha)) / 255.0
    assert target == 1 and np.allclose(weight.numpy(), alpha, atol=1e-6) and 0 < weight.max() < 1 + 1e-6

    class Identity(torch.nn.Module):  # channel k = colour k: RAD is the mean colour inside minus outside
        def forward_features(self, x):
            return x

    scores, stats = dissect(Identity(), soft.dissect_dataloader(), 10, torch.device("cpu"), soft=True)
    assert stats["images"] == 4 and scores.shape == (3,)
    x, w, _ = soft.dataset[0]
    assert torch.allclose(
        rad_per_image(x[None], w[None], soft=True),
        rad_per_image(x[None], torch.from_numpy(alpha).float()[None], soft=True),
    )
    assert not torch.allclose(rad_per_image(x[None], w[None], soft=True), rad_per_image(x[None], w[None]))
    next(out.rglob("*_alpha.png")).unlink()
    missing = DiagnosticDataModule(**kw, rad_weight="alpha")
    with pytest.raises(DearError, match="no {stem}_alpha.png"):
        missing.setup("fit")


@pytest.mark.slow
def test_cli_ddp_two_processes_write_each_file_exactly_once(compose_cfg, tmp_path, tiny_pipeline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local pipeline folder needs no network
    real = tmp_path / "real"
    stems = make_real_dir(real, SIZES + [(72, 72)])
    proc = run_cli(
        "task=make_inpaint",
        f"inpaint.real_dir={real}",
        f"inpaint.out_dir={tmp_path / 'ddp'}",
        f"inpaint.model={tiny_pipeline}",
        *FAST,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "make_inpaint: 5 written, 0 skipped (already done), 0 failed" in proc.stdout
    [summary_file] = (tmp_path / "logs" / "make_inpaint" / "runs").glob(f"*/{SUMMARY_FILE}")
    ranks = json.loads(summary_file.read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    shards = [set(r["written"]) for r in ranks]
    assert shards[0] and shards[1] and not shards[0] & shards[1] and shards[0] | shards[1] == set(stems)
    ddp = _files(tmp_path / "ddp")
    assert len(ddp) == 11 and not any(name.split("/")[-1].startswith(".") for name in ddp)
    # the same set as one process writes
    run_task(_compose(compose_cfg, real, tmp_path / "single", tiny_pipeline))
    assert _files(tmp_path / "single") == ddp
