"""The CPU thread count is a setting (`threads`), not an accident of the shell: the same config gives
the same numbers whatever OMP_NUM_THREADS says, and the count is recorded where results are kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import read_csv, run_cli


def _fresh_run(tiny_demo: Path, root: Path, omp: str) -> Path:
    """The tiny demo from scratch (its base detector trained in this run) under OMP_NUM_THREADS=omp."""
    shutil.copytree(tiny_demo, root)
    proc = run_cli(
        "+debug=default",
        "logger=none",
        "threads=2",
        "hydra.run.dir=out",
        cwd=root,
        threads=None,
        env={"OMP_NUM_THREADS": omp},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "torch uses 2 CPU thread(s)" in (root / "out" / "debug.log").read_text()
    return root / "out"


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_results_do_not_depend_on_omp_num_threads(tiny_demo: Path, tmp_path: Path):
    one = _fresh_run(tiny_demo, tmp_path / "omp1", "1")
    two = _fresh_run(tiny_demo, tmp_path / "omp2", "2")
    assert (one / "results.csv").read_bytes() == (two / "results.csv").read_bytes()
    assert (one / "refit.csv").read_bytes() == (two / "refit.csv").read_bytes()
    rows = read_csv(one / "results.csv")
    assert {r["threads"] for r in rows} == {"2"}
    # a debug run trains the demo's base detector into its own run dir (never the shared cache)
    checkpoints = sorted((one / "base_training").glob("npr_base_*_threads2.pth"))
    assert len(checkpoints) == 1
    assert json.loads(checkpoints[0].with_name(checkpoints[0].name + ".json").read_text())["threads"] == 2


def test_the_thread_count_keys_cpu_cache_entries(compose_cfg, tiny_demo: Path):
    import lightning as L
    import torch

    from dear_exp.cache import FeatureCache
    from dear_exp.detectors.npr import NPR
    from dear_exp.features import FeatureStore

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    store = FeatureStore(FeatureCache(tiny_demo / "unused", enabled=False), trainer, NPR(), 0)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dict(store.common)
        store._common = None
        torch.set_num_threads(2)
        assert store.common["threads"] == 2 and one["threads"] == 1
        assert {k: v for k, v in one.items() if k != "threads"} == {
            k: v for k, v in store.common.items() if k != "threads"
        }
    finally:
        torch.set_num_threads(saved)


def test_an_impossible_thread_count_is_one_line(tmp_path: Path):
    from tests.helpers import assert_one_line_error

    proc = run_cli("task=cache", "threads=0", cwd=tmp_path, threads=None)
    assert_one_line_error(proc, "threads=0 must be a whole number >= 1")
