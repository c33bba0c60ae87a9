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
