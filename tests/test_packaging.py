"""A plain (not editable) install works from any directory: the wheel carries every config, and both
entry points compose and run a task outside the checkout."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_directory(tmp_path: Path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheel = next(wheels.glob("dear_exp-*.whl"))
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    shipped = {
        f"dear_exp/{p.relative_to(ROOT / 'src/dear_exp').as_posix()}"
        for p in (ROOT / "src/dear_exp/conf").rglob("*.yaml")
    }
    assert shipped and packed == shipped
    # a fresh venv that sees the test venv's libraries (a .pth: nothing downloaded) but not its editable dear_exp
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    fresh_site = next((venv / "lib").glob("python3*/site-packages"))
    (fresh_site / "libs.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HYDRA_", "PYTEST_", "DEAR_"))}
    where = subprocess.run(
        [str(py), "-c", "import dear_exp; print(dear_exp.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    for command in ([str(venv / "bin" / "dear-exp")], [str(py), "-m", "dear_exp"]):
        proc = subprocess.run(
            [*command, "--cfg", "job"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and "head:" in proc.stdout and "solver: newton" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run(
        [str(py), "-m", "dear_exp", "task=cache", "logger=none", "threads=1"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (elsewhere / "logs").is_dir()  # the run's folder is below the directory it was launched from
