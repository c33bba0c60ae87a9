"""A console a person can read: the overrides and a summary instead of the whole config (which goes
to config.yaml, resolved), Lightning's lines once, and progress lines when the console is a file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import run_entry


def test_console_shows_overrides_and_a_summary_and_each_line_once(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(["+debug=fdr", "prune.alpha_low=0.1"], root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    assert "task=dear  overrides: threads=1 logger=none +debug=fdr prune.alpha_low=0.1" in text
    assert "prune bilateral 0.1/0.8, head newton (cached, init zeros)" in text
    assert "the whole config: " in text and "\nhead:\n" not in text, "the full config is printed on the console"
    config = next((root / "logs").rglob("config.yaml"))
    saved = yaml.safe_load(config.read_text())
    assert saved["prune"]["alpha_low"] == 0.1 and saved["threads"] == 1  # resolved: values, not ${...}
    assert "${" not in config.read_text()
    # Lightning's lines through Hydra's handler only: none in Lightning's own `INFO: ...` format
    assert "Seed set to 0" in text
    assert not [line for line in text.splitlines() if line.startswith("INFO: ")], "Lightning's own handler printed"
    assert "Tip: For seamless cloud logging" not in text


def test_progress_lines_when_the_console_is_a_file(caplog):
    from dear_exp.progress import ProgressLog

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def predict_step(self, batch, batch_idx):
            return self.layer(batch[0])

    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=3)
    for when, expected in (("always", 4), ("never", 0)):
        caplog.clear()
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[ProgressLog(0.0, when)]
        )
        with caplog.at_level(logging.INFO, logger="dear_exp.progress"):
            trainer.predict(Model(), data)
        lines = [r.getMessage() for r in caplog.records if r.name == "dear_exp.progress"]
        assert len(lines) == expected, lines
    caplog.clear()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[ProgressLog(0.0, "always")]
    )
    with caplog.at_level(logging.INFO, logger="dear_exp.progress"):
        trainer.predict(Model(), data)
    assert "extracting features: 2/4 batches (50%)" in caplog.text and "about" in caplog.text


def test_a_multirun_console_gives_one_result_line_per_job(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    """25 jobs' full tables would bury each other: each job prints its summary and one result line
    (the tables are in its results.md)."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(["-m", "+debug=fdr", "prune.alpha_low=0.1,0.2"], root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    results = [line for line in text.splitlines() if "mean AUC/F.Acc/Acc (calibrated threshold) clean: Base" in line]
    assert len(results) == 2 and "DEAR" in results[0]
    assert "post-processing: clean (threshold: logit 0)" not in text  # no full table on the console
    assert len(list((root / "logs").rglob("results.md"))) == 2
    assert not list((root / "logs").rglob("*.png")), "task.plots=auto: a multirun job draws no figures"
    # the second job reads every row from the cache: the detector's weights are never loaded
    assert text.count("its identity from the cache; the weights are read only if") == 1
    assert "Loading detector weights" not in text
    per_job = len(text.splitlines()) / 2
    assert per_job < 60, f"{per_job:.0f} console lines per job"


def test_a_multirun_job_is_named_after_the_values_it_varied():
    from dear_exp.__main__ import varied_overrides

    job = ["+experiment=demo", "prune.alpha_low=0.1", "seed=2", "+debug=fdr", "prune.alpha_high=0.9"]
    assert varied_overrides(job, {"prune.alpha_low", "prune.alpha_high"}) == "prune.alpha_low=0.1,prune.alpha_high=0.9"
    assert varied_overrides(job, set()) == ""
    assert varied_overrides(["+head.l2=[1,2]"], {"head.l2"}) == "head.l2=[1,2]"
    long = varied_overrides([f"task.runs=[{'x' * 200}]"], {"task.runs"}, limit=40)
    assert len(long) == 40 and long.endswith("...")
