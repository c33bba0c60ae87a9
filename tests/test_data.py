"""Data layer: explicit labels, order independence, per-item seeding, size buckets, post-processing."""

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dear_exp.data.datasets import EvalImages
from dear_exp.data.folders import FAKE, REAL, labelled_samples, list_images
from dear_exp.data.images import Preprocess
from dear_exp.data.postprocess import Chain
from dear_exp.data.samplers import SeededSampler, SizeBucketBatchSampler
from dear_exp.errors import DearError

PRE = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), trim_odd=True)


def _tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for folder, n, size in (("nature", 3, (40, 30)), ("ai", 4, (33, 41)), ("ai/sub", 2, (40, 30))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / folder / f"{i:02d}.png")


def test_labels_come_from_the_config_not_folder_order(tmp_path: Path):
    _tree(tmp_path)
    # alphabetical order would put ai first (label 0): GenImage's classic label flip
    samples = labelled_samples(tmp_path, real=["nature"], fake=["ai"], hint="h")
    assert [s.label for s in samples] == [REAL] * 3 + [FAKE] * 6
    assert [s.key for s in samples][3:] == [
        "ai/00.png",
        "ai/01.png",
        "ai/02.png",
        "ai/03.png",
        "ai/sub/00.png",
        "ai/sub/01.png",
    ]


def _age(root: Path, seconds: float = 60) -> None:
    """Every folder below root last changed `seconds` ago (older than the listing memo's racy window)."""
    import os
    import time

    then = time.time() - seconds
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, (then, then))


def test_a_listing_is_kept_while_its_folders_do_not_change(tmp_path: Path, monkeypatch):
    import os

    from dear_exp.data import folders

    _tree(tmp_path)
    walks = []
    real_scandir = os.scandir

    def keys() -> list[str]:  # the keys, and how many folders were read for them
        walks.clear()
        with monkeypatch.context() as m:
            m.setattr(folders.os, "scandir", lambda p: walks.append(p) or real_scandir(p))
            return [s.key for s in labelled_samples(tmp_path, real=["nature"], fake=["ai"], hint="h")]

    first = keys()
    assert keys() == first and len(walks) == 3  # just written: listed each time (git's racily-clean rule)
    _age(tmp_path)
    assert keys() == first and len(walks) == 3
    assert keys() == first and not walks  # kept: no folder read again
    Image.new("RGB", (8, 8)).save(tmp_path / "ai" / "sub" / "02.png")  # a new file in a sub-folder
    assert keys() == [*first, "ai/sub/02.png"]
    (tmp_path / "nature" / "00.png").unlink()
    assert keys() == first[1:] + ["ai/sub/02.png"]
    _age(tmp_path)
    (tmp_path / "ai" / "sub" / "00.png").rename(tmp_path / "ai" / "sub" / "09.png")  # a rename
    assert keys()[-3:] == ["ai/sub/01.png", "ai/sub/02.png", "ai/sub/09.png"]
    assert [s.key for s in labelled_samples(tmp_path, real=["nature"], fake=["ai"], hint="h")] == [
        p.relative_to(tmp_path).as_posix()
        for p in list_images(tmp_path / "nature", "h") + list_images(tmp_path / "ai", "h")
    ]


def test_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(DearError, match=f"data folder not found: {tmp_path}/nope; fetch it"):
        list_images(tmp_path / "nope", "fetch it")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DearError, match="no images in"):
        list_images(tmp_path / "empty", "fetch it")


def test_seeded_sampler_is_reproducible_and_changes_per_epoch():
    a = SeededSampler(10, seed=1)
    first = list(a)
    assert first == list(SeededSampler(10, seed=1))
    a.set_epoch(1)
    assert [i for i, _ in a] != [i for i, _ in first]
    assert sorted(i for i, _ in first) == list(range(10))
    cycled = list(SeededSampler(4, seed=0, num_samples=10))
    assert len(cycled) == 10 and sorted(i for i, _ in cycled[:4]) == [0, 1, 2, 3]


def test_size_buckets_group_equal_sizes_and_cover_every_index():
    sizes = [(32, 32), (64, 48), (32, 32), (64, 48), (32, 32)]
    batches = list(SizeBucketBatchSampler(sizes, batch_size=2))
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        assert len({sizes[i] for i in b}) == 1


def _eval_bytes(root: Path, shuffle: bool) -> dict[str, bytes]:
    samples = labelled_samples(root, real=["nature"], fake=["ai"], hint="h")
    if shuffle:
        random.Random(5).shuffle(samples)
    chain = Chain("mix", [{"op": "resize", "factor": [0.5, 1.5]}, {"op": "jpeg", "quality": [30, 95]}], seed=7)
    ds = EvalImages(samples, chain, PRE)
    return {s.key: ds[i][0].numpy().tobytes() for i, s in enumerate(samples)}


def test_postprocessing_is_seeded_per_image_not_per_order(tmp_path: Path):
    _tree(tmp_path)
    assert _eval_bytes(tmp_path, shuffle=False) == _eval_bytes(tmp_path, shuffle=True)


def test_postprocessing_is_identical_across_processes(tmp_path: Path):
    _tree(tmp_path)
    code = (
        "import hashlib, sys; from pathlib import Path; from tests.test_data import _eval_bytes; "
        "d = _eval_bytes(Path(sys.argv[1]), False); "
        "print(hashlib.sha256(b''.join(d[k] for k in sorted(d))).hexdigest())"
    )
    root = Path(__file__).parent.parent
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(outs) == 1


def test_final_sizes_predict_what_the_chain_produces(tmp_path: Path):
    _tree(tmp_path)
    samples = labelled_samples(tmp_path, real=["nature"], fake=["ai"], hint="h")
    chain = Chain("r", [{"op": "resize", "factor": [0.4, 1.3], "interpolation": "bilinear"}], seed=0)
    ds = EvalImages(samples, chain, PRE)
    for (w, h), i in zip(ds.final_sizes(), range(len(ds))):
        assert tuple(ds[i][0].shape[1:]) == (h, w) and w % 2 == 0 and h % 2 == 0


def test_jpeg_changes_pixels_and_unknown_ops_are_refused():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out = Chain("j", [{"op": "jpeg", "quality": 50}], seed=0)(img, "k")
    assert out.size == img.size and not np.array_equal(np.array(out), np.array(img))
    with pytest.raises(DearError, match="unknown op 'sharpen'"):
        Chain("x", [{"op": "sharpen"}], seed=0)
    with pytest.raises(DearError, match="op jpeg needs quality"):
        Chain("x", [{"op": "jpeg"}], seed=0)


def test_preprocess_trims_odd_sides_for_npr():
    x = PRE(np.zeros((31, 45, 3), dtype=np.uint8))
    assert tuple(x.shape) == (3, 30, 44) and torch.allclose(x, torch.full_like(x, -1.0))


@pytest.mark.parametrize("size", [(300, 250), (250, 300), (100, 80), (224, 224)])
def test_clip_geometry_matches_torchvision(size):
    from torchvision.transforms import CenterCrop, Resize
    from torchvision.transforms.functional import pil_to_tensor

    w, h = size
    arr = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    pre = Preprocess(mean=(0, 0, 0), std=(1, 1, 1), center_crop=224)
    expected = CenterCrop(224)(pil_to_tensor(Image.fromarray(arr))).float() / 255
    assert torch.equal(pre(arr), expected) and pre.out_size(w, h) == (224, 224)
    c2p = Preprocess(mean=(0, 0, 0), std=(1, 1, 1), resize_short=224, center_crop=224)
    expected = CenterCrop(224)(pil_to_tensor(Resize(224)(Image.fromarray(arr)))).float() / 255
    assert torch.equal(c2p(arr), expected)
    mask = np.zeros((h, w), dtype=np.uint8)
    assert tuple(c2p.mask(mask).shape) == (224, 224)


def test_inpaint_stems_must_be_unique_across_sub_folders(tmp_path: Path):
    from dear_exp.data.folders import inpaint_pairs

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "x_inpaint.png")
        Image.new("L", (8, 8)).save(tmp_path / sub / "x_mask.png")
    with pytest.raises(DearError, match="two inpaint image files share the stem 'x_inpaint'"):
        inpaint_pairs(tmp_path, ".", ".", "h")


def test_hidden_files_are_not_images(tmp_path: Path):
    _tree(tmp_path)
    (tmp_path / "ai" / "._00.png").write_bytes(b"\x00\x05AppleDouble")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "01.png").write_bytes(b"junk")
    assert [p.name for p in list_images(tmp_path / "ai", "h")] == [
        "00.png",
        "01.png",
        "02.png",
        "03.png",
        "00.png",
        "01.png",
    ]


def test_wide_and_float_images_are_decoded_right_or_refused(tmp_path: Path):
    """PIL's convert("RGB") clips 16-bit grey at 255 (all white); load_image scales it to 8 bits;
    floating-point samples have no agreed scale and are refused in one line."""
    import numpy as np
    from PIL import Image

    from dear_exp.data.images import load_image

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as raw:
        assert raw.mode == "I;16" and (np.asarray(raw.convert("RGB")) == 255).mean() > 0.9  # what PIL alone gives
    got = np.asarray(load_image(tmp_path / "grey16.png"))
    assert got.shape == (64, 64, 3) and (got[..., 0] == got[..., 2]).all()
    assert np.array_equal(got[..., 0], np.round(ramp / 257).astype(np.uint8))
    assert np.array_equal(np.asarray(load_image(tmp_path / "grey16.png", mode="L")), got[..., 0])
    Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(DearError, match=r"float.tiff holds floating-point samples .* convert it to an 8-bit"):
        load_image(tmp_path / "float.tiff")
