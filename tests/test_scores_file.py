"""scores.csv: every image's logit per model and post-processing setting, keyed by its path relative
to the benchmark root; recomputing a subset's metrics from it gives results.csv's numbers."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from dear_exp.data.datamodules import EvalSource
from dear_exp.data.folders import Sample
from dear_exp.evaluate import write_scores
from dear_exp.metrics import evaluate_predictions
from dear_exp.report import write_csv
from tests.helpers import read_csv

SUBSETS = {"gen_a": {"real": "redcaps"}, "gen_b": {"real": "redcaps"}}


def _constructed(tmp_path: Path):
    """Two generators against one real set, under two settings; logits with more digits than 6."""
    gen = torch.Generator().manual_seed(5)
    names = {"redcaps": 5, "gen_a": 4, "gen_b": 3}
    sources, samples, outputs = [], [], []
    for setting in ("clean", "jpeg75"):
        for name, n in names.items():
            label = 0 if name == "redcaps" else 1
            sources.append(EvalSource(name, setting, label == 0))
            folder = f"test/{'real' if label == 0 else 'fake'}/{name}"
            samples.append([Sample(tmp_path / folder / f"{i}.png", label, f"{folder}/{i}.png") for i in range(n)])
            base = torch.randn(n, generator=gen) * 3 + (1.0 if label else -1.0) + 1e-5
            outputs.append([{"base": base.float(), "dear": (base * 1.3 + 0.123456789).float()}])
    return sources, samples, outputs


def _recompute(scores: list[dict[str, str]], subset: str, setting: str, model: str):
    rows = [r for r in scores if r["setting"] == setting and subset in r["subset"].split(";")]
    y = np.array([int(r["label"]) for r in rows])
    s = np.array([float(r[f"logit_{model}"]) for r in rows])
    return y, s


def test_scores_rows_reproduce_results_csv(tmp_path: Path):
    sources, samples, outputs = _constructed(tmp_path)
    write_scores(tmp_path / "scores.csv", sources, samples, outputs, SUBSETS, ("base", "dear"))
    rows = evaluate_predictions(
        sources,
        outputs,
        SUBSETS,
        ("base", "dear"),
        policies=("logit0", "calibrated"),
        calibrated={"base": 0.4, "dear": -0.2},
    )
    write_csv(tmp_path / "results.csv", rows, {"task": "evaluate"})
    scores, results = read_csv(tmp_path / "scores.csv"), read_csv(tmp_path / "results.csv")
    assert len(scores) == 2 * (5 + 4 + 3)  # one row per image x setting, reals once
    assert list(scores[0]) == ["path", "source", "subset", "setting", "label", "logit_base", "logit_dear"]
    reals = [r for r in scores if r["source"] == "redcaps"]
    assert {r["subset"] for r in reals} == {"gen_a;gen_b"} and {r["label"] for r in reals} == {"0"}
    # the full float32 value reads back: the logit itself, not a rounded copy
    first = outputs[0][0]["dear"]
    assert [float(r["logit_dear"]) for r in scores[:5]] == first.tolist()
    assert torch.equal(torch.tensor([float(r["logit_dear"]) for r in scores[:5]], dtype=torch.float32), first)
    for res in results:
        if res["subset"].startswith("mean"):
            continue
        y, s = _recompute(scores, res["subset"], res["postprocess"], res["model"])
        assert len(y) == int(res["n_real"]) + int(res["n_fake"])
        thr = float(res["threshold"])
        assert float(res["AUC"]) == pytest.approx(100 * roc_auc_score(y, s), abs=1e-3)  # results.csv: 4 decimals
        # DEAR's rule: a real is right below the threshold, a fake above it (on it: wrong for both)
        assert float(res["R.Acc"]) == pytest.approx(100 * accuracy_score(y[y == 0], s[y == 0] >= thr), abs=1e-3)
        assert float(res["F.Acc"]) == pytest.approx(100 * accuracy_score(y[y == 1], s[y == 1] > thr), abs=1e-3)


def test_scores_csv_of_a_task_evaluate_run(compose_cfg, tiny_demo: Path, tmp_path: Path):
    """task=evaluate on the tiny demo: scores.csv beside results.csv, keys relative to the benchmark
    root, and one subset's AUC and accuracy recomputed from it equal to results.csv's."""
    from dear_exp.__main__ import run_task

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "task=evaluate", "+debug=default", "task.metrics=sidbench", root=root)
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    scores, results = read_csv(out / "scores.csv"), read_csv(out / "results.csv")
    bench = Path(cfg.benchmark.root)
    settings = {r["postprocess"] for r in results}
    assert {r["setting"] for r in scores} == settings and len(settings) == 2
    for r in scores:
        assert not Path(r["path"]).is_absolute() and (bench / r["path"]).is_file()
    keys = [(r["path"], r["setting"]) for r in scores]
    assert len(keys) == len(set(keys))
    assert {r["metrics"] for r in results} == {"sidbench"}
    row = next(
        r
        for r in results
        if r["threshold_policy"] == "logit0" and not r["subset"].startswith("mean") and r["model"] == "base"
    )
    y, s = _recompute(scores, row["subset"], row["postprocess"], "base")
    assert len(y) == int(row["n_real"]) + int(row["n_fake"]) and 0 < y.sum() < len(y)
    p = np.array(torch.tensor(s, dtype=torch.float32).sigmoid().tolist())  # SIDBench's float32 sigmoid
    assert float(row["AUC"]) == pytest.approx(100 * roc_auc_score(y, p), abs=1e-3)
    assert float(row["Acc"]) == pytest.approx(100 * accuracy_score(y, p > 0.5), abs=1e-3)
    assert "Metrics: protocol `sidbench`" in (out / "results.md").read_text()


def test_no_scores_file_when_asked_not_to(compose_cfg, tiny_demo: Path, tmp_path: Path):
    from dear_exp.__main__ import run_task

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "task=evaluate", "+debug=default", "task.scores=none", root=root)
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "results.csv").is_file() and not (out / "scores.csv").exists()
    assert {r["metrics"] for r in read_csv(out / "results.csv")} == {"dear"}
    assert not math.isnan(float(read_csv(out / "results.csv")[0]["AUC"]))


def test_scores_csv_of_a_task_dear_run(compose_cfg, tiny_demo: Path, tmp_path: Path):
    """task=dear: every model's logit (base, the controls, DEAR) per image; the calibrated rows'
    accuracies recomputed from scores.csv at results.csv's (full-precision) threshold."""
    from dear_exp.__main__ import run_task

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "+debug=default", "postprocess=clean", root=root)
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    scores, results = read_csv(out / "scores.csv"), read_csv(out / "results.csv")
    assert [c for c in scores[0] if c.startswith("logit_")] == [
        "logit_base",
        "logit_refit",
        "logit_random",
        "logit_dear",
    ]
    checked = 0
    for res in results:
        if res["threshold_policy"] != "calibrated" or res["subset"].startswith("mean"):
            continue
        y, s = _recompute(scores, res["subset"], res["postprocess"], res["model"])
        thr = float(res["threshold"])
        assert float(res["AUC"]) == pytest.approx(100 * roc_auc_score(y, s), abs=1e-3)
        assert float(res["R.Acc"]) == pytest.approx(100 * accuracy_score(y[y == 0], s[y == 0] >= thr), abs=1e-3)
        assert float(res["F.Acc"]) == pytest.approx(100 * accuracy_score(y[y == 1], s[y == 1] > thr), abs=1e-3)
        checked += 1
    assert checked >= 4
