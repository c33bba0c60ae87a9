"""Feature cache: keys that change with what changes the numbers, compute-once, locking, task=cache."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image

from dear_exp.cache import FeatureCache, digest, files_fingerprint, module_fingerprint
from dear_exp.data.datasets import EvalImages, LabelledImages
from dear_exp.data.folders import Sample
from dear_exp.data.images import Preprocess
from dear_exp.data.postprocess import Chain
from dear_exp.errors import DearError
from dear_exp.features import data_parts
from dear_exp.refit.rows import Views
from tests.helpers import assert_one_line_error, run_cli

PRE = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), trim_odd=True)
REPO = Path(__file__).resolve().parent.parent
DAY = 86400.0


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def _images(root: Path, n: int = 3) -> list[Sample]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        path = root / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path, i % 2, path.name))
    return samples


def _tensors(value: float, n: int = 6) -> dict[str, torch.Tensor]:
    return {"pooled": torch.full((n, 2), value), "label": torch.arange(n, dtype=torch.float32)}


# ---------------------------------------------------------------------------------------------- keys


def test_digest_ignores_key_order_but_not_values():
    a = {"layer": "layer2", "how": {"seed": 0, "views": 4}, "files": "abc"}
    b = {"files": "abc", "how": {"views": 4, "seed": 0}, "layer": "layer2"}
    assert digest(a) == digest(b)
    assert digest(a) != digest({**a, "how": {"seed": 0, "views": 5}})
    assert FeatureCache("/c").path("views", a) == FeatureCache("/c").path("views", b)


def test_same_parts_same_path_and_every_changed_part_a_new_one(tmp_path: Path):
    """Each thing that changes the numbers must change the key, or a stale entry is reused."""
    net = _net()
    base = {
        "detector": module_fingerprint(net),
        "layer": "layer2",
        "precision": "32-true",
        "how": {"postprocess": "jpeg", "specs": [{"op": "jpeg", "quality": 75}], "seed": 0, "views": 4},
    }
    cache = FeatureCache(tmp_path)
    path = cache.path("views", base)
    assert path == FeatureCache(tmp_path).path("views", json.loads(json.dumps(base)))
    assert path.parent == tmp_path / "views" and path.suffix == ".safetensors"

    other = _net()
    other.load_state_dict(net.state_dict())
    assert module_fingerprint(other) == base["detector"]  # same weights, another object: same key
    with torch.no_grad():
        other[0].weight[0, 0, 0, 0] += 1e-3
    changed = [
        {**base, "detector": module_fingerprint(other)},
        {**base, "layer": "layer3"},
        {**base, "precision": "16-mixed"},
        {**base, "how": {**base["how"], "specs": [{"op": "jpeg", "quality": 76}]}},
        {**base, "how": {**base["how"], "seed": 1}},
        {**base, "how": {**base["how"], "views": 5}},
    ]
    paths = {cache.path("views", p) for p in changed}
    assert path not in paths and len(paths) == len(changed)
    assert cache.path("images", base).stem != path.stem  # the kind is part of the key too


def test_module_fingerprint_sees_buffers_and_dtype():
    net = _net()
    before = module_fingerprint(net)
    with torch.no_grad():
        net[1].running_mean[0] = 0.5  # a buffer, not a parameter: BatchNorm statistics change outputs
    after = module_fingerprint(net)
    assert after != before
    assert module_fingerprint(net.double()) != after


def test_files_fingerprint_follows_bytes_mtime_and_the_file_list(tmp_path: Path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1234")
    b.write_bytes(b"xy")
    os.utime(a, ns=(10**18, 10**18))
    first = files_fingerprint([a, b])
    assert files_fingerprint([a, b]) == first
    a.write_bytes(b"12345")  # edited: size (and mtime) change
    os.utime(a, ns=(10**18, 10**18))
    edited = files_fingerprint([a, b])
    assert edited != first
    os.utime(a, ns=(10**18 + 1, 10**18 + 1))  # rebuilt with identical bytes: mtime alone changes
    assert files_fingerprint([a, b]) != edited
    assert files_fingerprint([a]) != files_fingerprint([a, b])


def test_data_parts_key_changes_with_postprocessing_seed_views_and_files(tmp_path: Path):
    samples = _images(tmp_path / "imgs")
    cache = FeatureCache(tmp_path / "cache")

    def key(ds) -> Path:
        return cache.path("images", data_parts(ds))

    clean = key(EvalImages(samples, Chain("clean", [], seed=0), PRE))
    assert key(EvalImages(samples, Chain("clean", [], seed=0), PRE)) == clean
    jpeg75 = key(EvalImages(samples, Chain("j", [{"op": "jpeg", "quality": 75}], seed=0), PRE))
    jpeg90 = key(EvalImages(samples, Chain("j", [{"op": "jpeg", "quality": 90}], seed=0), PRE))
    reseeded = key(EvalImages(samples, Chain("j", [{"op": "jpeg", "quality": 75}], seed=1), PRE))
    assert len({clean, jpeg75, jpeg90, reseeded}) == 4

    train = LabelledImages(samples, None, PRE, seed=0)  # type: ignore[arg-type]  # Views never reads here
    views = key(Views(train, 2, seed=0))
    assert key(Views(train, 2, seed=0)) == views
    assert len({views, key(Views(train, 3, seed=0)), key(Views(train, 2, seed=1))}) == 3
    os.utime(samples[1].path, ns=(10**18, 10**18))  # an image rebuilt in place
    assert key(Views(train, 2, seed=0)) != views
    assert key(EvalImages(samples, Chain("clean", [], seed=0), PRE)) != clean


def test_a_request_reads_each_list_of_files_once_for_the_same_keys(tmp_path: Path, monkeypatch):
    from dear_exp import features

    samples = _images(tmp_path / "imgs")
    settings = [Chain("clean", [], seed=0), Chain("j", [{"op": "jpeg", "quality": 75}], seed=0)]
    datasets = [EvalImages(samples, chain, PRE) for chain in settings]
    alone = [data_parts(ds) for ds in datasets]
    fingerprinted = []
    real = features.files_fingerprint
    monkeypatch.setattr(features, "files_fingerprint", lambda files: fingerprinted.append(1) or real(files))
    seen: dict = {}
    assert [data_parts(ds, seen) for ds in datasets] == alone and len(fingerprinted) == 1
    other = list(samples)  # an equal list is another data set: read again
    assert data_parts(EvalImages(other, settings[0], PRE), seen) == alone[0] and len(fingerprinted) == 2


# ---------------------------------------------------------------------------------------------- fetch


def test_fetch_computes_once_then_hits(tmp_path: Path):
    calls = []

    def compute():
        calls.append(1)
        return {"pooled": torch.randn(5, 3).t(), "index": torch.arange(3)}  # non-contiguous on purpose

    cache = FeatureCache(tmp_path)
    first = cache.fetch("rad", {"detector": "d"}, compute, "scores")
    second = cache.fetch("rad", {"detector": "d"}, compute, "scores")
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert first.keys() == second.keys()
    assert torch.equal(first["pooled"], second["pooled"]) and second["index"].dtype == torch.int64
    again = FeatureCache(tmp_path)  # another job, same root
    assert torch.equal(again.fetch("rad", {"detector": "d"}, compute)["pooled"], first["pooled"])
    assert len(calls) == 1 and (again.hits, again.misses) == (1, 0)
    cache.fetch("rad", {"detector": "e"}, compute)
    assert len(calls) == 2
    [entry] = [e for e in cache.entries() if e.describe == "scores"]
    assert (entry.kind, entry.path) == ("rad", cache.path("rad", {"detector": "d"}))


def test_disabled_cache_always_computes_and_writes_nothing(tmp_path: Path):
    calls = []

    def compute():
        calls.append(1)
        return _tensors(len(calls))

    cache = FeatureCache(tmp_path / "c", enabled=False)
    assert cache.fetch("rad", {"a": 1}, compute)["pooled"][0, 0] == 1
    assert cache.fetch("rad", {"a": 1}, compute)["pooled"][0, 0] == 2
    assert len(calls) == 2
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*"))


def test_fetch_many_computes_only_the_misses_together(tmp_path: Path):
    cache = FeatureCache(tmp_path)
    requests = [({"set": name}, name) for name in ("a", "b", "c", "d")]
    cache.fetch("images", requests[1][0], lambda: _tensors(100.0))
    calls: list[list[int]] = []

    def compute(missing):
        calls.append(list(missing))
        return [_tensors(float(i)) for i in missing]

    out = cache.fetch_many("images", requests, compute)
    assert calls == [[0, 2, 3]]
    assert [float(o["pooled"][0, 0]) for o in out] == [0.0, 100.0, 2.0, 3.0]
    assert (cache.hits, cache.misses) == (1, 4)  # the first fetch of "b" was a miss too

    def fail(missing):
        raise AssertionError(f"nothing should be computed, asked for {missing}")

    out = cache.fetch_many("images", list(reversed(requests)), fail)
    assert [float(o["pooled"][0, 0]) for o in out] == [3.0, 2.0, 100.0, 0.0]


WORKER = r"""
import json, os, sys, time, types
from pathlib import Path
import torch
# dear_exp.distributed imports lightning (~10 s on a loaded 2-core machine); in one process its
# collectives are the identity, which is all the cache asks of it here
sys.modules["dear_exp.distributed"] = types.SimpleNamespace(rank=lambda: 0, broadcast=lambda obj: obj)
from dear_exp.cache import FeatureCache

root, marker, me, other = sys.argv[1:5]
Path(me).touch()
deadline = time.time() + 120
while not Path(other).exists() and time.time() < deadline:  # both fetch at the same moment
    time.sleep(0.01)

def compute():
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    return {"x": torch.full((4,), float(os.getpid()))}  # differs per process: shows who computed

cache = FeatureCache(root)
out = cache.fetch("views", {"detector": "abc", "layer": "layer2"}, compute, "race")
print(json.dumps({"x": out["x"].tolist(), "hits": cache.hits, "misses": cache.misses}))
"""


def test_two_processes_compute_an_entry_once(tmp_path: Path):
    """Two sweep jobs needing the same entry: one computes, the other waits on the lock and reads it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DEAR_"))}
    env["OMP_NUM_THREADS"] = "1"
    marker = tmp_path / "computed.txt"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(tmp_path / "cache"),
                str(marker),
                str(tmp_path / f"ready{i}"),
                str(tmp_path / f"ready{1 - i}"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(marker.read_text().splitlines()) == 1
    assert results[0]["x"] == results[1]["x"]
    assert float(marker.read_text().strip()) == results[0]["x"][0]
    assert sorted((r["hits"], r["misses"]) for r in results) == [(0, 1), (1, 0)]


# ---------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_entry_is_a_one_line_error_naming_task_cache(tmp_path: Path, damage: str):
    cache = FeatureCache(tmp_path)
    parts = {"detector": "d"}
    path = cache.path("images", parts)
    if damage == "garbage":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a safetensors file at all")
    else:
        cache.fetch("images", parts, lambda: _tensors(1.0, n=1000))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DearError, match="task=cache") as info:
        FeatureCache(tmp_path).fetch("images", parts, lambda: _tensors(2.0))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert [e.describe for e in cache.entries()] == ["unreadable"]  # listing still works


def test_a_failing_compute_or_write_leaves_no_entry_and_no_temp_file(tmp_path: Path, monkeypatch):
    cache = FeatureCache(tmp_path)
    parts = {"detector": "d"}
    path = cache.path("rad", parts)

    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.fetch("rad", parts, broken)
    assert not path.exists()

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("dear_exp.files.os.replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        cache.fetch("rad", parts, lambda: _tensors(1.0))
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.with_suffix(".lock").name]
    lock = FileLock(str(path.with_suffix(".lock")))
    lock.acquire(timeout=0)  # released despite the exceptions
    lock.release()
    assert cache.fetch("rad", parts, lambda: _tensors(3.0))["pooled"][0, 0] == 3.0
    assert path.is_file() and cache.misses == 3


# ---------------------------------------------------------------------------------------------- task=cache


def _populate(root: Path) -> dict[str, Path]:
    """Four 1 MiB entries: two images, one views, one rad."""
    cache = FeatureCache(root)
    paths = {}
    for kind, name in (("images", "clean"), ("images", "jpeg"), ("views", "train"), ("rad", "scores")):
        parts = {"set": name}
        cache.fetch(kind, parts, lambda: {"pooled": torch.zeros(2**18)}, describe=f"{kind} {name}")
        paths[name] = cache.path(kind, parts)
    return paths


def _run_cache_task(compose_cfg, root: Path, *overrides: str):
    from dear_exp.__main__ import run_task

    return run_task(compose_cfg("task=cache", f"cache.dir={root}", *overrides))


def test_list_prints_every_entry_and_the_total(compose_cfg, tmp_path: Path, capsys):
    root = tmp_path / "features"
    paths = _populate(root)
    result = _run_cache_task(compose_cfg, root)
    out = capsys.readouterr().out.strip().splitlines()
    assert result["entries"] == 4 and result["megabytes"] == pytest.approx(4.0, abs=0.01)
    assert out[-1] == "4 entries, 4.0 MB"
    for name, path in paths.items():
        [line] = [line for line in out if path.stem[:12] in line]
        assert line.startswith(path.parent.name) and line.endswith(f"{path.parent.name} {name}")
    _run_cache_task(compose_cfg, root, "task.kind=views")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and paths["train"].stem[:12] in out[1] and out[-1] == "1 entry, 1.0 MB"


def test_prune_by_kind_removes_only_that_kind(compose_cfg, tmp_path: Path, capsys):
    root = tmp_path / "features"
    paths = _populate(root)
    result = _run_cache_task(compose_cfg, root, "task.action=prune", "task.kind=images")
    assert result["pruned"] == 2
    assert {n for n, p in paths.items() if p.exists()} == {"train", "scores"}
    assert "pruned 2 entries" in capsys.readouterr().out


def test_prune_by_age_removes_only_entries_unused_for_longer(compose_cfg, tmp_path: Path):
    root = tmp_path / "features"
    paths = _populate(root)
    old = time.time() - 2 * DAY
    for name in ("jpeg", "scores"):
        os.utime(paths[name], (old, old))
    result = _run_cache_task(compose_cfg, root, "task.action=prune", "task.older_than_days=1")
    assert result["pruned"] == 2
    assert {n for n, p in paths.items() if p.exists()} == {"clean", "train"}


def test_a_hit_counts_as_a_use_for_pruning(compose_cfg, tmp_path: Path):
    root = tmp_path / "features"
    paths = _populate(root)
    old = time.time() - 2 * DAY
    os.utime(paths["train"], (old, old))
    FeatureCache(root).fetch("views", {"set": "train"}, lambda: pytest.fail("should be a hit"))
    assert _run_cache_task(compose_cfg, root, "task.action=prune", "task.older_than_days=1")["pruned"] == 0
    assert paths["train"].is_file()


def test_prune_all_removes_entries_and_lock_files(compose_cfg, tmp_path: Path):
    root = tmp_path / "features"
    _populate(root)
    assert list(root.glob("*/*.lock"))
    assert _run_cache_task(compose_cfg, root, "task.action=prune", "task.all=true")["pruned"] == 4
    assert not [p for p in root.rglob("*") if p.is_file()]


def test_bad_actions_are_refused(compose_cfg, tmp_path: Path):
    with pytest.raises(DearError, match="task.action=purge"):
        _run_cache_task(compose_cfg, tmp_path, "task.action=purge")
    with pytest.raises(DearError, match="0 or more"):
        _run_cache_task(compose_cfg, tmp_path, "task.action=prune", "task.older_than_days=-1")


@pytest.mark.xdist_group("cli")
def test_cli_prune_without_a_filter_is_a_one_line_error(tmp_path: Path):
    root = tmp_path / "features"
    paths = _populate(root)
    proc = run_cli("task=cache", "task.action=prune", f"cache.dir={root}", cwd=tmp_path)
    assert_one_line_error(proc, "needs a filter", "task.all=true")
    assert all(p.is_file() for p in paths.values())
