"""task=dear_grid: every alpha pair in one process, each pair's files those of its multirun job."""

import shutil
from pathlib import Path

import pytest
import torch

from dear_exp.cache import FeatureCache
from tests.helpers import read_csv, run_cli, run_entry

PAIR_FILES = (
    "results.csv",
    "results.md",
    "refit.csv",
    "head.safetensors",
    "head_random.safetensors",
    "head_refit.safetensors",
    "rad_scores.csv",
    "dissection.safetensors",
    "scores.csv",
)


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_a_grid_writes_what_its_multirun_jobs_write_byte_for_byte(tiny_demo: Path, tmp_path: Path):
    """The same pairs as a multirun and as a grid, each solving its own heads on the same cached rows:
    every pair's files equal its job's; the grid's comparison equals task=compare's over the jobs."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    common = ["+experiment=demo", "+debug=fdr", "logger=csv"]
    sweep = run_cli(
        "-m",
        *common,
        "prune.alpha_low=0.1,0.2",
        "prune.alpha_high=0.9",
        "cache.dir=c1",
        "hydra.sweep.dir=sweep",
        cwd=root,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    job_metrics = read_csv(next((root / "sweep" / "0" / "csv").glob("version_*/metrics.csv")))
    assert any(r.get("test/dear/logit0/jpeg75/mean/F.Acc") for r in job_metrics)  # written with no trainer.fit
    shutil.copytree(root / "c1", root / "c2", ignore=shutil.ignore_patterns("heads"))
    grid = run_cli(
        *common,
        "task=dear_grid",
        "task.scores=csv",  # a multirun job's default
        "prune.alpha_low=[0.1,0.2]",
        "prune.alpha_high=[0.9]",
        "cache.dir=c2",
        "hydra.run.dir=grid",
        cwd=root,
    )
    assert grid.returncode == 0, grid.stderr[-3000:]
    assert "Cache miss heads: computing NPR@layer2: dear head" in grid.stdout  # solved here, not read
    assert "pair 2/2 (1_0.2_0.9)" in grid.stdout and "alpha grid: mean R.Acc / F.Acc" in grid.stdout
    out = root / "grid"
    assert sorted(p.name for p in (out / "pairs").iterdir()) == ["0_0.1_0.9", "1_0.2_0.9"]
    for job, pair in (("0", "0_0.1_0.9"), ("1", "1_0.2_0.9")):
        for name in PAIR_FILES:
            assert (out / "pairs" / pair / name).read_bytes() == (root / "sweep" / job / name).read_bytes(), (
                pair,
                name,
            )
    # the lead policy's heatmap only (task=compare draws every policy's)
    assert sorted(p.name for p in out.glob("heatmaps*")) == ["heatmaps.csv", "heatmaps_calibrated.png"]
    hint = run_cli("task=compare", "task.runs=[grid]", "hydra.run.dir=cmp0", cwd=root)
    assert "a task=dear_grid run: give its pairs" in hint.stderr.strip().splitlines()[-1]
    compare = run_cli("task=compare", "task.runs=[sweep/*]", "hydra.run.dir=cmp", cwd=root)
    assert compare.returncode == 0, compare.stderr[-3000:]
    for name in ("compare.csv", "compare.md", "heatmaps.csv"):
        assert (out / name).read_bytes() == (root / "cmp" / name).read_bytes(), name
    steps = read_csv(next((out / "csv").glob("version_*/metrics.csv")))
    logged = [r for r in steps if r.get("grid/alpha_low")]
    assert [(float(r["grid/alpha_low"]), int(r["step"])) for r in logged] == [(0.1, 0), (0.2, 1)]
    assert all(r["grid/refit/dear/converged"] == "1.0" for r in logged)  # each head's fit summary, as task=dear logs
    dear = [
        r
        for r in read_csv(root / "sweep" / "1" / "results.csv")
        if (r["model"], r["threshold_policy"], r["postprocess"], r["subset"]) == ("dear", "logit0", "jpeg75", "mean")
    ]
    assert float(logged[1]["grid/dear/logit0/jpeg75/mean/F.Acc"]) == pytest.approx(float(dear[0]["F.Acc"]))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["prune.alpha_low=[0.1,0.2]"], "prune.alpha_low=[0.1, 0.2] is a list: task=dear_grid runs every alpha pair"),
        (
            ["task=dear_grid", "prune.alpha_low=[0.1,0.9]", "prune.alpha_high=[0.8]"],
            "prune.alpha_low=0.9 and prune.alpha_high=0.8 must satisfy 0 <= alpha_low < alpha_high",
        ),
        (["task=dear_grid", "prune.alpha_low=[0.1,0.1]"], "lists 0.1 twice"),
        (["task=dear_grid", "prune.alpha_high=[]"], "prune.alpha_high=[] lists no value"),
        (["task=dear_grid", "prune=none", "prune.alpha_low=[0.1,0.2]"], "which prune.mode=none does not read"),
        (["task=dear_grid", "task.fragility.enabled=true"], "task.fragility.enabled=true reads one alpha pair"),
        (
            ["task=dear_grid", "prune=high", "prune.alpha_low=[0.1,0.2]"],
            "prune.mode=high does not read prune.alpha_low, so prune.alpha_low=[0.1, 0.2] would repeat",
        ),
        (
            ["task=dear_grid", "prune=low", "prune.alpha_high=[0.8,0.9]"],
            "prune.mode=low does not read prune.alpha_high",
        ),
    ],
)
def test_a_grid_that_cannot_run_fails_in_one_line_before_any_work(args, fragment, tmp_path, monkeypatch, capfd):
    rc, out = run_entry(["demo.scale=tiny", *args], tmp_path, monkeypatch, capfd)
    assert rc == 2, out[-3000:]
    assert "Traceback" not in out
    assert fragment in out.strip().splitlines()[-1], out[-2000:]
    assert not list(tmp_path.rglob("pairs")) and not list(tmp_path.rglob("*.safetensors"))


def test_a_kept_cache_reads_an_entry_once_and_serves_it_from_memory(tmp_path: Path, monkeypatch):
    cache = FeatureCache(tmp_path)
    computed = []

    def compute():
        computed.append(1)
        return {"x": torch.arange(3.0)}

    first = cache.fetch("rows", {"a": 1}, compute)
    loads = []
    load = FeatureCache._load
    monkeypatch.setattr(FeatureCache, "_load", staticmethod(lambda path: loads.append(path) or load(path)))
    assert torch.equal(FeatureCache(tmp_path).fetch("rows", {"a": 1}, compute)["x"], first["x"])
    assert len(loads) == 1 and computed == [1]  # without keep: read from the disk each time
    cache.keep()
    a = cache.fetch("rows", {"a": 1}, compute)
    b = cache.fetch("rows", {"a": 1}, compute)
    assert a is b and len(loads) == 2 and computed == [1]  # read once more, then from memory
    off = FeatureCache(tmp_path / "off", enabled=False)
    off.keep()
    off.fetch("rows", {"a": 2}, compute)
    off.fetch("rows", {"a": 2}, compute)
    assert computed == [1, 1]  # the cache disabled: computed once for the run, nothing written
    assert not (tmp_path / "off").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_a_grid_of_adam_fits_keeps_each_pairs_checkpoints_and_figures_in_its_folder(tiny_demo: Path, tmp_path: Path):
    """head=reference in a grid: each pair's best-head checkpoints in its own folder (not one run-level
    folder of best-v1, best-v2 ...); levels closer than 6 digits still get folders of their own;
    task.plots=always draws each pair's figures and every policy's heatmap."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    proc = run_cli(
        "+experiment=demo",
        "+debug=default",
        "postprocess=clean",
        "head=reference",
        "trainer.max_epochs=1",
        "task=dear_grid",
        "task.plots=always",
        "prune.alpha_low=[0.1,0.1000001]",
        "prune.alpha_high=[0.9]",
        "hydra.run.dir=grid",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exists and is not empty" not in proc.stderr
    out = root / "grid"
    pairs = sorted(p.name for p in (out / "pairs").iterdir())
    assert pairs == ["0_0.1_0.9", "1_0.1000001_0.9"]
    for pair in pairs:
        for model in ("refit", "random", "dear"):
            assert sorted(p.name for p in (out / "pairs" / pair / "checkpoints" / model).iterdir()) == ["best.ckpt"]
        for figure in ("racc_facc.png", "severity.png", "roc.png", "pr.png", "rad_hist.png"):
            assert (out / "pairs" / pair / figure).is_file(), (pair, figure)
    assert not (out / "checkpoints").exists()
    assert not list((out / "pairs").rglob("scores.csv"))  # task.scores=none unless asked
    assert sorted(p.name for p in out.glob("heatmaps_*.png")) == [
        "heatmaps_calibrated.png",
        "heatmaps_logit0.png",
        "heatmaps_oracle.png",
    ]


def test_an_adam_fits_checkpoints_go_to_its_pairs_folder_through_a_symlinked_run_path(compose_cfg, tmp_path: Path):
    """Lightning's ModelCheckpoint resolves symlinks in its dirpath: a run folder reached through one
    (a symlinked logs/ or $DEAR_ROOT) still puts each pair's checkpoints in the pair's folder."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from omegaconf import open_dict, read_write

    from dear_exp import build

    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    cfg = compose_cfg("+experiment=demo", "head=reference")
    with read_write(cfg), open_dict(cfg):
        cfg.paths.output_dir = str(link / "run")
    work = Path(cfg.paths.work_dir)
    assert work.is_relative_to(link)
    for folder in (work / "pairs" / "0_0.1_0.9", work):
        (checkpoint,) = [c for c in build.fit_callbacks(cfg, folder, "dear") if isinstance(c, ModelCheckpoint)]
        assert Path(checkpoint.dirpath) == tmp_path / "real" / folder.relative_to(link) / "checkpoints" / "dear"


def test_grid_levels_are_written_as_floats_and_a_one_value_list_of_an_unread_level_is_fine(compose_cfg):
    """prune.alpha_low=0 (a multirun's value as Hydra reads it) and the grid's 0.0 are one level:
    results.csv writes both 0.0; prune=high takes a one-value list of alpha_low (nothing repeats)."""
    from dear_exp import schema
    from dear_exp.report import run_identity

    identity = run_identity(compose_cfg("prune.alpha_low=0", "prune.alpha_high=1"), "dear")
    assert (identity["alpha_low"], identity["alpha_high"]) == (0.0, 1.0)
    assert all(isinstance(identity[k], float) for k in ("alpha_low", "alpha_high"))
    schema.validate(compose_cfg("task=dear_grid", "prune=high", "prune.alpha_low=[0.1]", "prune.alpha_high=[0.8,0.9]"))
