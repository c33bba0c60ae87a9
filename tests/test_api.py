"""The README's "DEAR from Python" block and "Your detector on your folder" command, run as they are
on folders built from the tiny demo data, with a random NPR saved as a released checkpoint."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import read_csv, run_cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _user_folders(tiny_demo: Path, work: Path) -> None:
    """data/{train,val}/{real,fake}, data/inpaint, data/test and checkpoints/npr/NPR.pth, as a user has them."""
    from dear_exp.detectors.npr import NPR

    demo = tiny_demo / ".cache" / "demo" / "tiny-seed0"
    links = {
        "data/train/real": "train/real/photos",
        "data/train/fake": "train/fake/gen_a",
        "data/val/real": "val/real/photos",
        "data/val/fake": "val/fake/gen_a",
        "data/inpaint": "inpaint",
        "data/test": "test/fake/gen_b",
    }
    for link, target in links.items():
        (work / link).parent.mkdir(parents=True, exist_ok=True)
        (work / link).symlink_to(demo / target)
    (work / "checkpoints/npr").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(NPR().state_dict(), work / "checkpoints/npr/NPR.pth")


@pytest.mark.slow
def test_the_readme_python_block_runs_as_written(tiny_demo: Path, tmp_path: Path):
    _user_folders(tiny_demo, tmp_path)
    block = re.search(r"```python\n(.*?)```", _section("DEAR from Python"), re.S)
    assert block, "the README lost its Python example"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "PYTEST_"))} | {"OMP_NUM_THREADS": "1"}
    code = "import torch; torch.set_num_threads(1)\n" + block.group(1)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, counts = proc.stdout.strip().splitlines()[-2:]
    assert "'solver': 'newton'" in summary and "'converged': True" in summary, summary
    n = len(list((tmp_path / "data/test").iterdir()))
    assert counts.startswith(f"{n} images;"), counts
    assert (tmp_path / ".cache/features").is_dir()  # the CLI's cache, shared


def test_the_api_refuses_an_impossible_setting():
    from dear_exp import prune_channels
    from dear_exp.errors import DearError

    with pytest.raises(DearError, match="prune.alpha_low=0.9 and prune.alpha_high=0.8 must satisfy"):
        prune_channels(torch.arange(8.0), alpha_low=0.9, alpha_high=0.8)
    with pytest.raises(DearError, match="prune.mode='middle' must be one of bilateral"):
        prune_channels(torch.arange(8.0), mode="middle")
    mask = prune_channels(torch.arange(10.0), 0.2, 0.8)
    assert mask.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]


@pytest.mark.slow
def test_the_readme_manifest_command_scores_a_folder(tiny_demo: Path, tmp_path: Path):
    _user_folders(tiny_demo, tmp_path)
    demo = tiny_demo / ".cache" / "demo" / "tiny-seed0" / "test"
    images = tmp_path / "images"
    lines = []
    for label, folder in (("real", "real/photos"), ("fake", "fake/gen_a")):
        (images / folder).parent.mkdir(parents=True, exist_ok=True)
        (images / folder).symlink_to(demo / folder)
        lines += [[f"{folder}/{p.name}", label, "gen_a"] for p in sorted((demo / folder).iterdir())]
    with open(images / "bench.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "generator"], *lines])
    section = _section("Your detector on your folder")
    assert "path,label,generator\nreal/0001.jpg,real,sdxl" in section
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    args = command.split()[3:]  # after `python -m dear_exp`
    args = [
        a.replace("/path/to/NPR.pth", str(tmp_path / "checkpoints/npr/NPR.pth")).replace("/path/to/images", str(images))
        for a in args
    ]
    proc = run_cli(*args, "logger=none", "postprocess=clean", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = next((tmp_path / "logs").rglob("results.csv"))
    rows = read_csv(results)
    assert {r["subset"] for r in rows} >= {"gen_a"} and {r["model"] for r in rows} == {"base"}


def test_the_api_drops_lightnings_tips_and_keeps_its_other_lines():
    """A notebook gets Lightning's lines without its advertisements (the CLI's filter), its logging
    otherwise untouched: in a fresh interpreter, where nothing else has installed the filter."""
    import subprocess
    import sys

    code = (
        "import logging, dear_exp.api\n"
        "r = logging.getLogger('lightning.pytorch.utilities.rank_zero')\n"
        "shown = lambda m: bool(r.filter(logging.LogRecord(r.name, logging.INFO, '', 1, m, None, None)))\n"
        "print(shown('Tip: For seamless cloud logging and experiment tracking, try installing litlogger'),"
        " shown('GPU available: False, used: False'), len(r.filters))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "True", "1"]


def test_a_missing_input_is_named_as_its_caller_names_it(tmp_path: Path):
    """The CLI's message names task.input; the API's (score_folder's argument) names images."""
    from dear_exp.api import score_folder
    from dear_exp.errors import DearError

    with pytest.raises(DearError, match=f"^images={tmp_path}/nope does not exist; give an image or a folder"):
        score_folder(None, tmp_path / "nope")  # type: ignore[arg-type]  # refused before the detector is used
