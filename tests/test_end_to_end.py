"""The demo in-process with fast_dev_run, and the 4-job multirun through the real CLI."""

import csv
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dear_exp.__main__ import run_task
from tests.helpers import run_cli

OUTPUTS = ("results.csv", "results.md", "rad_hist.png", "rad_scores.csv", "head.safetensors", "dissection.safetensors")


def test_demo_fast_dev_run_in_process(compose_cfg, tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "+debug=fdr", root=root)
    assert not Path(cfg.detector.checkpoint).exists()
    metrics = run_task(cfg)
    assert Path(cfg.detector.checkpoint).is_file(), "the base detector was not trained and cached"
    out = Path(cfg.paths.output_dir)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "results.csv")))
    # 2 models x 2 settings x (3 generators + mean)
    assert len(rows) == 16
    assert {r["postprocess"] for r in rows} == {"clean", "jpeg75"}
    assert {r["subset"] for r in rows} == {"gen_a", "gen_b", "gen_c", "mean"}
    assert {r["model"] for r in rows} == {"base", "dear"}
    assert all(0 <= float(r["AUC"]) <= 100 for r in rows)
    assert set(metrics) >= {"dear/jpeg75/F.Acc", "base/clean/R.Acc"}
    head = load_file(out / "head.safetensors")
    assert int(head["mask"].sum()) == 512 - 2 * 102 and head["weight"].shape == (1, 512)
    assert "| **mean** |" in (out / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_four_job_multirun_each_with_its_own_wandb_run(tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    proc = run_cli("-m", "+experiment=demo", "prune.alpha_low=0.1,0.2", "prune.alpha_high=0.8,0.9",
                   "+debug=fdr", "logger=wandb", cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweeps = list((root / "logs" / "debug" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        rows = list(csv.DictReader(open(job / "results.csv")))
        seen.add((rows[0]["alpha_low"], rows[0]["alpha_high"]))
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"job {job.name}: expected its own W&B run, got {runs}"
        record = next(runs[0].glob("*.wandb")).read_bytes()
        assert sweeps[0].name.encode() in record, "W&B run not grouped by its sweep"
    assert seen == {("0.1", "0.8"), ("0.1", "0.9"), ("0.2", "0.8"), ("0.2", "0.9")}
