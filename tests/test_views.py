"""What researchers look at: confusion counts, leaderboards, ROC/PR curves, and the policy the console
leads with, on constructed logits whose answers are known."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_curve

from dear_exp.curves import curve, operating_point, plot_curves
from dear_exp.data.datamodules import EvalSource
from dear_exp.evaluate import Evaluation
from dear_exp.leaderboard import confusion, confusion_markdown, leaderboard, leaderboard_markdown
from dear_exp.metrics import confusion_counts, detection_metrics, evaluate_predictions, gather_logits
from dear_exp.report import job_line, lead_policy, policies, print_table, write_csv
from tests.helpers import read_csv

REAL = torch.tensor([-1.0, 0.0, 0.5, 2.0])
FAKE = torch.tensor([0.0, 1.0, 3.0, 40.0])


def test_confusion_counts_follow_each_protocols_rule_on_ties():
    # dear: a logit on the threshold is wrong for both classes (real 0.0 -> FP, fake 0.0 -> FN)
    assert confusion_counts(REAL, FAKE, 0.0) == {"TN": 1, "FP": 3, "FN": 1, "TP": 3}
    # a peer: fake when sigmoid > 0.5; sigmoid(0) = 0.5 counts as real for both
    assert confusion_counts(REAL, FAKE, 0.5, "aigcdb") == {"TN": 2, "FP": 2, "FN": 1, "TP": 3}
    for protocol, thr in (("dear", 0.0), ("dear", 0.75), ("ufd", 0.5), ("sidbench", 0.7)):
        c, m = confusion_counts(REAL, FAKE, thr, protocol), detection_metrics(REAL, FAKE, thr, protocol)
        assert 100 * c["TN"] / (c["TN"] + c["FP"]) == pytest.approx(m["R.Acc"])
        assert 100 * c["TP"] / (c["TP"] + c["FN"]) == pytest.approx(m["F.Acc"])
    assert all(v != v for v in confusion_counts(REAL, FAKE, float("nan")).values())  # no threshold: NaN


def _evaluation(policies=("logit0", "calibrated", "oracle"), protocol="dear", one_class=False):
    sources = [EvalSource("r", s, True) for s in ("clean", "jpeg")]
    sources += [EvalSource(g, s, False) for g in ("a", "w") for s in ("clean", "jpeg")]
    outputs = []
    for source in sources:
        base = REAL if source.source == "r" else FAKE if source.source == "a" else FAKE - 0.6
        if source.setting == "jpeg":
            base = base - 1.0
        outputs.append([{"base": base, "dear": base * 0.5 + 0.2}])
    subsets = {"a": {"real": "r"}, "w": {"real": "r"}}
    if one_class:  # a subset with fakes only: its real source is empty
        sources += [EvalSource("none", s, True) for s in ("clean", "jpeg")] + [
            EvalSource("x", s, False) for s in ("clean", "jpeg")
        ]
        outputs += [[{"base": torch.zeros(0), "dear": torch.zeros(0)}]] * 2 + [[{"base": FAKE, "dear": FAKE}]] * 2
        subsets["x"] = {"real": "none"}
    groups = {"generators": ["a"], "wild": [s for s in subsets if s != "a"]}
    rows = evaluate_predictions(
        sources, outputs, subsets, ("base", "dear"), groups, policies, {"base": 0.7, "dear": 0.4}, protocol=protocol
    )
    return Evaluation(rows, gather_logits(sources, outputs, ("base", "dear")), subsets, ("base", "dear"), protocol)


def test_every_per_subset_row_carries_its_confusion_matrix_and_means_none(tmp_path: Path):
    ev = _evaluation()
    for r in ev.rows:
        if r["subset"].startswith("mean"):
            assert "TN" not in r
        else:
            assert r["TN"] + r["FP"] == r["n_real"] and r["FN"] + r["TP"] == r["n_fake"]
            assert 100 * r["TN"] / r["n_real"] == pytest.approx(r["R.Acc"])
    write_csv(tmp_path / "results.csv", ev.rows, {"task": "dear"})
    back = read_csv(tmp_path / "results.csv")
    assert back[0]["TN"].isdigit() and back[-1]["TN"] == ""  # integers; a mean row has none
    head, lines = confusion(ev.rows, "calibrated")
    assert head[-4:] == ["TN", "FP", "FN", "TP"] and len(lines) == 2 * 2 * 2  # subsets x settings x models
    assert "### threshold calibrated" in confusion_markdown(ev.rows)


def test_leaderboard_has_generators_down_settings_across_and_group_means_apart():
    ev = _evaluation()
    head, lines = leaderboard(ev.rows, "dear", "calibrated")
    assert head == ["subset"] + [f"{s} {k}" for s in ("clean", "jpeg") for k in ("AUC", "R.Acc", "F.Acc")]
    assert [line[0] for line in lines] == ["a", "w", "mean:generators", "mean:wild"]
    by = {
        (r["postprocess"], r["subset"]): r
        for r in ev.rows
        if r["model"] == "dear" and r["threshold_policy"] == "calibrated"
    }
    assert (
        lines[1][4] == f"{by[('jpeg', 'w')]['AUC']:.1f}" and lines[3][6] == f"{by[('jpeg', 'mean:wild')]['F.Acc']:.1f}"
    )
    md = leaderboard_markdown(ev.rows)
    # one table per policy and model, the lead policy (calibrated) first, the oracle last
    order = [md.index(f"### {m}, threshold {p}") for p in ("calibrated", "logit0", "oracle") for m in ("Base", "DEAR")]
    assert order == sorted(order)
    assert "| **mean:wild** |" in md


def test_reports_lead_with_the_calibrated_policy_where_the_run_has_it(capsys):
    ev = _evaluation()
    assert lead_policy(ev.rows) == "calibrated" and policies(ev.rows)[0] == "calibrated"
    assert lead_policy(_evaluation(("logit0", "oracle")).rows) == "logit0"
    print_table(ev.rows)
    out = capsys.readouterr().out
    assert out.index("calibrated on train_data") < out.index("means under the other threshold policies")
    assert "threshold: logit 0" not in out  # logit 0 appears in the summary of means, not as a full table
    line = job_line(ev.rows)
    mean = next(
        r
        for r in ev.rows
        if r["model"] == "dear"
        and r["threshold_policy"] == "calibrated"
        and r["postprocess"] == "clean"
        and r["subset"] == "mean:wild"
    )
    assert line.startswith("mean AUC/F.Acc/Acc (calibrated threshold)") and "clean wild: Base" in line
    assert f"DEAR {mean['AUC']:.1f}/{mean['F.Acc']:.1f}/{mean['Acc']:.1f}" in line.split("clean wild:")[1]


@pytest.mark.parametrize("protocol", ["dear", "sidbench"])
def test_curves_equal_sklearns_and_pass_through_the_operating_points(protocol):
    ev = _evaluation(protocol=protocol)
    real, fake = ev.pair("w", "jpeg", "dear")
    c = curve(real, fake, protocol)
    scores = torch.cat([real, fake]).double()
    if protocol != "dear":
        scores = torch.sigmoid(torch.cat([real, fake]).float()).double()
    y = [0] * len(real) + [1] * len(fake)
    fpr, tpr, _ = roc_curve(y, scores.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(sorted(zip(c["fpr"].tolist(), c["tpr"].tolist())), sorted(zip(fpr, tpr)))
    precision, recall, _ = precision_recall_curve(y, scores.numpy())
    np.testing.assert_allclose(
        sorted(zip(c["recall"].tolist(), c["precision"].tolist())), sorted(zip(recall, precision))
    )
    for r in ev.rows:
        if r["subset"] == "w" and r["postprocess"] == "jpeg" and r["model"] == "dear":
            x, t, _ = operating_point(r)
            assert x == pytest.approx(1 - r["R.Acc"] / 100) and t == pytest.approx(r["F.Acc"] / 100)
            # the point lies on the ROC staircase: some curve vertex at that FPR reaches that TPR
            assert any(abs(a - x) < 1e-9 and b >= t - 1e-9 for a, b in zip(fpr, tpr))


def test_curves_render_and_a_one_class_subset_has_an_empty_panel(tmp_path: Path):
    ev = _evaluation(one_class=True)
    plot_curves(tmp_path / "roc.png", tmp_path / "pr.png", ev, "constructed")
    for name in ("roc.png", "pr.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[1] > 3 * 200  # a row of panels per subset (3)
    assert operating_point({"TN": "nan", "FP": 1, "FN": 1, "TP": 1}) is None


def test_plots_setting_is_validated_and_auto_skips_only_multirun_jobs():
    from dear_exp.errors import DearError
    from dear_exp.report import plots_wanted

    assert plots_wanted("auto") and plots_wanted("always") and not plots_wanted("never")  # not in a multirun here
    with pytest.raises(DearError, match=r"task.plots='sometimes' is not a choice"):
        plots_wanted("sometimes")
