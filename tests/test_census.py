"""task=census: counts, formats, JPEG share, resolution buckets and warnings, in-process and via the CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from dear_exp.__main__ import run_task
from tests.helpers import read_csv, run_cli


def _image(path: Path, fmt: str, size: tuple[int, int] = (16, 16), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)


def _biased_tree(root: Path) -> None:
    """a: JPEG reals vs PNG fakes (format bias); b: 2 reals vs 6 fakes (unbalanced), one real
    300x260 and one 600x520, one fake a copy of a real of a; c: no fakes; a .png that is a JPEG."""
    for i in range(4):
        _image(root / f"a/0_real/r{i}.jpg", "JPEG", seed=i)
        _image(root / f"a/1_fake/f{i}.png", "PNG", seed=10 + i)
    _image(root / "b/0_real/r0.jpg", "JPEG", (300, 260), seed=20)
    _image(root / "b/0_real/r1.png", "JPEG", (600, 520), seed=21)
    for i in range(5):
        _image(root / f"b/1_fake/f{i}.png", "PNG", seed=30 + i)
    shutil.copy(root / "a/0_real/r2.jpg", root / "b/1_fake/copy.jpg")
    _image(root / "c/0_real/r0.jpg", "JPEG", seed=40)
    (root / "c/1_fake").mkdir(parents=True)


def test_census_counts_formats_buckets_and_warnings(compose_cfg, tmp_path: Path):
    data = tmp_path / "bench"
    _biased_tree(data)
    cfg = compose_cfg("task=census", "benchmark=forensynths", f"benchmark.root={data}")
    result = run_task(cfg)
    sources = {s["name"]: s for s in result["sources"]}
    assert {k: (s["role"], s["n"]) for k, s in sources.items()} == {
        "a/real": ("real", 4),
        "a": ("fake", 4),
        "b/real": ("real", 2),
        "b": ("fake", 6),
        "c/real": ("real", 1),
        "c": ("fake", 0),
    }
    assert sources["a/real"]["formats"] == {"JPEG": 4} and sources["a"]["formats"] == {"PNG": 4}
    assert sources["b"]["formats"] == {"PNG": 5, "JPEG": 1}
    assert sources["a/real"]["jpeg_share"] == 1.0 and sources["a"]["jpeg_share"] == 0.0
    assert sources["b/real"]["buckets"] == {"<256": 0, "256-511": 1, "512-1023": 1, ">=1024": 0}
    assert sources["a"]["buckets"]["<256"] == 4
    assert sources["b/real"]["ext_mismatch"] == ["b/0_real/r1.png is JPEG"]
    subsets = {s["name"]: s for s in result["subsets"]}
    assert (subsets["b"]["n_real"], subsets["b"]["n_fake"], subsets["b"]["ratio"]) == (2, 6, 3.0)
    warnings = "\n".join(result["warnings"])
    assert "subset a: format bias: reals are 100% JPEG, fakes 0% (PNG)" in warnings
    assert "subset b: unbalanced: 2 real vs 6 fake (ratio 3.0 > 2)" in warnings
    assert "subset c: empty: no fake images (1 real, 0 fake)" in warnings
    assert "1 group(s) of identical files (2 files, 1 group(s) both real and fake)" in warnings
    assert "a/real:a/0_real/r2.jpg == b:b/1_fake/copy.jpg" in warnings
    assert "subset b: format bias: reals are 100% JPEG, fakes 17% (PNG)" in warnings  # r1.png is a JPEG
    assert "subset c: format bias" not in warnings and "subset a: unbalanced" not in warnings
    assert result["duplicates"] == [
        [{"source": "a/real", "key": "a/0_real/r2.jpg"}, {"source": "b", "key": "b/1_fake/copy.jpg"}]
    ]
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "census.json").read_text())["warnings"] == result["warnings"]
    rows = read_csv(out / "census.csv")
    assert [(r["kind"], r["name"]) for r in rows][-3:] == [("subset", "a"), ("subset", "b"), ("subset", "c")]
    a_real = next(r for r in rows if r["name"] == "a/real")
    assert (a_real["n"], a_real["formats"], a_real["jpeg_share"]) == ("4", "JPEG:4", "1.0000")
    assert not list(out.glob(".census*")), "temporary files left behind"


def test_census_cli_exits_zero_and_writes_its_files(tmp_path: Path):
    data = tmp_path / "bench"
    for gen in ("g1", "g2"):
        for i in range(2):
            _image(data / f"{gen}/0_real/r{i}.jpg", "JPEG", seed=i)
            _image(data / f"{gen}/1_fake/f{i}.png", "PNG", seed=5 + i)
    proc = run_cli("task=census", "benchmark=forensynths", f"benchmark.root={data}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "logs" / "census" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "census.csv").is_file()
    result = json.loads((runs[0] / "census.json").read_text())
    assert [s["name"] for s in result["subsets"]] == ["g1", "g2"]
    assert "format bias" in proc.stdout + proc.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / ".cache").exists()
    assert not list(runs[0].glob("wandb")), "the census starts no logger"


def test_census_decodes_what_it_reports_readable(compose_cfg, tmp_path: Path):
    """A truncated PNG keeps an intact header: the census decodes it and counts it unreadable; a 16-bit
    grey PNG is readable (and decoded to the right 8-bit values, tests/test_data.py)."""
    data = tmp_path / "bench"
    for i in range(3):
        _image(data / f"a/0_real/r{i}.png", "PNG", (64, 64), seed=i)
        _image(data / f"a/1_fake/f{i}.png", "PNG", (64, 64), seed=10 + i)
    cut = data / "a/1_fake/f1.png"
    cut.write_bytes(cut.read_bytes()[:300])
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(data / "a/0_real/deep.png")
    result = run_task(compose_cfg("task=census", "benchmark=forensynths", f"benchmark.root={data}"))
    sources = {s["name"]: s for s in result["sources"]}
    assert sources["a"]["unreadable"] == ["a/1_fake/f1.png"]
    assert sources["a/real"]["unreadable"] == [] and sources["a/real"]["n"] == 4
