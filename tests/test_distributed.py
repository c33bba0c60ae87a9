"""`trainer=ddp` on 2 CPU processes (gloo, Lightning's subprocess launcher) through the real CLI.

Feature extraction, evaluation and the head refit are sharded by dear-exp's own samplers (no
DistributedSampler padding, each rank's loss scaled to the global batch mean), so a 2-process run
must reproduce the single-process run: the same results.csv bytes, the same cache entries, and the
same head up to float rounding of the gradient all-reduce. Both runs use OMP_NUM_THREADS=1
(run_cli sets threads=1): CPU convolutions depend on the thread count at the 1e-8 level.

Each test runs the single-process job first, in a root shared by this module: that run trains
and caches the demo's base detector under .cache/demo, which the DDP run then only loads.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import read_csv, run_cli

# train_data.batch_size=25 makes the refit's global batches split unevenly over the 2 ranks
# (48 cached views -> batches of 25 and 23 -> rank slices 12/13 and 11/12), which exercises the
# sum * world / global-count loss scaling; the demo's 64 would leave one even batch.
TINY = ("demo.scale=tiny", "logger=csv", "train_data.batch_size=25")
DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
# heads: solved Newton fits (adam: none); detector: the weights' identity card (detectors/deferred.py)
CACHE_KINDS = {"images", "views", "rad", "heads", "detector"}


@pytest.fixture(scope="module")
def root(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny demo; the first single-process run trains the base into it."""
    root = tmp_path_factory.mktemp("ddp") / "root"
    shutil.copytree(tiny_demo, root)
    return root


def _run(root: Path, name: str, *overrides: str) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """One CLI run with its own output dir and feature cache below root; (output, cache, process)."""
    out, cache = root / "runs" / name, root / "caches" / name
    proc = run_cli(*TINY, *overrides, f"cache.dir={cache}", f"hydra.run.dir={out}", cwd=root)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return out, cache, proc


def _rows(out: Path) -> list[dict[str, str]]:
    return read_csv(out / "results.csv")


def _ranks(out: Path, proc: subprocess.CompletedProcess[str]) -> set[tuple[int, int]]:
    """(global rank, world size) of every rank Lightning initialised, from the task log and stderr."""
    text = (out / "dear.log").read_text() + proc.stdout + proc.stderr
    return {(int(r), int(w)) for r, _, w in re.findall(r"GLOBAL_RANK: (\d+), MEMBER: (\d+)/(\d+)", text)}


def _assert_heads_match(one: Path, ddp: Path, atol: float) -> None:
    a, b = load_file(one / "head.safetensors"), load_file(ddp / "head.safetensors")
    assert set(a) == set(b) == {"weight", "bias", "mask"}
    assert torch.equal(a["mask"], b["mask"])
    assert torch.equal(a["bias"], b["bias"]), (a["bias"], b["bias"])
    diff = (a["weight"] - b["weight"]).abs().max().item()
    assert torch.allclose(a["weight"], b["weight"], rtol=0, atol=atol), f"head weight differs by {diff:.3g}"
    assert a["weight"].abs().max() > 0, "the refit never moved the head: the comparison would be vacuous"


def _metadata(path: Path) -> dict[str, object]:
    """An entry's metadata without its creation time; `parts` (what keys the entry) parsed."""
    with safe_open(path, "pt") as f:
        meta = dict(f.metadata() or {})
    meta.pop("created", None)
    if "parts" in meta:
        meta["parts"] = json.loads(meta["parts"])
    return meta


def _assert_caches_match(one: Path, ddp: Path, kinds: set[str]) -> None:
    entries = sorted(p.relative_to(one) for p in one.rglob("*.safetensors"))
    assert entries == sorted(p.relative_to(ddp) for p in ddp.rglob("*.safetensors"))
    assert {e.parts[0] for e in entries} == kinds, entries
    for entry in entries:
        a, b = load_file(one / entry), load_file(ddp / entry)
        assert set(a) == set(b), entry
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (str(entry), key)
        assert _metadata(one / entry) == _metadata(ddp / entry), entry


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
@pytest.mark.parametrize("solver", ["newton", "adam"])
def test_ddp_two_processes_match_single_process(root: Path, solver: str):
    """newton: solved on rank 0 from the gathered rows, so the head is bit-identical; adam: the
    sharded steps' gradients are all-reduced, equal up to float rounding."""
    args = ("head=reference", "head.max_epochs=3") if solver == "adam" else ()
    one, one_cache, one_proc = _run(root, f"cached_one_{solver}", *args)
    ddp, ddp_cache, ddp_proc = _run(root, f"cached_ddp_{solver}", *args, *DDP)

    assert _ranks(one, one_proc) == set(), "the single-process run initialised a process group"
    assert _ranks(ddp, ddp_proc) == {(0, 2), (1, 2)}, "both DDP ranks must have started"
    assert len(_rows(one)) == 96  # 4 models x 3 policies x 2 settings x (3 generators + mean)
    # every column, metrics and thresholds included: no image scored twice or dropped
    if solver == "newton":
        assert (ddp / "results.csv").read_bytes() == (one / "results.csv").read_bytes()
    else:  # adam's all-reduced head differs by float rounding: so do its thresholds, written at full precision
        a_rows, b_rows = _rows(one), _rows(ddp)
        assert len(a_rows) == len(b_rows)
        for ra, rb in zip(a_rows, b_rows, strict=True):
            assert {k: v for k, v in ra.items() if k != "threshold"} == {
                k: v for k, v in rb.items() if k != "threshold"
            }
            if ra["threshold"] not in ("", "nan"):
                assert float(ra["threshold"]) == pytest.approx(float(rb["threshold"]), rel=1e-6, abs=1e-9)
    assert (ddp / "rad_scores.csv").read_bytes() == (one / "rad_scores.csv").read_bytes()
    a, b = load_file(one / "dissection.safetensors"), load_file(ddp / "dissection.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # adam: the gradient is all-reduced over 2 ranks, the weight may differ by float rounding (~2e-9)
    _assert_heads_match(one, ddp, atol=1e-6 if solver == "adam" else 0.0)
    _assert_caches_match(one_cache, ddp_cache, CACHE_KINDS - ({"heads"} if solver == "adam" else set()))


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_ddp_online_mode_runs(root: Path):
    """head.mode=online shards the training images (fresh augmentation, a backbone pass per step)."""
    args = ("head=reference", "head.mode=online", "head.max_epochs=2")
    one, _, _ = _run(root, "online_one", *args)
    ddp, _, ddp_proc = _run(root, "online_ddp", *args, *DDP)

    assert _ranks(ddp, ddp_proc) == {(0, 2), (1, 2)}
    assert len(_rows(ddp)) == len(_rows(one)) == 96
    # an image's augmentation seed follows its place in the global order, not the rank: online reproduces too
    assert (ddp / "results.csv").read_bytes() == (one / "results.csv").read_bytes()
    _assert_heads_match(one, ddp, atol=1e-6)


@pytest.mark.slow
@pytest.mark.xdist_group("cli")
def test_ddp_fragility_shards_the_images_and_matches_single_process(root: Path):
    """task=fragility under DDP: each rank measures every other image, the per-channel sums are added
    (all-gather) and cached once; the result equals the single-process run up to the order of float64
    additions; the cue attribution (rank 0) is byte-identical."""
    args = ("task=fragility", "postprocess=robust", "task.cue_probes=8", "task.bootstrap=50")
    one, one_cache, _ = _run(root, "fragility_one", *args)
    ddp, ddp_cache, ddp_proc = _run(root, "fragility_ddp", *args, *DDP)
    text = (ddp / "fragility.log").read_text() + ddp_proc.stdout + ddp_proc.stderr
    ranks = {(int(r), int(w)) for r, _, w in re.findall(r"GLOBAL_RANK: (\d+), MEMBER: (\d+)/(\d+)", text)}
    assert ranks == {(0, 2), (1, 2)}
    a, b = read_csv(one / "fragility.csv"), read_csv(ddp / "fragility.csv")
    assert len(a) == len(b) == 512 * 4
    for ra, rb in zip(a, b, strict=True):
        assert (ra["channel"], ra["setting"], ra["band"], ra["compared"]) == (
            rb["channel"],
            rb["setting"],
            rb["band"],
            rb["compared"],
        )
        fa, fb = float(ra["fragility"]), float(rb["fragility"])
        assert fa == pytest.approx(fb, rel=1e-6, abs=1e-12) or (fa != fa and fb != fb)
    assert (ddp / "cues.csv").read_bytes() == (one / "cues.csv").read_bytes()
    for cache in (one_cache, ddp_cache):
        assert len(list((cache / "fragility").glob("*.safetensors"))) == 1
    again = root / "runs" / "fragility_again"
    proc = run_cli(*TINY, *args, f"cache.dir={one_cache}", f"hydra.run.dir={again}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Cache hit  fragility" in (again / "fragility.log").read_text() + proc.stdout + proc.stderr
    assert (again / "fragility.csv").read_bytes() == (one / "fragility.csv").read_bytes()
