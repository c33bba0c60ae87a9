"""Launcher configs compose to what SLURM and joblib need, and parallel jobs share the cache."""

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dear_exp.__main__ import CONF_DIR
from tests.helpers import read_csv, run_cli


def _hydra(*overrides: str):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("main", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_slurm_multi_gpu_job_asks_one_task_per_gpu():
    cfg = _hydra("+experiment=npr_flux", "+launcher=slurm", "trainer=ddp", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert "submitit" in launcher._target_ and "Slurm" in launcher._target_
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.trainer.devices == 4
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.use_distributed_sampler is False


def test_slurm_sweep_is_an_array_of_one_gpu_jobs():
    cfg = _hydra("+experiment=npr_flux", "+launcher=slurm")
    assert cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node == 1
    assert cfg.trainer.accelerator == "gpu"


def test_joblib_runs_jobs_in_parallel_processes():
    cfg = _hydra("+launcher=joblib")
    assert "joblib" in cfg.hydra.launcher._target_.lower() and cfg.hydra.launcher.n_jobs == 2
    assert cfg.num_workers == 0  # DataLoader workers cannot start inside loky workers


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_two_parallel_jobs_share_one_cache(tiny_demo: Path, tmp_path: Path):
    """Two joblib jobs start together on an empty cache: every entry is computed once (the second
    job waits on the first's lock, then reads), and both jobs give the base detector's same rows."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    first = run_cli("demo.scale=tiny", "logger=csv", "head.max_epochs=1", cwd=root)  # trains the base
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(root / ".cache" / "features")
    proc = run_cli(
        "-m",
        "+launcher=joblib",
        "demo.scale=tiny",
        "logger=csv",
        "head.max_epochs=1",
        "prune.alpha_low=0.1,0.2",
        "hydra.sweep.dir=sweep",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [(root / "sweep" / str(j) / "dear.log").read_text() for j in (0, 1)]
    computed = [line for log in logs for line in log.splitlines() if "Cache miss" in line]
    hits = [line for log in logs for line in log.splitlines() if "Cache hit" in line]
    entries = sorted((root / ".cache" / "features").glob("*/*.safetensors"))
    heads = [e for e in entries if e.parent.name == "heads"]
    cards = [e for e in entries if e.parent.name == "detector"]  # the detector's identity (detectors/deferred.py)
    assert len(entries) - len(heads) - len(cards) == 13 and len(cards) == 1
    # solved heads: the shared refit control, and each job's random control and DEAR head (their masks differ)
    assert len(heads) == 5
    # each of the 13 feature entries, the refit control and the detector card was computed by exactly one
    # job and read by the other
    assert len(hits) == 15, (computed, hits)
    rows = [read_csv(root / "sweep" / str(j) / "results.csv") for j in (0, 1)]
    base = [[r["AUC"] for r in job if r["model"] == "base"] for job in rows]
    assert base[0] == base[1]
    assert {rows[0][0]["alpha_low"], rows[1][0]["alpha_low"]} == {"0.1", "0.2"}
