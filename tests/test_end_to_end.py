"""The demo in-process with fast_dev_run, and the 4-job multirun through the real CLI."""

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dear_exp.__main__ import run_task
from tests.helpers import read_csv, run_cli

OUTPUTS = ("results.csv", "results.md", "rad_hist.png", "rad_scores.csv", "head.safetensors", "dissection.safetensors")


def test_demo_fast_dev_run_in_process(compose_cfg, tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "+debug=fdr", root=root)
    assert not Path(cfg.detector.checkpoint).exists()
    metrics = run_task(cfg)
    assert Path(cfg.detector.checkpoint).is_file(), "the base detector was not trained and cached"
    out = Path(cfg.paths.output_dir)
    for name in (*OUTPUTS, "racc_facc.png", "severity.png", "roc.png", "pr.png", "scores.csv"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "results.csv")
    # 4 models (base, the refit and random controls, DEAR) x 3 threshold policies x 2 settings x (3 generators + mean)
    assert len(rows) == 96
    assert {r["threshold_policy"] for r in rows} == {"logit0", "calibrated", "oracle"}
    assert {r["postprocess"] for r in rows} == {"clean", "jpeg75"}
    assert {r["subset"] for r in rows} == {"gen_a", "gen_b", "gen_c", "mean"}
    assert {r["model"] for r in rows} == {"base", "refit", "random", "dear"}
    assert all(0 <= float(r["AUC"]) <= 100 for r in rows)
    assert set(metrics) >= {"dear/jpeg75/mean/F.Acc", "base/clean/mean/R.Acc"}
    head = load_file(out / "head.safetensors")
    assert int(head["mask"].sum()) == 512 - 2 * 102 and head["weight"].shape == (1, 512)
    md = (out / "results.md").read_text()
    assert "| **mean** |" in md and "### DEAR, threshold calibrated" in md and "## Confusion matrices" in md


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_four_job_multirun_each_with_its_own_wandb_run(tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    proc = run_cli(
        "-m",
        "+experiment=demo",
        "prune.alpha_low=0.1,0.2",
        "prune.alpha_high=0.8,0.9",
        "+debug=fdr",
        "logger=wandb",
        "task.plots=always",  # a multirun job draws no figures unless asked (tests/test_console.py)
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    sweeps = list((root / "logs" / "debug" / "multiruns").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        rows = read_csv(job / "results.csv")
        seen.add((rows[0]["alpha_low"], rows[0]["alpha_high"]))
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"job {job.name}: expected its own W&B run, got {runs}"
        record = next(runs[0].glob("*.wandb")).read_bytes()
        assert sweeps[0].name.encode() in record, "W&B run not grouped by its sweep"
        for key in (b"leaderboard/logit0/dear", b"leaderboard/calibrated/base", b"confusion/oracle", b"roc", b"pr"):
            assert key in record, f"job {job.name}: {key!r} not logged to W&B"
        assert (job / "roc.png").is_file() and (job / "racc_facc.png").is_file()
        # the run's name says what this job varied (the swept keys only, not +experiment or +debug)
        low, high = rows[0]["alpha_low"], rows[0]["alpha_high"]
        assert f"-{job.name}-prune.alpha_low={low},prune.alpha_high={high}".encode() in record
    assert seen == {("0.1", "0.8"), ("0.1", "0.9"), ("0.2", "0.8"), ("0.2", "0.9")}


def _dear_layout(demo: Path, root: Path) -> None:
    """A tiny data tree in the DEAR reference layout, filled from the embedded demo's images."""

    def copy(src: str, dst: str, pattern: str = "*") -> None:
        (root / dst).mkdir(parents=True, exist_ok=True)
        for f in sorted((demo / src).glob(pattern)):
            shutil.copy(f, root / dst / f.name)

    copy("train/real/photos", "data/train/real/coco")
    copy("val/real/photos", "data/train/real/lsun")
    copy("train/fake/gen_a", "data/train/fake/ldm")
    copy("val/fake/gen_a", "data/train/fake/aligned")
    for split in ("val",):
        copy("val/real/photos", f"data/{split}/real/coco")
        copy("val/real/photos", f"data/{split}/real/lsun")
        copy("val/fake/gen_a", f"data/{split}/fake/ldm")
        copy("val/fake/gen_a", f"data/{split}/fake/aligned")
    copy("inpaint", "data/train/fake/lsun_inpaint_sd", "*_inpaint.png")
    copy("inpaint", "data/train/fake/lsun_inpaint_mask", "*_mask.png")
    copy("test/real/photos", "data/test/real/redcaps")
    copy("test/fake/gen_c", "data/test/fake/flux")


def test_npr_flux_on_released_checkpoint_format_and_reference_layout(compose_cfg, tiny_demo: Path, tmp_path: Path):
    import torch

    from dear_exp.detectors.npr import NPR

    root = tmp_path / "user"
    _dear_layout(tiny_demo / ".cache/demo/tiny-seed0", root)
    ckpt = root / "checkpoints/npr/NPR.pth"
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"model": {f"module.{k}": v for k, v in NPR().state_dict().items()}, "total_steps": 1}, ckpt)
    cfg = compose_cfg(
        "+experiment=npr_flux",
        "+debug=limit",
        "diag_data.batch_size=4",
        "train_data.batch_size=4",
        "benchmark.batch_size=4",
        root=root,
    )
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    rows = read_csv(out / "results.csv")
    assert {r["subset"] for r in rows} == {"flux", "mean"}
    assert {r["postprocess"] for r in rows} == {"clean", "jpeg75", "webp75", "resize0.5", "jpeg50-95"}
    assert {r["benchmark"] for r in rows} == {"dear_flux"}
    flux = [r for r in rows if r["subset"] == "flux" and r["postprocess"] == "clean"]
    assert all(int(r["n_real"]) == 8 and int(r["n_fake"]) == 8 for r in flux)  # full test set, native sizes
    assert not (root / ".cache" / "demo").exists(), "npr_flux must not build the embedded demo"


def test_train_base_writes_a_released_format_checkpoint(compose_cfg, tiny_demo: Path, tmp_path: Path):
    import torch

    from dear_exp.detectors.checkpoint import load_strict, read_state_dict
    from dear_exp.detectors.npr import NPR

    target = tmp_path / "out" / "trained.pth"  # a debug run writes below its run dir only (compose_cfg: tmp_path/out)
    cfg = compose_cfg("task=train_base", "+debug=fdr", f"detector.checkpoint={target}", root=tiny_demo)
    run_task(cfg)
    raw = torch.load(target, weights_only=True)
    assert set(raw) == {"model"}
    load_strict(NPR(), read_state_dict(target), str(target))


def test_evaluate_scores_the_released_detector_and_a_saved_head(compose_cfg, tiny_demo: Path, tmp_path: Path):
    """task=evaluate reproduces, without training, the base rows and the DEAR rows of a dear run."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "+debug=default", "postprocess=clean", root=root)
    run_task(cfg)
    dear_rows = {
        (r["model"], r["threshold_policy"], r["subset"]): r
        for r in read_csv(Path(cfg.paths.output_dir) / "results.csv")
        if r["threshold_policy"] != "calibrated" and r["model"] in ("base", "dear")
    }
    head = Path(cfg.paths.output_dir) / "head.safetensors"
    cfg = compose_cfg(
        "+experiment=demo", "task=evaluate", f"task.head={head}", "+debug=default", "postprocess=clean", root=root
    )
    cfg.paths.output_dir = str(tmp_path / "eval")
    run_task(cfg)
    rows = {(r["model"], r["threshold_policy"], r["subset"]): r for r in read_csv(tmp_path / "eval" / "results.csv")}
    assert set(rows) == set(dear_rows)
    for key, row in rows.items():
        for metric in ("AUC", "AP", "R.Acc", "F.Acc"):
            assert row[metric] == dear_rows[key][metric], (key, metric)
    assert {r["task"] for r in rows.values()} == {"evaluate"}
