"""Every `python -m dear_exp ...` command written in experiments/*/README.md and README.md composes,
so no recipe can rot (torchgeo's lesson)."""

import itertools
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "experiments").glob("*/README.md")) + [ROOT / "README.md"]


def commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if line.startswith("python -m dear_exp"):
                    found.append((doc.relative_to(ROOT).as_posix(), line))
    return found


def expand(args: list[str]) -> list[list[str]]:
    """A multirun's comma lists become every combination, as Hydra's basic sweeper would run them."""
    choices = []
    for arg in args:
        key, _, value = arg.partition("=")
        if "," in value and not value.startswith(("[", "{")):
            choices.append([f"{key}={v}" for v in value.split(",")])
        else:
            choices.append([arg])
    return [list(c) for c in itertools.product(*choices)]


def test_docs_hold_recipes():
    docs = {d for d, _ in commands()}
    assert {"experiments/demo/README.md", "experiments/alpha_sweep/README.md", "README.md"} <= docs


@pytest.mark.parametrize(("doc", "command"), commands())
def test_recipe_composes(compose_cfg, doc, command):
    args = [a for a in shlex.split(command)[3:] if a not in ("-m", "--multirun") and not a.startswith("hydra.")]
    args = [a for a in args if not a.startswith("+sweep=")]  # sweep files only set hydra.sweeper
    args = [a for a in args if not a.startswith("--")]  # dear_exp.bench's own flags (--detectors=...)
    from dear_exp import schema

    for combination in expand(args):
        cfg = compose_cfg(*combination)
        if cfg.task.name in ("dear", "dear_grid"):
            schema.validate(cfg)  # the settings a run checks before any work (e.g. online needs adam)
        if cfg.task.name != "dear_grid":  # a grid's every pair is checked by validate
            assert cfg.prune.alpha_low < cfg.prune.alpha_high, (doc, combination)


def test_allocator_study_composes(compose_cfg, tmp_path):
    """experiments/throughput/allocators.py: its shared overrides and every variant's."""
    import importlib.util

    from dear_exp import schema

    spec = importlib.util.spec_from_file_location("allocators", ROOT / "experiments/throughput/allocators.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    assert len(study.VARIANTS) >= 6
    for overrides, _ in study.VARIANTS.values():
        cfg = compose_cfg(*study.command(tmp_path / "data", tmp_path / "corvi.pth"), *overrides)
        assert cfg.task.name == "evaluate" and list(cfg.benchmark.layout.subsets) == ["gen_a"]
        schema.validate(cfg)


@pytest.mark.slow
def test_the_job_cost_study_times_each_stage_of_a_sweep(tiny_demo, tmp_path):
    """experiments/throughput/job_costs.py on a 2 x 2 sweep of the tiny demo: a row per stage, the
    stages inside a job no longer than the job, one job call per job, a Newton step's evaluations
    at least its Hessians."""
    import os
    import shutil
    import subprocess
    import sys

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cmd = [
        sys.executable,
        str(ROOT / "experiments/throughput/job_costs.py"),
        "--grid=2",
        "demo.scale=tiny",
        "threads=1",
    ]
    env = {**os.environ, "DEAR_ROOT": str(root), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 jobs; each stage's mean over the 3 after the first:" in proc.stdout
    table = [
        line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| stage")
    ]
    rows = {cells[1].replace("·", "").strip(): float(cells[2]) for cells in table}
    calls = {cells[1].replace("·", "").strip(): float(cells[3]) for cells in table}
    job, task, dear = (
        rows["Hydra's job (config files, logging, the task)"],
        rows["the task: run_task"],
        rows["task=dear"],
    )
    assert 0 < dear <= task <= job
    assert (
        0 < rows["evaluation from cached rows"] <= dear and 0 < rows["head fits (cache hits or Newton solves)"] <= dear
    )
    assert rows["Newton solves"] > 0  # the tiny demo's later jobs solve their DEAR heads
    assert calls["Hydra's job (config files, logging, the task)"] == calls["task=dear"] == 1.0
    hessians, evaluations = calls["Hessians (formed, float32)"], calls["loss and gradient evaluations (float64)"]
    assert 0 < hessians <= evaluations  # every Newton solve evaluates at its start and after each step
    assert rows["Hessians (formed, float32)"] <= rows["Newton solves"]


def test_the_readme_config_group_table_lists_every_option():
    """README's "Config groups" table names each group's options as conf/ holds them, no more, no less
    (a new task or detector cannot go unlisted)."""
    table = (ROOT / "README.md").read_text().split("## Config groups\n", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and cells[1].strip().startswith("`"):
            options = set(re.findall(r"`([^`]+)`", cells[2]))
            for group in re.findall(r"`([^`]+)`", cells[1]):
                listed[group] = options
    conf = ROOT / "src/dear_exp/conf"
    groups = {d.name: {f.stem for f in d.glob("*.yaml")} for d in conf.iterdir() if d.is_dir()}
    assert set(listed) == set(groups)
    for group, options in groups.items():
        assert listed[group] == options, group


@pytest.mark.slow
def test_the_newton_keep_study_counts_hessians_per_setting(tiny_demo, tmp_path):
    """experiments/throughput/newton_keep.py on a 2 x 2 sweep of the tiny demo: a row per setting, and
    plain Newton (0) forms more Hessians per solve, with fewer evaluations, than the default (0.25)."""
    import os
    import shutil
    import subprocess
    import sys

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cmd = [sys.executable, str(ROOT / "experiments/throughput/newton_keep.py"), "demo.scale=tiny", "threads=1"]
    env = {**os.environ, "DEAR_ROOT": str(root), "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {
        float(cells[1]): [float(c) for c in cells[2:5]]
        for cells in (line.split("|") for line in proc.stdout.splitlines())
        if len(cells) == 6 and cells[1].strip()[:1].isdigit()
    }
    assert sorted(rows) == [0.0, 0.1, 0.25, 0.5, 0.75]
    assert rows[0.0][0] > rows[0.25][0] > 0 and rows[0.0][1] < rows[0.25][1]
