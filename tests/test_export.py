"""task=export: a post-processed copy of a benchmark tree, equal to what evaluation scores."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dear_exp.data.postprocess import Chain
from dear_exp.errors import DearError
from dear_exp.tasks.export import run
from tests.helpers import run_cli

SETTINGS = {
    "clean": [],
    "jpeg": [{"op": "jpeg", "quality": [40, 90]}],
    "small": [{"op": "resize", "factor": [0.5, 0.9], "interpolation": "bilinear"}],
    "processed": [{"op": "dear_processed"}],
}


def _tree(root: Path) -> list[str]:
    """PNG and JPEG sources, nested folders; returns the keys (paths relative to root)."""
    rng = np.random.default_rng(0)
    keys = ["real/r/0.png", "real/r/1.jpg", "fake/a/0.png", "fake/a/deep/2.png", "fake/b/x.JPEG"]
    for i, key in enumerate(keys):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (40 + i, 56 - i, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path, **({"quality": 90} if path.suffix.lower() in (".jpg", ".jpeg") else {}))
    return keys


def _cfg(compose_cfg, src: Path, dst: Path, *extra: str):
    from omegaconf import open_dict

    cfg = compose_cfg("task=export", "postprocess=clean", f"task.src={src}", f"task.dst={dst}", *extra)
    with open_dict(cfg):
        cfg.postprocess.settings = SETTINGS
    return cfg


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_mirrors_the_tree_and_equals_the_chain(compose_cfg, tmp_path: Path):
    src, dst = tmp_path / "bench", tmp_path / "out"
    keys = _tree(src)
    metrics = run(_cfg(compose_cfg, src, dst))
    assert metrics == {"written": 20.0, "skipped": 0.0, "images": 5.0}
    for key in keys:
        source = Image.open(src / key).convert("RGB")
        stem = Path(key).with_suffix("")
        # clean + keep: the file itself, byte for byte
        assert (dst / "clean" / key).read_bytes() == (src / key).read_bytes()
        # a chain ending in JPEG: the exact bytes it encoded, as .jpg, decoding to what evaluation sees
        image, data = Chain("jpeg", SETTINGS["jpeg"], 0).process(source, key)
        assert (dst / "jpeg" / f"{stem}.jpg").read_bytes() == data
        assert np.array_equal(np.array(Image.open(dst / "jpeg" / f"{stem}.jpg").convert("RGB")), np.array(image))
        # pixels only: lossless (PNG stays PNG, a JPEG source becomes PNG), equal to the chain's output
        expected = np.array(Chain("small", SETTINGS["small"], 0)(source, key))
        suffix = Path(key).suffix if Path(key).suffix == ".png" else ".png"
        assert np.array_equal(np.array(Image.open(dst / "small" / f"{stem}{suffix}").convert("RGB")), expected)
        _, data = Chain("processed", SETTINGS["processed"], 0).process(source, key)
        assert (dst / "processed" / f"{stem}.jpg").read_bytes() == data
    for setting in SETTINGS:
        assert (dst / setting / ".export.json").is_file()
    assert not [p for p in dst.rglob(".*") if p.name != ".export.json"]  # no temporary left behind

    stamps = {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()}
    assert run(_cfg(compose_cfg, src, dst)) == {"written": 0.0, "skipped": 20.0, "images": 5.0}  # resumable
    assert stamps == {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()}
    (dst / "jpeg" / "fake" / "a" / "0.jpg").unlink()
    assert run(_cfg(compose_cfg, src, dst))["written"] == 1.0

    with pytest.raises(DearError, match="was exported with other settings"):  # another seed: no mixing
        run(_cfg(compose_cfg, src, dst, "seed=1"))


def test_export_formats_and_one_setting(compose_cfg, tmp_path: Path):
    src, dst = tmp_path / "bench", tmp_path / "out"
    _tree(src)
    run(_cfg(compose_cfg, src, dst, "task.setting=small", "task.format=jpeg", "task.jpeg_quality=80"))
    assert sorted(p.name for p in dst.iterdir()) == ["small"]
    out = dst / "small" / "real" / "r" / "0.jpg"
    with Image.open(out) as image:
        assert image.format == "JPEG"
    expected = io.BytesIO()
    Chain("small", SETTINGS["small"], 0)(Image.open(src / "real/r/0.png").convert("RGB"), "real/r/0.png").save(
        expected, format="JPEG", quality=80
    )
    assert out.read_bytes() == expected.getvalue()
    run(_cfg(compose_cfg, src, tmp_path / "png", "task.setting=[clean,jpeg]", "task.format=png"))
    with Image.open(tmp_path / "png" / "clean" / "real" / "r" / "1.png") as image:
        assert image.format == "PNG"
    assert (tmp_path / "png" / "jpeg" / "real" / "r" / "1.jpg").is_file()  # encoded bytes are never re-encoded


def test_export_errors(compose_cfg, tmp_path: Path):
    src = tmp_path / "bench"
    _tree(src)
    for extra, fragment in (
        (("task.src=" + str(tmp_path / "nope"),), "export source not found"),
        (("task.dst=" + str(src / "sub"),), "lies inside task.src"),
        (("task.setting=jpeg99",), "task.setting=jpeg99 is not a setting"),
        (("task.format=tiff",), "task.format=tiff is not one of keep, png, jpeg"),
    ):
        with pytest.raises(DearError, match=fragment):
            run(_cfg(compose_cfg, src, tmp_path / "out", *extra))
    with pytest.raises(DearError, match="task.dst is required"):
        run(compose_cfg("task=export", f"task.src={src}"))
    (src / "fake" / "a" / "0.jpg").write_bytes((src / "real" / "r" / "1.jpg").read_bytes())  # 0.png and 0.jpg
    with pytest.raises(DearError, match="would both be written to"):
        run(_cfg(compose_cfg, src, tmp_path / "out2", "task.setting=jpeg"))


@pytest.mark.slow
def test_export_cli_in_another_process_gives_identical_files(compose_cfg, tmp_path: Path):
    src = tmp_path / "bench"
    _tree(src)
    cfg = compose_cfg("task=export", "postprocess=dear_processed", f"task.src={src}", f"task.dst={tmp_path / 'a'}")
    run(cfg)
    proc = run_cli(
        "task=export",
        "postprocess=dear_processed",
        f"task.src={src}",
        f"task.dst={tmp_path / 'b'}",
        "logger=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "export: wrote 10, skipped 0 already there; 5 image(s) x 2 setting(s) (clean, processed)" in proc.stdout
    assert _files(tmp_path / "a") == _files(tmp_path / "b") and len(_files(tmp_path / "b")) == 12
