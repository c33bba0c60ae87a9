"""Tests for the embedded miniature demo data set (tiny scale only, to stay fast)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dear_exp.demo import GENERATORS, SCALES, ensure_demo_data, generators, photos, writer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_data(tmp_path_factory.mktemp("demo_a"), scale="tiny", seed=0)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_scales_and_generators() -> None:
    assert set(SCALES) == {"demo", "bench", "tiny"}
    assert SCALES["bench"]["test_sizes"] == (224, 256)  # make bench: benchmark-like test sizes
    assert GENERATORS == ("gen_a", "gen_b", "gen_c")
    demo_cfg = SCALES["demo"]
    assert (demo_cfg["train_real"], demo_cfg["train_fake"], demo_cfg["inpaint"]) == (600, 600, 300)
    assert (demo_cfg["test_real"], demo_cfg["test_fake_per_generator"]) == (150, 150)


def test_layout_counts_and_formats(tiny: Path) -> None:
    cfg = SCALES["tiny"]
    assert tiny.name == "tiny-seed0"
    manifest = json.loads((tiny / "manifest.json").read_text())
    assert manifest["scale"] == "tiny" and manifest["seed"] == 0 and isinstance(manifest["version"], int)
    assert set(manifest["generators"]) >= set(GENERATORS)

    expected = {
        "train/real/photos": cfg["train_real"],
        "train/fake/gen_a": cfg["train_fake"],
        "val/real/photos": cfg["val_real"],
        "val/fake/gen_a": cfg["val_fake"],
        "inpaint": cfg["inpaint"],
        "test/real/photos": cfg["test_real"],
        **{f"test/fake/{g}": cfg["test_fake_per_generator"] for g in GENERATORS},
    }
    assert manifest["counts"] == expected

    # Only the expected folders exist (gen_b / gen_c are unseen in training).
    assert sorted(p.name for p in (tiny / "train" / "fake").iterdir()) == ["gen_a"]
    assert sorted(p.name for p in (tiny / "val" / "fake").iterdir()) == ["gen_a"]
    assert sorted(p.name for p in (tiny / "test" / "fake").iterdir()) == list(GENERATORS)

    for folder, n in expected.items():
        files = sorted((tiny / folder).iterdir())
        if folder == "inpaint":
            assert len(files) == 2 * n
            continue
        assert len(files) == n, folder
        split = folder.split("/")[0]
        is_real = "/real/" in folder
        for p in files:
            with Image.open(p) as im:
                assert im.format == ("JPEG" if is_real else "PNG"), p
                assert p.suffix == (".jpg" if is_real else ".png"), p
                assert im.mode == "RGB"
                if split != "test":
                    assert im.size == (cfg["size"], cfg["size"])
        cls = "real" if is_real else folder.split("/")[-1]
        assert files[0].name == f"{split}_{cls}_0000{files[0].suffix}"

    for folder in ["test/real/photos", *[f"test/fake/{g}" for g in GENERATORS]]:
        sizes = set()
        for p in (tiny / folder).iterdir():
            with Image.open(p) as im:
                sizes.add(im.size)
        assert sizes == {(s, s) for s in cfg["test_sizes"]}, folder


def test_inpaint_pairs_and_masks(tiny: Path) -> None:
    images = sorted((tiny / "inpaint").glob("*_inpaint.png"))
    assert len(images) == SCALES["tiny"]["inpaint"]
    assert images[0].name == "inpaint_0000_inpaint.png"
    fractions = []
    for p in images:
        mask_path = p.with_name(p.name.replace("_inpaint.png", "_mask.png"))
        assert mask_path.exists(), mask_path
        with Image.open(p) as im, Image.open(mask_path) as mk:
            assert im.format == "PNG" and mk.format == "PNG"
            assert mk.mode == "L"
            assert im.size == mk.size
            m = np.asarray(mk)
        assert set(np.unique(m).tolist()) <= {0, 255}
        frac = float((m == 255).mean())
        assert 0.02 <= frac <= 0.20, (p, frac)
        fractions.append(frac)
    area = json.loads((tiny / "manifest.json").read_text())["inpaint_mask_area"]
    assert area["min"] == pytest.approx(min(fractions)) and area["max"] == pytest.approx(max(fractions))


def test_inpainted_region_differs_only_near_mask(tiny: Path) -> None:
    # Far from the mask the image is the (JPEG-decoded) real photo; inside it was regenerated.
    p = tiny / "inpaint" / "inpaint_0000_inpaint.png"
    rng = photos.item_rng(0, "inpaint", "inpaint", 0)
    crop = photos.sample_crop(rng, "train", SCALES["tiny"]["size"])
    orig = writer.jpeg_roundtrip(crop, writer.jpeg_quality(rng)).astype(int)
    img = np.asarray(Image.open(p)).astype(int)
    mask = np.asarray(Image.open(p.with_name("inpaint_0000_mask.png"))) == 255
    ys, xs = np.nonzero(mask)
    far = np.ones_like(mask)
    far[max(ys.min() - 8, 0) : ys.max() + 9, max(xs.min() - 8, 0) : xs.max() + 9] = False
    assert np.abs(img - orig)[far].max() <= 1
    assert np.abs(img - orig)[mask].mean() > 0.5


def test_deterministic_across_roots(tiny: Path, tmp_path: Path) -> None:
    other = ensure_demo_data(tmp_path / "elsewhere", scale="tiny", seed=0)
    assert other != tiny
    a, b = _digests(tiny), _digests(other)
    assert list(a) == list(b)
    assert a == b


def test_concurrent_builders_agree(tiny: Path, tmp_path: Path) -> None:
    # Several Hydra multirun jobs may ask for the same folder at once.
    code = "import sys; from dear_exp.demo import ensure_demo_data; print(ensure_demo_data(sys.argv[1], 'tiny', 0))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-c", code, str(tmp_path)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert {out.strip() for out, _ in results} == {str(tmp_path / "tiny-seed0")}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["tiny-seed0"]
    assert _digests(tmp_path / "tiny-seed0") == _digests(tiny)


def test_seed_changes_content(tiny: Path, tmp_path: Path) -> None:
    other = ensure_demo_data(tmp_path, scale="tiny", seed=1)
    assert other.name == "tiny-seed1"
    a, b = _digests(tiny), _digests(other)
    assert a.keys() == b.keys()
    assert a["train/real/photos/train_real_0000.jpg"] != b["train/real/photos/train_real_0000.jpg"]


def test_second_call_does_not_rebuild(tmp_path: Path) -> None:
    first = ensure_demo_data(tmp_path, scale="tiny", seed=3)
    manifest = first / "manifest.json"
    before = manifest.stat().st_mtime_ns
    some_file = next((first / "train" / "real" / "photos").iterdir())
    file_before = some_file.stat().st_mtime_ns
    again = ensure_demo_data(str(tmp_path), scale="tiny", seed=3)
    assert again == first
    assert manifest.stat().st_mtime_ns == before
    assert some_file.stat().st_mtime_ns == file_before
    # No temporary build folders are left behind.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["tiny-seed3"]


def test_leftover_folder_without_manifest_raises(tmp_path: Path) -> None:
    leftover = tmp_path / "tiny-seed0"
    (leftover / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="delete"):
        ensure_demo_data(tmp_path, scale="tiny", seed=0)
    assert not (leftover / "manifest.json").exists()


def test_stale_manifest_raises(tmp_path: Path) -> None:
    leftover = tmp_path / "tiny-seed0"
    leftover.mkdir()
    (leftover / "manifest.json").write_text(json.dumps({"version": -1, "scale": "tiny", "seed": 0}))
    with pytest.raises(ValueError, match="delete"):
        ensure_demo_data(tmp_path, scale="tiny", seed=0)


def test_an_older_build_is_rebuilt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = tmp_path / "tiny-seed0"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"version": 1, "scale": "tiny", "seed": 0}))
    (old / "stale.png").write_bytes(b"old")
    with caplog.at_level("WARNING"):
        built = ensure_demo_data(tmp_path, scale="tiny", seed=0)
    assert built == old and not (old / "stale.png").exists()
    assert json.loads((old / "manifest.json").read_text())["version"] == writer.VERSION > 1
    assert "built by an older dear-exp; rebuilding it" in caplog.text


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(writer, "make_inpaint", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_demo_data(tmp_path, scale="tiny", seed=0)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_unknown_scale_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown demo scale 'x'; choose one of: demo, bench, tiny"):
        ensure_demo_data(tmp_path, scale="x")
    assert list(tmp_path.iterdir()) == []


def test_generators_differ_from_each_other_and_source() -> None:
    rng = photos.item_rng(0, "unit", "crop", 0)
    crop = photos.sample_crop(rng, "train", 96)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    outs = {g: generators.apply_generator(g, crop) for g in (*GENERATORS, "inpainter")}
    src = crop.astype(np.float32)
    for name, out in outs.items():
        assert out.shape == crop.shape and out.dtype == np.uint8
        diff = np.abs(out.astype(np.float32) - src).mean()
        assert 0.5 < diff < 40.0, (name, diff)  # altered, but still the photo's content
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(outs[a].astype(np.float32) - outs[b].astype(np.float32)).mean() > 0.5, (a, b)
    # Fixed weights: the same input always gives the same output.
    assert np.array_equal(generators.apply_generator("gen_a", crop), outs["gen_a"])


def test_generators_leave_upsampling_traces() -> None:
    # gen_a's perturbed transposed conv gives the four 2x2 phases different gains on a flat image.
    flat = np.full((32, 32, 3), 128, np.uint8)
    out = generators.apply_generator("gen_a", flat).astype(np.float32)
    inner = out[4:-4, 4:-4]
    phase_means = [inner[py::2, px::2].mean() for py in range(2) for px in range(2)]
    assert max(phase_means) - min(phase_means) > 0.5
    # gen_c adds a period-2 pattern even to a flat image.
    out_c = generators.apply_generator("gen_c", flat).astype(np.float32)
    assert np.abs(out_c[0::2, 0::2] - out_c[1::2, 1::2]).max() >= 1


def test_apply_generator_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        generators.apply_generator("gen_z", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        generators.apply_generator("gen_a", np.zeros((10, 8, 3), np.uint8))


def test_test_crops_come_from_held_out_columns() -> None:
    for photo in photos.load_photos():
        train_x0, train_x1 = photos.region(photo, "train")
        test_x0, test_x1 = photos.region(photo, "test")
        assert train_x0 == 0 and train_x1 <= test_x0 and test_x1 == photo.shape[1]
        assert test_x1 - test_x0 >= max(SCALES["demo"]["test_sizes"])


def test_the_shared_texture_is_a_knob_of_the_world(tmp_path: Path) -> None:
    """demo.texture=0 builds a world without cue (c) in its own folder: its fakes are the
    generators' own outputs; the default world's fakes carry the texture."""
    from dear_exp.demo.generators import SHARED_TEXTURE_AMPLITUDE

    plain = ensure_demo_data(tmp_path, scale="tiny", seed=0, texture=0.0)
    default = ensure_demo_data(tmp_path, scale="tiny", seed=0)
    assert plain.name == "tiny-seed0-texture0" and default.name == "tiny-seed0"
    assert json.loads((plain / "manifest.json").read_text())["shared_texture_amplitude"] == 0.0
    assert json.loads((default / "manifest.json").read_text())["shared_texture_amplitude"] == SHARED_TEXTURE_AMPLITUDE
    rel = "test/fake/gen_a/test_gen_a_0000.png"
    with Image.open(plain / rel) as a, Image.open(default / rel) as b:
        diff = np.asarray(b, np.float32) - np.asarray(a, np.float32)
    assert 3.5 < float(diff.std()) < 5.0  # the texture's std, 3 * sqrt(2), up to rounding and clipping
    reals = "test/real/photos/test_real_0000.jpg"
    assert (plain / reals).read_bytes() == (default / reals).read_bytes()  # reals are untouched
    with pytest.raises(ValueError, match=r"demo.texture=-1 must be"):
        ensure_demo_data(tmp_path, scale="tiny", seed=0, texture=-1)
