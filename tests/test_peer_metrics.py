"""The peer metric protocols (task.metrics) against each peer's own formula, written out here as
their code calls numpy and scikit-learn: AIGCDetectBenchmark and CNNDetection `validate.py`,
UniversalFakeDetect `validate.py` (calculate_acc, find_best_threshold), SIDBench
`utils/evaluation_utils.py` (calculate_for_threshold, find_best_acc_threshold). Constructed logits:
ties at 0, saturated logits (a float32 sigmoid of 20, 30, 40 is 1.0), a one-class subset, a normal case."""

import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from dear_exp.data.datamodules import EvalSource
from dear_exp.errors import DearError
from dear_exp.metrics import PEERS, PROTOCOLS, detection_metrics, evaluate_predictions, peer_oracle
from dear_exp.report import markdown_table, write_csv
from dear_exp.schema import ENUMS
from tests.helpers import read_csv

GEN = torch.Generator().manual_seed(7)
CASES = {
    "normal": ((torch.randn(60, generator=GEN) * 3 - 1).tolist(), (torch.randn(50, generator=GEN) * 3 + 1.5).tolist()),
    # logit 0 and logits whose float32 sigmoid is exactly 0.5: real for the peers, wrong for both in dear
    "ties0": ([0.0, 0.0, -1.0, 1e-9, 2.0, -0.5], [0.0, 0.0, 0.0, 3e-8, 1.0, 4.0, -2.0]),
    # a float32 sigmoid saturates: 20, 30, 40 (and 25) all become 1.0 and tie
    "saturated": ([20.0, 30.0, 5.0, -3.0, 40.0, 18.0], [40.0, 20.0, 30.0, 25.0, 2.0, 16.0, 40.0]),
}
PEER = tuple(p for p in PROTOCOLS if p != "dear")


def as_peers_do(real: list[float], fake: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """y_true, y_pred as every peer's validate builds them: `model(x).sigmoid().flatten().tolist()`."""
    y_pred = torch.tensor(real + fake, dtype=torch.float32).sigmoid().flatten().tolist()
    y_true = [0] * len(real) + [1] * len(fake)
    return np.array(y_true), np.array(y_pred)


def peer_validate(y_true: np.ndarray, y_pred: np.ndarray, thres: float = 0.5) -> dict[str, float]:
    """CNNDetection / AIGCDetectBenchmark validate(), UFD calculate_acc(), SIDBench calculate_for_threshold()."""
    r_acc = accuracy_score(y_true[y_true == 0], y_pred[y_true == 0] > thres)
    f_acc = accuracy_score(y_true[y_true == 1], y_pred[y_true == 1] > thres)
    acc = accuracy_score(y_true, y_pred > thres)
    ap = average_precision_score(y_true, y_pred)
    roc_auc = roc_auc_score(y_true, y_pred)  # SIDBench only
    return {"R.Acc": 100 * r_acc, "F.Acc": 100 * f_acc, "Acc": 100 * acc, "AP": 100 * ap, "AUC": 100 * roc_auc}


def ufd_find_best_threshold(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """UniversalFakeDetect validate.py find_best_threshold, as written there."""
    N = y_true.shape[0]
    if y_pred[0 : N // 2].max() <= y_pred[N // 2 : N].min():
        return (y_pred[0 : N // 2].max() + y_pred[N // 2 : N].min()) / 2
    best_acc = 0
    best_thres = 0
    for thres in y_pred:
        temp = deepcopy(y_pred)
        temp[temp >= thres] = 1
        temp[temp < thres] = 0
        acc = (temp == y_true).sum() / N
        if acc >= best_acc:
            best_thres = thres
            best_acc = acc
    return best_thres


def sidbench_find_best_acc_threshold(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """SIDBench utils/evaluation_utils.py find_best_acc_threshold, as written there."""
    thresholds = np.linspace(0, 1, 100)
    best_accuracy = 0
    best_threshold = 0
    for threshold in thresholds:
        accuracy = accuracy_score(y_true, y_pred > threshold)
        if accuracy > best_accuracy:
            best_accuracy = accuracy
            best_threshold = threshold
    return best_threshold


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("protocol", PEER)
def test_each_peer_protocol_equals_the_peers_formula(case: str, protocol: str):
    real, fake = CASES[case]
    y_true, y_pred = as_peers_do(real, fake)
    theirs = peer_validate(y_true, y_pred)
    ours = detection_metrics(torch.tensor(real), torch.tensor(fake), protocol=protocol)
    for k in ("R.Acc", "F.Acc", "Acc", "AP", "AUC"):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-9), k
    assert ours["Gap"] == pytest.approx(theirs["R.Acc"] - theirs["F.Acc"], abs=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_the_peers_oracle_thresholds_are_their_own(case: str):
    real, fake = CASES[case]
    y_true, y_pred = as_peers_do(real, fake)
    r, f = torch.tensor(real), torch.tensor(fake)
    ufd = ufd_find_best_threshold(y_true, y_pred)
    assert peer_oracle(r, f, "ufd") == ufd
    sid = sidbench_find_best_acc_threshold(y_true, y_pred)
    assert peer_oracle(r, f, "sidbench") == sid
    # the oracle rows: chosen by the peer's search, scored by its calculate_acc / calculate_for_threshold (>)
    sources = [EvalSource("r", "clean", True), EvalSource("g", "clean", False)]
    outputs = [[{"base": r}], [{"base": f}]]
    for protocol, thres in (("ufd", ufd), ("sidbench", sid)):
        rows = evaluate_predictions(
            sources, outputs, {"g": {"real": "r"}}, ("base",), policies=("oracle",), protocol=protocol
        )
        row, theirs = rows[0], peer_validate(y_true, y_pred, thres)
        assert row["p_threshold"] == thres and row["metrics"] == protocol
        for k in ("R.Acc", "F.Acc", "Acc"):
            assert row[k] == pytest.approx(theirs[k], abs=1e-9), (protocol, k)


def test_aigcdb_and_cnndetection_have_no_oracle_ours_maximises_overall_accuracy():
    for real, fake in CASES.values():
        y_true, y_pred = as_peers_do(real, fake)
        for protocol in ("aigcdb", "cnndetection"):
            p = peer_oracle(torch.tensor(real), torch.tensor(fake), protocol)
            grid = np.unique(np.r_[y_pred, np.nextafter(y_pred, -1), -1.0, 2.0])
            best = max(accuracy_score(y_true, y_pred > t) for t in grid)
            assert accuracy_score(y_true, y_pred > p) == best
            assert not np.any(y_pred == p)  # a midpoint: no sigmoid sits on it


def test_saturated_and_npr_scale_logits_separate_the_protocols():
    real, fake = CASES["saturated"]
    r, f = torch.tensor(real), torch.tensor(fake)
    dear, peer = detection_metrics(r, f), detection_metrics(r, f, protocol="sidbench")
    y_true, y_pred = as_peers_do(real, fake)
    assert peer["AP"] == pytest.approx(100 * average_precision_score(y_true, y_pred), abs=1e-9)
    assert dear["AP"] == pytest.approx(100 * average_precision_score(y_true, np.r_[real, fake]), abs=1e-4)
    assert abs(dear["AP"] - peer["AP"]) > 1  # float32 ties at 1.0 change AP
    # NPR-scale logits: float64 ranks them apart, the float32 sigmoids are all 0 and tie
    npr_real, npr_fake = torch.tensor([-170.0, -165.0, -160.0, -150.0]), torch.tensor([-140.0, -130.0, -120.0, -125.0])
    assert detection_metrics(npr_real, npr_fake)["AP"] == pytest.approx(100.0)
    assert detection_metrics(npr_real, npr_fake, protocol="aigcdb")["AP"] == pytest.approx(50.0)
    # ties at 0: dear counts logit 0 wrong for both classes, the peers count p = 0.5 as real
    real0, fake0 = torch.tensor(CASES["ties0"][0]), torch.tensor(CASES["ties0"][1])
    assert detection_metrics(real0, fake0)["R.Acc"] == pytest.approx(100 * 2 / 6)  # -1.0, -0.5 below 0
    assert detection_metrics(real0, fake0, protocol="ufd")["R.Acc"] == pytest.approx(100 * 5 / 6)  # all but 2.0


@pytest.mark.parametrize("protocol", PEER)
def test_one_class_subset_under_a_peer_protocol(protocol: str):
    """Overall accuracy is defined on one class (it equals the class's accuracy); the peers' code
    cannot score the missing class (accuracy_score raises on no images) nor rank: NaN, never 0."""
    real = CASES["ties0"][0]
    y_true, y_pred = as_peers_do(real, [])
    m = detection_metrics(torch.tensor(real), torch.tensor([]), protocol=protocol)
    assert m["R.Acc"] == pytest.approx(100 * accuracy_score(y_true[y_true == 0], y_pred[y_true == 0] > 0.5))
    assert m["Acc"] == pytest.approx(100 * accuracy_score(y_true, y_pred > 0.5))
    assert all(math.isnan(m[k]) for k in ("F.Acc", "AUC", "AP", "Gap"))
    with pytest.raises(ValueError):
        accuracy_score(y_true[y_true == 1], y_pred[y_true == 1] > 0.5)  # the peer's f_acc has no images
    sources = [EvalSource("r", "clean", True), EvalSource("none", "clean", False)]
    rows = evaluate_predictions(
        sources,
        [[{"base": torch.tensor(real)}], [{"base": torch.tensor([])}]],
        {"onlyreal": {"real": "r", "fake_source": "none"}},
        ("base",),
        policies=("logit0", "oracle"),
        protocol=protocol,
    )
    by = {(r["threshold_policy"], r["subset"]): r for r in rows}
    assert by[("logit0", "onlyreal")]["Acc"] == pytest.approx(m["Acc"])
    assert by[("logit0", "mean")]["Acc"] == pytest.approx(m["Acc"])
    assert math.isnan(by[("oracle", "onlyreal")]["p_threshold"]) and math.isnan(by[("oracle", "onlyreal")]["Acc"])


def test_results_csv_and_md_say_which_protocol(tmp_path: Path):
    real, fake = CASES["saturated"]
    sources = [EvalSource("r", "clean", True), EvalSource("g", "clean", False)]
    outputs = [[{"base": torch.tensor(real)}], [{"base": torch.tensor(fake)}]]
    for protocol in PROTOCOLS:
        rows = evaluate_predictions(
            sources, outputs, {"g": {"real": "r"}}, ("base",), policies=("logit0", "oracle"), protocol=protocol
        )
        write_csv(tmp_path / f"{protocol}.csv", rows, {"task": "evaluate"})
        back = read_csv(tmp_path / f"{protocol}.csv")
        assert {r["metrics"] for r in back} == {protocol}
        assert ("p_threshold" in back[0]) == (protocol != "dear")
        md = markdown_table(rows)
        assert md.startswith(f"Metrics: protocol `{protocol}`")
        if protocol != "dear":
            assert PEERS[protocol].title in md and "overall" in md
            assert float(back[0]["p_threshold"]) == 0.5 and float(back[0]["threshold"]) == 0.0
        else:
            assert "balanced" in md
    with pytest.raises(ValueError, match="unknown metric protocol 'npr'"):
        evaluate_predictions(sources, outputs, {"g": {"real": "r"}}, ("base",), protocol="npr")


def test_an_unknown_protocol_is_refused_in_one_line(compose_cfg):
    from dear_exp.schema import validate

    assert ENUMS["task.metrics"] == PROTOCOLS
    for task in ("dear", "evaluate"):
        validate(compose_cfg(f"task={task}", "task.metrics=sidbench"))
        with pytest.raises(DearError) as err:
            validate(compose_cfg(f"task={task}", "task.metrics=npr"))
        line = str(err.value)
        assert (
            "\n" not in line and "task.metrics='npr' must be one of dear, aigcdb, cnndetection, ufd, sidbench" in line
        )
        with pytest.raises(DearError, match="task.scores='parquet' must be one of csv, none"):
            validate(compose_cfg(f"task={task}", "task.scores=parquet"))
