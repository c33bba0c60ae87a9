import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from dear_exp.metrics import detection_metrics, evaluate_predictions


def test_metrics_equal_sklearn_on_the_same_logits():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, generator=gen) * 3 - 1
    fake = torch.randn(200, generator=gen) * 3 + 1
    m = detection_metrics(real, fake)
    y = np.r_[np.zeros(300), np.ones(200)]
    s = np.r_[real.numpy(), fake.numpy()]
    # torchmetrics returns float32: equal to sklearn up to float32 rounding (1e-6 of a fraction)
    assert m["AUC"] == pytest.approx(100 * roc_auc_score(y, s), abs=1e-4)
    assert m["AP"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-4)
    assert m["R.Acc"] == pytest.approx(100 * float((real < 0).float().mean()))
    assert m["F.Acc"] == pytest.approx(100 * float((fake > 0).float().mean()))
    assert m["Acc"] == pytest.approx((m["R.Acc"] + m["F.Acc"]) / 2)


def test_extreme_logits_keep_their_ranking():
    # a float32 sigmoid maps all of these to exactly 0 and AUC would collapse to 50
    real = torch.tensor([-170.0, -160.0, -150.0])
    fake = torch.tensor([-140.0, -130.0, -120.0])
    m = detection_metrics(real, fake)
    assert m["AUC"] == pytest.approx(100.0) and m["AP"] == pytest.approx(100.0)
    assert m["R.Acc"] == 100.0 and m["F.Acc"] == 0.0  # every image called real at threshold 0


def test_logit_exactly_zero_counts_as_wrong_for_both_classes():
    m = detection_metrics(torch.zeros(4), torch.zeros(4))
    assert m["R.Acc"] == 0.0 and m["F.Acc"] == 0.0


def test_each_generator_is_scored_against_its_paired_real_set():
    from dear_exp.data.datamodules import EvalSource

    sources = [
        EvalSource("laion", "clean", True),
        EvalSource("imagenet", "clean", True),
        EvalSource("ldm", "clean", False),
        EvalSource("guided", "clean", False),
    ]

    def batch(values):
        t = torch.tensor(values)
        return [{"base": t, "dear": -t}]

    outputs = [batch([-1.0, -2.0]), batch([5.0, 6.0]), batch([1.0, 2.0]), batch([3.0, 4.0])]
    subsets = {"ldm": {"fake": "x", "real": "laion"}, "guided": {"fake": "y", "real": "imagenet"}}
    rows = evaluate_predictions(sources, outputs, subsets)
    by = {(r["model"], r["subset"]): r for r in rows}
    assert by[("base", "ldm")]["AUC"] == 100.0  # ldm (1, 2) above laion (-1, -2)
    assert by[("base", "guided")]["AUC"] == 0.0  # guided (3, 4) below imagenet (5, 6)
    assert by[("base", "mean")]["AUC"] == 50.0
    assert by[("dear", "ldm")]["AUC"] == 0.0 and by[("base", "ldm")]["n_real"] == 2


def test_a_subset_row_is_kept_by_the_content_of_its_logits(monkeypatch):
    """A sweep's jobs score the same base and refit logits job after job: each row is measured once
    per process; other logits, policies or thresholds are measured anew, and a row handed out is a
    copy."""
    from dear_exp import metrics
    from dear_exp.data.datamodules import EvalSource

    sources = [EvalSource("photos", "clean", True), EvalSource("gen", "clean", False)]
    subsets = {"gen": {"real": "photos"}}
    rng = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, generator=rng, dtype=torch.float64), torch.randn(40, generator=rng) + 1

    def rows(base, dear, calibrated=0.3):
        outputs = [[{"base": base[0], "dear": dear[0]}], [{"base": base[1], "dear": dear[1]}]]
        policies = ("logit0", "calibrated", "oracle")
        thresholds = {"base": calibrated, "dear": calibrated}
        return metrics.evaluate_predictions(sources, outputs, subsets, ("base", "dear"), None, policies, thresholds)

    first = rows((real, fake), (real + 0.1, fake))
    measured = []
    real_metrics = metrics.detection_metrics
    monkeypatch.setattr(metrics, "detection_metrics", lambda *a: measured.append(1) or real_metrics(*a))
    again = rows((real, fake), (real + 0.2, fake))  # base as before, dear's logits moved
    assert len(measured) == 3  # dear's three policies; base's rows came from the first call
    of = lambda rows, model: repr([r for r in rows if r["model"] == model])  # noqa: E731  (NaN == NaN in repr)
    assert of(again, "base") == of(first, "base") and of(again, "dear") != of(first, "dear")
    moved = rows((real, fake), (real + 0.2, fake), calibrated=0.5)
    calibrated_rows = [r for r in moved if r["threshold_policy"] == "calibrated" and r["subset"] == "gen"]
    assert len(measured) == 5 and [r["threshold"] for r in calibrated_rows] == [0.5, 0.5]  # base's and dear's
    moved[0]["AUC"] = -1.0  # the caller's copy
    assert rows((real, fake), (real + 0.2, fake), calibrated=0.5)[0]["AUC"] == first[0]["AUC"]
    cold = metrics._MEASURED.copy()
    metrics._MEASURED.clear()  # measured from scratch: the same rows
    assert repr(rows((real, fake), (real + 0.2, fake))) == repr(again)
    metrics._MEASURED.update(cold)


def test_one_class_logits_leave_the_undefined_metrics_missing_not_zero():
    real = torch.tensor([-2.0, -1.0, 0.5, 3.0])
    fake = torch.tensor([1.0, -0.5, 2.0])
    empty = torch.tensor([])
    only_real = detection_metrics(real, empty)
    assert only_real["R.Acc"] == pytest.approx(100 * float((real < 0).double().mean()))  # 2 of 4
    assert all(math.isnan(only_real[k]) for k in ("AUC", "AP", "F.Acc", "Acc", "Gap"))
    only_fake = detection_metrics(empty, fake)
    assert only_fake["F.Acc"] == pytest.approx(100 * float((fake > 0).double().mean()))  # 2 of 3
    assert all(math.isnan(only_fake[k]) for k in ("AUC", "AP", "R.Acc", "Acc", "Gap"))
    assert all(math.isnan(v) for v in detection_metrics(empty, empty).values())
    both = detection_metrics(real, fake)
    assert not any(math.isnan(v) for v in both.values())
    y = np.r_[np.zeros(4), np.ones(3)]
    assert both["AUC"] == pytest.approx(100 * roc_auc_score(y, np.r_[real.numpy(), fake.numpy()]), abs=1e-4)


def test_a_nan_threshold_defines_no_accuracy_but_keeps_the_ranking():
    real, fake = torch.tensor([-2.0, -1.0, 0.5]), torch.tensor([1.0, -0.5, 2.0])
    m = detection_metrics(real, fake, float("nan"))
    assert all(math.isnan(m[k]) for k in ("R.Acc", "F.Acc", "Acc", "Gap"))
    assert m["AUC"] == detection_metrics(real, fake)["AUC"] and m["AP"] == detection_metrics(real, fake)["AP"]
