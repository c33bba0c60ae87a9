"""`make bench` and `make bench-gpu` run as written (the figures in the README and experiments/throughput
come from them): the whole bench on the tiny demo with one detector, the GPU script's CPU part, and
its inpainting step on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "DEAR_ROOT": str(root), "WANDB_MODE": "offline"}


@pytest.mark.slow
def test_make_bench_measures_the_sweep_and_each_detector(tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cmd = [sys.executable, "-m", "dear_exp.bench", "demo.scale=tiny", "threads=1", "--detectors=npr", "--images=2"]
    proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (found,) = root.glob("logs/bench/*/bench.json")
    result = json.loads(found.read_text())
    for step in ("single", "sweep"):
        assert result[step]["wall_s"] > 0 and result[step]["peak_mib"] > 100
        assert 0 <= result[step]["sys_share"] <= 1
    assert result["sweep_ratio"] == pytest.approx(result["sweep"]["wall_s"] / result["single"]["wall_s"])
    jobs = result["sweep_jobs_s"]
    assert len(jobs) == 25 and all(j > 0 for j in jobs) and sum(jobs) < result["sweep"]["wall_s"]
    assert jobs[0] > max(jobs[1:]), "the first job, which fills the cache, should be the longest"
    wall = result["sweep"]["wall_s"]
    assert result["sweep_ratio_in_process"] == pytest.approx(wall / (wall - sum(jobs[1:])))
    fits = result["sweep_fits_s"]  # solving heads: the first job solves its three, a later one at most two
    assert len(fits) == 25 and fits[0] > 0 and all(0 <= f <= j for f, j in zip(fits, jobs))
    assert 0 < result["sweep_later_fit_s"] < result["sweep_later_job_s"]
    pairs = result["grid_pairs_s"]  # the grid: its first pair holds the extraction
    assert len(pairs) == 25 and all(p >= 0 for p in pairs) and pairs[0] > max(pairs[1:])
    wall = result["grid"]["wall_s"]
    assert result["grid_ratio_in_process"] == pytest.approx(wall / (wall - sum(pairs[1:])))
    assert result["grid_ratio"] == pytest.approx(wall / result["single"]["wall_s"])
    assert "task=dear_grid" in (found.parent / "bench.md").read_text()
    names = [r["setting"] for r in result["detectors"]]
    assert names == ["npr"]
    npr = result["detectors"][0]
    assert npr["images"] == 8 and npr["training_views_probe"] == 8  # 2 per source, 4 sources
    assert npr["training_views"] >= 8  # the timed pass: about 10 s at the probe's rate, at most every view
    assert npr["evaluation"]["images_per_s"] > 0 and npr["extraction"]["images_per_s"] > 0
    assert npr["allocator"].startswith("CPU memory:") and npr["process"]["peak_mib"] > 100
    assert "| npr |" in (found.parent / "bench.md").read_text()


def test_the_gpu_script_checks_bf16_on_the_cpu_and_says_what_it_skipped(tmp_path: Path):
    cmd = [sys.executable, "-m", "dear_exp.bench_gpu", "--cpu", "--detectors=npr,generic", f"--out={tmp_path}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [r["detector"] for r in result["detectors"]] == ["npr", "generic"]
    for row in result["detectors"]:
        errors = row["bf16_relative_error"]
        assert 0 < errors["pooled"] < result["tolerance"] and 0 < errors["logits"] < result["tolerance"]
        assert row["bf16_ok"] and row["images_per_s"]["fp32"] > 0 and row["images_per_s"]["bf16"] > 0
    assert "no GPU" in result["sweep"]["skipped"] and "no GPU" in result["inpaint_fp16"]["skipped"]


def test_bf16_errors_are_measured_not_assumed():
    import torch

    from dear_exp.bench_gpu import relative_error

    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert relative_error(x, x) == 0
    assert relative_error(x.bfloat16().float(), x) == pytest.approx(2**-9, rel=0.5)  # bf16's rounding
    # logits that nearly cancel (a random head's): below an RMS of `floor` the error is absolute
    small = torch.full((4,), 0.05)
    assert relative_error(small + 0.005, small) == pytest.approx(0.1)
    assert relative_error(small + 0.005, small, floor=1.0) == pytest.approx(0.005)
    assert relative_error(10 * x + 0.5, 10 * x, floor=1.0) == pytest.approx(0.05, rel=0.05)


@pytest.mark.slow
def test_the_gpu_scripts_inpainting_step_runs_on_the_cpu(tmp_path: Path, monkeypatch):
    from dear_exp.bench_gpu import inpaint_seconds

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEAR_ROOT", str(tmp_path))
    fast = ("inpaint.resolution=64", "inpaint.steps=2", "threads=1")
    result = inpaint_seconds(tmp_path, trainer="cpu", counts=(1, 3), extra=fast)
    assert result["dtype"] == "float32" and result["seconds_per_image"] == result["seconds_per_image"]  # a number
    assert len(list((tmp_path / "inpainted3").rglob("*_inpaint.png"))) == 3


def test_every_detector_config_is_benchmarked_and_composes_with_its_bench_overrides():
    from dear_exp.__main__ import CONF_DIR
    from dear_exp.api import config
    from dear_exp.bench import DETECTORS as ONE_PER_ARCHITECTURE
    from dear_exp.bench import EXTRA
    from dear_exp.bench_gpu import DETECTORS

    assert set(DETECTORS) == {p.stem for p in (Path(CONF_DIR) / "detector").glob("*.yaml")}
    assert set(ONE_PER_ARCHITECTURE) <= set(DETECTORS)
    for name in DETECTORS:  # the schema's cross-checks included (224 px crops for 224 px detectors)
        config(f"detector={name}", *EXTRA.get(name, []))
