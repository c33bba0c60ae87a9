"""`hydra/sweeper=compose_once`: each multirun job's config is composed once (Hydra's basic sweeper
composes it twice), and a bad override still fails before the first job runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl

from tests.helpers import run_entry


def _counting(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = ConfigLoaderImpl.load_sweep_config

    def load_sweep_config(self, master_config, sweep_overrides):
        calls.append(list(sweep_overrides))
        return real(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", load_sweep_config)
    return calls


def test_each_job_is_composed_once_and_gets_its_own_config(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    calls = _counting(monkeypatch)
    rc, text = run_entry(["-m", "+debug=fdr", "prune.alpha_low=0.1,0.2,0.3"], root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    jobs = [c for c in calls if any(o.startswith("prune.alpha_low=") for o in c)]
    assert len(jobs) == 3, calls  # Hydra's BasicSweeper: 6 (a validation pass, then the launch)
    configs = sorted((root / "logs").rglob(".hydra/config.yaml"))
    assert len(configs) == 3
    lows = sorted(line for c in configs for line in c.read_text().splitlines() if line.startswith("  alpha_low:"))
    assert lows == ["  alpha_low: 0.1", "  alpha_low: 0.2", "  alpha_low: 0.3"]
    assert [p.parent.parent.name for p in configs] == ["0", "1", "2"]  # each job its own number


def test_a_bad_override_fails_before_the_first_job(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(["-m", "+debug=fdr", "postprocess=clean,nope"], root, monkeypatch, capfd)
    assert rc == 2 and "Could not find 'postprocess/nope'" in text, text[-2000:]
    assert not list((root / "logs").rglob("results.csv")), "a job ran before the sweep was found impossible"
