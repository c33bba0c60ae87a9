"""The project as a user installs it: a wheel, installed into a fresh venv, run from another directory.

The wheel is built from a copy of the project (so the build's egg-info and build/ folders never land in
the working tree), and the fresh venv reuses this venv's site-packages through a .pth file holding the
bare path: nothing is downloaded, and the editable install's own .pth (which would put the checkout's
src/ on sys.path) is not processed, so the dear_exp that runs is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "dear_exp" / "conf"


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    # what the build reads: src/ holds the package and its configs (conf/ at the top is only a link to them)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    dist = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            dist,
            src,
        ],
        cwd=tmp_path,
        env=os.environ.copy(),
    )
    (wheel,) = dist.glob("dear_exp-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path) -> Path:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    parents = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # bare paths, appended after the fresh venv's own site-packages: the wheel's dear_exp comes first, and
    # the .pth files inside these folders (the editable install's among them) are not read
    (site / "_test_parent_env.pth").write_text("".join(f"{p}\n" for p in sorted(parents)))
    return env_dir


@pytest.mark.slow
def test_wheel_installs_and_runs_from_anywhere(tmp_path: Path):
    wheel = _build_wheel(tmp_path)

    # every config file ships: the CLI and the API compose them from the installed package
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    shipped = {n.removeprefix("dear_exp/conf/") for n in names if n.startswith("dear_exp/conf/")}
    on_disk = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk, CONF
    assert shipped == on_disk, (
        f"missing from the wheel: {sorted(on_disk - shipped)}; extra: {sorted(shipped - on_disk)}"
    )
    # the sweeper plugin conf/hydra/default.yaml selects (Hydra finds it under the hydra_plugins namespace)
    assert "hydra_plugins/dear_exp_sweeper/sweeper.py" in names

    env_dir = _fresh_venv(tmp_path)
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "dear-exp"
    # no PYTHONPATH (it could point at the checkout), no DEAR_ROOT (paths.root_dir follows the launch directory)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DEAR_", "VIRTUAL_ENV"))}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONNOUSERSITE="1")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp_path, env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import dear_exp; print(dear_exp.__file__)"], cwd=elsewhere, env=env).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"imported {where}, not the wheel installed in {env_dir}"
    assert script.is_file(), "the dear-exp console script was not installed"

    for cmd in ([script, "--cfg", "job"], [python, "-m", "dear_exp", "--cfg", "job"]):
        out = _run(cmd, cwd=elsewhere, env=env).stdout
        assert "task:" in out and "name: dear" in out and "detector:" in out, out
        assert "root_dir: ${oc.env:DEAR_ROOT,${cwd:}}" in out, out  # --cfg job prints it unresolved

    # a real task from the installed package: list the (empty) feature cache below the launch directory
    done = _run([script, "task=cache", "threads=1"], cwd=elsewhere, env=env)
    assert "0 entries" in done.stdout + done.stderr, done.stdout + done.stderr
    assert (elsewhere / "logs" / "cache").is_dir(), "the run's output did not land below the launch directory"
