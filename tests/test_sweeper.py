"""`hydra/sweeper=compose_once`: each multirun job's config is composed once (Hydra's basic sweeper
composes it twice), a job that differs from the last composed one in plain values only is derived
from it, equal to what Hydra composes, and a bad override still fails before the first job runs."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from dear_exp.__main__ import CONF_DIR
from hydra_plugins.dear_exp_sweeper.sweeper import ComposedOnce
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
    # Hydra's BasicSweeper: 6 (a validation pass, then the launch); the other two derived from the first
    assert len(jobs) == 1, calls
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
    assert not list((root / "logs").rglob("multirun.yaml")), "the refused sweep left its folder"


def test_an_impossible_value_stops_the_sweep_before_its_first_job(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(["-m", "+debug=fdr", "prune.alpha_low=0.1,abc"], root, monkeypatch, capfd)
    assert rc == 2 and "prune.alpha_low='abc' must be a number >= 0 and <= 1" in text, text[-2000:]
    assert "Traceback" not in text
    assert not list((root / "logs").rglob("results.csv")), "a job ran before the sweep was found impossible"
    assert not list((root / "logs").rglob("multirun.yaml")), "the refused sweep left its folder"


def _loader_and_master(tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=CONF_DIR, version_base="1.3")
    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration(
        "main",
        ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={tmp_path}", f"paths.root_dir={tmp_path}", *overrides],
        RunMode.MULTIRUN,
    )
    return loader, master


# each case: the jobs of one sweep in launch order, and how many Hydra composes from the files
CASES = {
    "alpha grid": (
        [["logger=csv", f"prune.alpha_low={lo}", f"prune.alpha_high={hi}"] for lo in (0.0, 0.1) for hi in (0.6, 0.9)],
        1,
    ),
    "types and interpolations": (
        [
            ["seed=1", "paths.log_dir=${paths.root_dir}/a", "task.bootstrap=0", "demo.texture=3.0"],
            ["seed=2", "paths.log_dir=${paths.root_dir}/b", "task.bootstrap=10", "demo.texture=1"],
            ["seed=abc", "paths.log_dir=null", "task.bootstrap=true", "demo.texture='3.0'"],
        ],
        1,
    ),
    "a config group swept with a value": (
        [[f"postprocess={p}", f"prune.alpha_low={lo}"] for p in ("clean", "robust") for lo in (0.1, 0.2)],
        2,
    ),
    "a later override decides the value": ([[f"seed={s}", "++seed=7"] for s in (1, 2)], 2),
    "dict and list values": (
        [["head.l2=[1.0]"], ["head.l2=[0.5,0.1]"], ["+task.extra={a: 1}"], ["+task.extra={a: 2}"]],
        4,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_derived_configs_equal_hydras_own(case: str, tmp_path: Path, monkeypatch):
    jobs, composed = CASES[case]
    loader, master = _loader_and_master(tmp_path)
    hydras = [loader.load_sweep_config(master, job) for job in jobs]
    calls = _counting(monkeypatch)
    ours = ComposedOnce(loader)
    derived = [ours.compose(master, job) for job in jobs]
    assert len(calls) == composed, calls
    for job, a, b in zip(jobs, hydras, derived):
        assert OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b), job  # hydra's node too: overrides, override_dirname
        assert OmegaConf.is_struct(b) and not OmegaConf.is_readonly(b.hydra)
    # and they resolve alike (paths, the demo folder, the detector's checkpoint name)
    assert _resolved(hydras[-1], tmp_path) == _resolved(derived[-1], tmp_path)
    GlobalHydra.instance().clear()


def _resolved(cfg, out: Path) -> str:
    """The task's config resolved as a job sees it (Hydra's node set, then left out; the process's
    Hydra config restored after)."""
    with open_dict(cfg):  # what the launcher and run_job set
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num, cfg.hydra.job.id = 0, "0"
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]
        return OmegaConf.to_yaml(task, resolve=True)
    finally:
        HydraConfig.instance().cfg = before


def test_an_override_hydra_refuses_is_refused_by_hydra(tmp_path: Path):
    loader, master = _loader_and_master(tmp_path)
    ours = ComposedOnce(loader)
    ours.compose(master, ["prune.alpha_low=0.1"])
    with pytest.raises(ConfigCompositionException, match="Could not override 'prune.nope'"):
        ours.compose(master, ["prune.nope=0.1"])
    GlobalHydra.instance().clear()
