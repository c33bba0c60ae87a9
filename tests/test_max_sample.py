"""benchmark.max_sample: a seeded subsample per source, independent of the listing order."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from dear_exp.data.benchmarks.base import BenchmarkIndex
from dear_exp.data.folders import Sample
from tests.helpers import read_csv, run_entry


def _index(reverse: bool = False) -> BenchmarkIndex:
    def source(name: str, label: int, n: int) -> list[Sample]:
        samples = [Sample(Path(f"/x/{name}/{i:03d}.png"), label, f"{name}/{i:03d}.png") for i in range(n)]
        return samples[::-1] if reverse else samples

    return BenchmarkIndex(
        "t",
        Path("/x"),
        {"real": source("real", 0, 40), "fake": source("fake", 1, 7)},
        {"s": {"real": "real", "fake_source": "fake"}},
        {},
    )


def test_subsample_is_seeded_order_free_and_at_most_n_per_source():
    one = _index().subsample(10, seed=0)
    assert [len(v) for v in one.sources.values()] == [10, 7]  # a source smaller than n is kept whole
    keys = [s.key for s in one.sources["real"]]
    assert keys == sorted(keys)  # kept in key order
    again = _index(reverse=True).subsample(10, seed=0)
    assert {s.key for s in again.sources["real"]} == set(keys)  # the listing order does not matter
    other = _index().subsample(10, seed=1)
    assert {s.key for s in other.sources["real"]} != set(keys)
    assert _index().subsample(None, seed=0) == _index()
    assert dataclasses.replace(_index()).subsample(40, 0).sources["real"] == _index().sources["real"]


def test_max_sample_through_a_run(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(["+debug=default", "benchmark.max_sample=3"], root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    assert "benchmark.max_sample=3: 12 of 32 images kept (at most 3 per source, seeded by seed=0)" in text
    rows = read_csv(next((root / "logs").rglob("results.csv")))
    assert {(r["n_real"], r["n_fake"]) for r in rows if r["subset"] != "mean"} == {("3", "3")}
    assert {r["max_sample"] for r in rows} == {"3"}  # in the run's identity
    rc, text = run_entry(["+debug=default", "benchmark.max_sample=0"], root, monkeypatch, capfd)
    assert rc == 2 and "benchmark.max_sample=0 must be a whole number >= 1" in text
