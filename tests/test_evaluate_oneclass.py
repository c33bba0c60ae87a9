"""A subset with only reals, or only fakes, beside a normal one (constructed logits): the metrics it
cannot define are missing (NaN in results.csv, n/a in results.md), never 0, with a one-line warning
naming the subset; the mean rows average each metric over the subsets that define it."""

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from dear_exp.data.datamodules import EvalSource
from dear_exp.metrics import METRICS, evaluate_predictions
from dear_exp.report import compare_rows, markdown_table, plot_racc_facc, write_csv

REAL = [-2.0, -1.0, 0.5, 3.0]  # the normal subset's reals (and the real-only subset's): 2 of 4 below 0
FAKE = [1.0, -0.5, 2.0]  # the normal subset's fakes: 2 of 3 above 0
ONLY_FAKE = [4.0, -3.0, 0.2, 0.1, -0.1]  # a subset without reals: 3 of 5 above 0
SUBSETS = {
    "normal": {"real": "redcaps"},
    "onlyreal": {"real": "redcaps", "fake_source": "nofakes"},
    "onlyfake": {"real": "noreals"},
}
GROUPS = {"generators": ["normal", "onlyreal"], "wild": ["onlyfake"]}
BOTH = ("AUC", "AP", "Acc", "Gap")


def _rows(**kw):
    sources = [
        EvalSource("redcaps", "clean", True),
        EvalSource("noreals", "clean", True),
        EvalSource("normal", "clean", False),
        EvalSource("nofakes", "clean", False),
        EvalSource("onlyfake", "clean", False),
    ]
    batch = lambda t: [{"base": torch.tensor(t), "dear": torch.tensor(t) + 1}]  # noqa: E731
    outputs = [batch(REAL), batch([]), batch(FAKE), batch([]), batch(ONLY_FAKE)]
    return evaluate_predictions(sources, outputs, SUBSETS, groups=GROUPS, **kw)


def _by(rows):
    return {(r["model"], r["threshold_policy"], r["subset"]): r for r in rows}


def _pct(values, below: bool) -> float:
    t = torch.tensor(values)
    return 100 * float(((t < 0) if below else (t > 0)).double().mean())


def test_one_class_subsets_are_missing_with_a_one_line_warning_each(caplog):
    with caplog.at_level(logging.WARNING, logger="dear_exp.metrics"):
        rows = _rows(policies=("logit0", "calibrated", "oracle"), calibrated={"base": 0.0, "dear": 1.0})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)  # once per subset, not per model/policy
    assert "'onlyreal' has 4 real and 0 fake" in warnings[0] and "AUC, AP, F.Acc, Acc, Gap" in warnings[0]
    assert "'onlyfake' has 0 real and 5 fake" in warnings[1] and "AUC, AP, R.Acc, Acc, Gap" in warnings[1]
    assert not any("'normal'" in w for w in warnings)
    by = _by(rows)
    for model, shift in (("base", 0.0), ("dear", 1.0)):
        real = [v + shift for v in REAL]
        fake = [v + shift for v in FAKE]
        normal = by[(model, "logit0", "normal")]
        y, s = np.r_[np.zeros(len(real)), np.ones(len(fake))], np.r_[real, fake]
        assert normal["AUC"] == pytest.approx(100 * roc_auc_score(y, s), abs=1e-4)
        assert normal["AP"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-4)
        assert normal["R.Acc"] == pytest.approx(_pct(real, below=True))
        only_real = by[(model, "logit0", "onlyreal")]
        assert only_real["n_real"] == 4 and only_real["n_fake"] == 0
        assert only_real["R.Acc"] == pytest.approx(_pct(real, below=True))
        assert all(math.isnan(only_real[k]) for k in (*BOTH, "F.Acc"))
        only_fake = by[(model, "logit0", "onlyfake")]
        assert only_fake["F.Acc"] == pytest.approx(_pct([v + shift for v in ONLY_FAKE], below=False))
        assert all(math.isnan(only_fake[k]) for k in (*BOTH, "R.Acc"))
    calibrated = by[("dear", "calibrated", "onlyreal")]  # a fixed threshold still defines R.Acc
    assert calibrated["threshold"] == 1.0 and calibrated["R.Acc"] == pytest.approx(_pct(REAL, below=True))
    for subset in ("onlyreal", "onlyfake"):  # the oracle has no threshold to choose on one class
        oracle = by[("base", "oracle", subset)]
        assert math.isnan(oracle["threshold"]) and all(math.isnan(oracle[k]) for k in METRICS)
    assert not any(math.isnan(by[("base", "oracle", "normal")][k]) for k in METRICS)


def test_means_skip_the_missing_values():
    by = _by(_rows())
    normal, only_real, only_fake = (by[("base", "logit0", s)] for s in ("normal", "onlyreal", "onlyfake"))
    gens = by[("base", "logit0", "mean:generators")]
    assert gens["AUC"] == normal["AUC"] and gens["AP"] == normal["AP"]  # not (normal + 0) / 2
    assert gens["R.Acc"] == pytest.approx((normal["R.Acc"] + only_real["R.Acc"]) / 2)
    assert gens["F.Acc"] == normal["F.Acc"]
    wild = by[("base", "logit0", "mean:wild")]
    assert wild["F.Acc"] == only_fake["F.Acc"]
    assert all(math.isnan(wild[k]) for k in (*BOTH, "R.Acc"))  # a mean of nothing is missing too
    assert gens["n_real"] == 4 and gens["n_fake"] == 3 and wild["n_fake"] == 5


def test_bootstrap_intervals_of_a_one_class_subset():
    by = _by(_rows(bootstrap=30))
    only_real = by[("base", "logit0", "onlyreal")]
    assert math.isnan(only_real["AUC_lo"]) and math.isnan(only_real["F.Acc_hi"])
    assert 0 <= only_real["R.Acc_lo"] <= only_real["R.Acc"] <= only_real["R.Acc_hi"] <= 100
    assert not math.isnan(by[("base", "logit0", "normal")]["AUC_lo"])


def test_results_csv_has_nan_and_results_md_has_na_never_zero(tmp_path: Path):
    rows = _rows(policies=("logit0", "oracle"))
    write_csv(tmp_path / "results.csv", rows, {"task": "evaluate"})
    with open(tmp_path / "results.csv", newline="") as f:
        back = {(r["model"], r["threshold_policy"], r["subset"]): r for r in csv.DictReader(f)}
    only_real = back[("base", "logit0", "onlyreal")]
    assert [only_real[k] for k in ("AUC", "AP", "F.Acc")] == ["nan"] * 3
    assert math.isnan(float(only_real["AUC"])) and float(only_real["R.Acc"]) == pytest.approx(50.0)
    assert float(back[("base", "logit0", "mean:generators")]["AUC"]) == float(back[("base", "logit0", "normal")]["AUC"])

    md = markdown_table(rows)
    table = md.split("### clean, threshold logit0")[1].split("###")[0]
    cells = {
        tuple(c.strip("* ") for c in line.strip("|").split("|"))[:2]: [
            c.strip("* ") for c in line.strip("|").split("|")
        ][2:]
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line and "subset" not in line
    }
    assert cells[("onlyreal", "Base")] == ["n/a", "n/a", "50.0", "n/a", "n/a", "n/a"]
    assert cells[("onlyfake", "Base")] == ["n/a", "n/a", "n/a", "60.0", "n/a", "n/a"]
    assert "n/a" not in cells[("normal", "Base")]
    assert "onlyreal: AUC, AP, F.Acc, Acc, Gap; onlyfake: AUC, AP, R.Acc, Acc, Gap" in table
    assert "average each metric over the subsets that define it" in table

    parsed = [{**r, **{k: float(r[k]) for k in METRICS}} for r in back.values()]
    plot_racc_facc(tmp_path / "racc.png", parsed, "one-class subsets")  # no point, label or arrow at NaN
    assert (tmp_path / "racc.png").stat().st_size > 0


def test_compare_shows_missing_means_and_never_marks_them_best():
    mean = {"model": "base", "threshold_policy": "logit0", "postprocess": "clean", "subset": "mean:wild"}
    a = [{**mean, "AUC": "nan", "AP": "nan", "R.Acc": "nan", "F.Acc": "60.0", "Acc": "nan", "Gap": "nan"}]
    b = [{**mean, "AUC": "80.0", "AP": "70.0", "R.Acc": "nan", "F.Acc": "40.0", "Acc": "nan", "Gap": "nan"}]
    head, lines, best = compare_rows([("run a", a), ("run b", b)])
    auc, r_acc, f_acc = head.index("AUC"), head.index("R.Acc"), head.index("F.Acc")
    assert lines[0][auc] == "n/a" and lines[1][auc] == "80.0"
    assert (1, auc) in best and (0, auc) not in best and (0, f_acc) in best
    assert not any(j == r_acc for _, j in best)  # no run defines R.Acc: none is best
