"""Detection metrics through torchmetrics, under three threshold policies side by side.

`logit0` is the reference's rule (logit > 0 means fake). `calibrated` uses the threshold that
maximises balanced accuracy on a validation set (chosen before seeing the test set). `oracle` picks
that threshold on each test subset itself: an upper bound, labelled as such, never a result.

A metric a subset cannot define is NaN, never 0: AUC, AP, Acc and Gap need reals and fakes, R.Acc
needs reals, F.Acc fakes, and the accuracies need a threshold (the oracle has none on one class);
under a peer protocol Acc is the overall accuracy, which one class defines too.
Mean rows average each metric over the subsets that define it.

A metric protocol (`task.metrics`) says how the numbers are computed from the logits. `dear` (the
default) is DEAR's `scripts/eval.py`: balanced accuracy at a logit threshold, a logit on the threshold
wrong for both classes, AUC and AP on the float64 logits. The peer protocols reproduce the evaluation
code of AIGCDetectBenchmark, CNNDetection, UniversalFakeDetect and SIDBench, which share one rule:
scores are float32 sigmoids (saturated: every logit above about 17 is 1.0), an image is fake when its
sigmoid is > the threshold (p = 0.5 counts as real), Acc is overall accuracy, AP (and AUC) as
scikit-learn computes them on those sigmoids. They differ in what they report and in their oracle
threshold (`PEERS`).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# the functional forms: the same computation as the metric modules, without building four modules per row
# (that cost 0.2 s of every sweep job)
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_stat_scores,
)

METRICS = ("AUC", "AP", "R.Acc", "F.Acc", "Acc", "Gap")
POLICIES = ("logit0", "calibrated", "oracle")
NEEDS_BOTH = ("AUC", "AP", "Acc", "Gap")  # undefined unless a subset has reals and fakes
PEER_NEEDS_BOTH = ("AUC", "AP", "Gap")  # overall accuracy is defined on one class too


@dataclass(frozen=True)
class Peer:
    """A peer's evaluation code, as this protocol reproduces it."""

    title: str
    code: str  # where the rule is
    reported: tuple[str, ...]  # the metrics its own tables show (the others are computed in its convention)
    oracle: str  # how its oracle threshold is chosen: ufd, sidbench, or overall (it has none: ours)


PEERS: dict[str, Peer] = {
    "aigcdb": Peer(
        "AIGCDetectBenchmark", "Ekko-zn/AIGCDetectBenchmark validate.py", ("Acc", "AP", "R.Acc", "F.Acc"), "overall"
    ),
    "cnndetection": Peer("CNNDetection", "PeterWang512/CNNDetection validate.py, eval.py", ("Acc", "AP"), "overall"),
    "ufd": Peer(
        "UniversalFakeDetect",
        "WisconsinAIVision/UniversalFakeDetect validate.py",
        ("AP", "R.Acc", "F.Acc", "Acc"),
        "ufd",
    ),
    "sidbench": Peer(
        "SIDBench", "mever-team/sidbench utils/evaluation_utils.py", ("AP", "AUC", "R.Acc", "F.Acc", "Acc"), "sidbench"
    ),
}
PROTOCOLS = ("dear", *PEERS)

log = logging.getLogger(__name__)


def rank_scores(logits: torch.Tensor) -> torch.Tensor:
    """A strictly increasing map of logits into (0, 1), in float64.

    torchmetrics applies a float32 sigmoid to values outside [0, 1]; logits near -170 (NPR) would
    all become 0 and tie. AUC and AP depend only on the ranking, which this keeps.
    """
    return 0.5 + torch.atan(logits.double()) / math.pi


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown metric protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def default_threshold(protocol: str = "dear") -> float:
    """The threshold of the `logit0` policy: logit 0, or p = 0.5 on the peers' sigmoids."""
    return 0.0 if protocol == "dear" else 0.5


def peer_scores(logits: torch.Tensor) -> torch.Tensor:
    """The peers' scores: a float32 sigmoid (`model(x).sigmoid().flatten().tolist()`), held in float64."""
    return torch.sigmoid(logits.float()).double()


def to_logit(p: float) -> float:
    """The logit of a probability threshold (for the threshold column): +-inf at 1 and 0 and beyond."""
    if math.isnan(p):
        return p
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p) - math.log1p(-p)


def to_probability(threshold: float) -> float:
    """A logit threshold as the probability the peers' rule compares sigmoids with (float64)."""
    return float(torch.sigmoid(torch.tensor(threshold, dtype=torch.float64)))


def ranking_curve_metrics(scores: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """ROC AUC and average precision in percent, as scikit-learn's roc_auc_score and
    average_precision_score compute them (tied scores are one threshold), in float64."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], target[order].double()
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tps, fps = torch.cumsum(y, 0)[last], torch.cumsum(1 - y, 0)[last]
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tps / tps[-1]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fps / fps[-1]])
    auc = float(torch.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    ap = float(torch.sum((tpr[1:] - tpr[:-1]) * tps / (tps + fps)))
    return 100.0 * auc, 100.0 * ap


def detection_metrics(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    threshold: float | None = None,
    protocol: str = "dear",
    ranking: tuple[float, float] | None = None,
) -> dict[str, float]:
    """AUC, AP, R.Acc (reals called real), F.Acc (fakes called fake), Acc and the asymmetry
    Gap = R.Acc - F.Acc, in percent, under a metric protocol; `threshold` defaults to the protocol's
    (logit 0, or p = 0.5).

    `dear`: the threshold is a logit, a logit exactly on it is wrong for both classes, Acc is the
    balanced accuracy (R.Acc + F.Acc) / 2, AUC and AP rank the float64 logits. A peer protocol: the
    threshold is a probability, an image is fake when its float32 sigmoid is > it, Acc is the overall
    accuracy, AUC and AP rank the float32 sigmoids (ties included).
    What the logits cannot define is NaN: without fakes, F.Acc and every metric in NEEDS_BOTH (for
    a peer protocol PEER_NEEDS_BOTH); without reals, R.Acc and those; with a NaN threshold, the accuracies.
    `ranking`: (AUC, AP) of these logits computed before (they do not depend on the threshold)."""
    check_protocol(protocol)
    threshold = default_threshold(protocol) if threshold is None else threshold
    if protocol != "dear":
        return _peer_metrics(real_logits, fake_logits, threshold, ranking)
    n_real, n_fake = len(real_logits), len(fake_logits)
    out = dict.fromkeys(METRICS, float("nan"))
    logits = torch.cat([real_logits, fake_logits]).double()
    target = torch.cat([torch.zeros(n_real), torch.ones(n_fake)]).long()
    if not math.isnan(threshold) and n_real + n_fake:
        # the four outcomes in one count, under the rule that a logit on the threshold is wrong for both
        # classes (a real there is called fake, a fake real); our own tensors, of the right kinds:
        # torchmetrics' argument checks (a third of the time) are skipped
        called_fake = torch.where(target == 1, logits > threshold, logits >= threshold).long()
        tp, _, tn, _, _ = binary_stat_scores(called_fake, target, validate_args=False).tolist()
        if n_real:
            out["R.Acc"] = 100.0 * tn / n_real
        if n_fake:
            out["F.Acc"] = 100.0 * tp / n_fake
    if n_real and n_fake:
        if ranking is None:
            scores = rank_scores(logits)
            ranking = (
                100.0 * float(binary_auroc(scores, target, validate_args=False)),
                100.0 * float(binary_average_precision(scores, target, validate_args=False)),
            )
        out["AUC"], out["AP"] = ranking
        if not math.isnan(threshold):
            out["Acc"] = (out["R.Acc"] + out["F.Acc"]) / 2
            out["Gap"] = out["R.Acc"] - out["F.Acc"]
    return out


def _peer_metrics(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, p: float, ranking: tuple[float, float] | None = None
) -> dict[str, float]:
    """The peers' shared rule (`accuracy_score(y, y_pred > p)` per class and overall, sklearn's AP and
    AUC on the float32 sigmoids); what one class cannot define is NaN (their code fails there)."""
    n_real, n_fake = len(real_logits), len(fake_logits)
    out = dict.fromkeys(METRICS, float("nan"))
    scores = peer_scores(torch.cat([real_logits, fake_logits]))
    target = torch.cat([torch.zeros(n_real, dtype=torch.bool), torch.ones(n_fake, dtype=torch.bool)])
    if not math.isnan(p) and n_real + n_fake:
        fake_call = scores > p
        correct = fake_call == target
        if n_real:
            out["R.Acc"] = 100.0 * float(correct[:n_real].double().mean())
        if n_fake:
            out["F.Acc"] = 100.0 * float(correct[n_real:].double().mean())
        out["Acc"] = 100.0 * float(correct.double().mean())
        if n_real and n_fake:
            out["Gap"] = out["R.Acc"] - out["F.Acc"]
    if n_real and n_fake:
        out["AUC"], out["AP"] = ranking if ranking is not None else ranking_curve_metrics(scores, target)
    return out


CONFUSION = ("TN", "FP", "FN", "TP")  # reals called real, reals called fake, fakes called real, fakes called fake


def confusion_counts(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, threshold: float, protocol: str = "dear"
) -> dict[str, float]:
    """The confusion matrix at a threshold under a metric protocol's rule (R.Acc = TN / n_real, F.Acc =
    TP / n_fake): `dear` calls a logit > the threshold fake and one below it real, so a logit on the
    threshold counts as FP or FN (wrong for both); a peer protocol calls a float32 sigmoid > p fake.
    Integers; NaN without a threshold (the oracle on one class)."""
    if math.isnan(threshold):
        return dict.fromkeys(CONFUSION, float("nan"))
    if protocol == "dear":
        tn = int((real_logits.double() < threshold).sum())
        tp = int((fake_logits.double() > threshold).sum())
    else:
        tn = int((peer_scores(real_logits) <= threshold).sum())
        tp = int((peer_scores(fake_logits) > threshold).sum())
    return {"TN": tn, "FP": len(real_logits) - tn, "FN": len(fake_logits) - tp, "TP": tp}


def undefined(n_real: int, n_fake: int, protocol: str = "dear") -> tuple[str, ...]:
    """The metrics a subset of n_real reals and n_fake fakes cannot define (at any threshold)."""
    if n_real and n_fake:
        return ()
    both = NEEDS_BOTH if protocol == "dear" else PEER_NEEDS_BOTH
    one_class = ("F.Acc",) if n_real else ("R.Acc",) if n_fake else ("R.Acc", "F.Acc", "Acc")
    return tuple(k for k in METRICS if k in both or k in one_class)


def best_threshold(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> float:
    """The threshold that maximises balanced accuracy; midway between neighbouring logits, so no
    logit sits on it. Ties go to the threshold closest to 0. One sort and a sweep: O(N log N)."""
    if not len(real_logits) or not len(fake_logits):
        raise ValueError("a threshold needs at least one real and one fake logit")
    real, fake = torch.sort(real_logits.double()).values, torch.sort(fake_logits.double()).values
    values = torch.unique(torch.cat([real, fake]))
    candidates = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    r_acc = torch.searchsorted(real, candidates, side="left").double() / len(real)  # reals below
    f_acc = 1 - torch.searchsorted(fake, candidates, side="right").double() / len(fake)  # fakes above
    bacc = (r_acc + f_acc) / 2
    winners = candidates[bacc >= bacc.max() - 1e-12]
    return float(winners[winners.abs().argmin()])


def peer_oracle(real_logits: torch.Tensor, fake_logits: torch.Tensor, protocol: str) -> float:
    """A peer protocol's oracle threshold, a probability on its float32 sigmoids (reals then fakes,
    in the sources' order, as the peers' loaders list them).

    `ufd` (find_best_threshold): when max(first half) <= min(second half) the midpoint; else the last
    sigmoid t, in list order, of the highest accuracy with `y_pred >= t`; it is then scored with `>`,
    so on saturated sigmoids it can pick 1.0 and call every fake real. `sidbench`
    (find_best_acc_threshold): the first of np.linspace(0, 1, 100) of the strictly highest overall
    accuracy with `>` (0 when none beats 0). `overall` (AIGCDetectBenchmark and CNNDetection have no
    oracle): ours, the midpoint between neighbouring sigmoids of the highest overall accuracy, ties
    closest to 0.5."""
    if not len(real_logits) or not len(fake_logits):
        raise ValueError("a threshold needs at least one real and one fake logit")
    real, fake = peer_scores(real_logits), peer_scores(fake_logits)
    real_sorted, fake_sorted = torch.sort(real).values, torch.sort(fake).values
    rule = PEERS[protocol].oracle

    def correct(candidates: torch.Tensor, at_or_above: bool) -> torch.Tensor:
        """Images called right when `score >= c` (at_or_above) or `score > c` means fake."""
        side = "left" if at_or_above else "right"
        reals_real = torch.searchsorted(real_sorted, candidates, side=side)
        fakes_fake = len(fake) - torch.searchsorted(fake_sorted, candidates, side=side)
        return reals_real + fakes_fake

    if rule == "ufd":
        y_pred = torch.cat([real, fake])
        half = len(y_pred) // 2
        if y_pred[:half].max() <= y_pred[half:].min():
            return float((y_pred[:half].max() + y_pred[half:].min()) / 2)
        hits = correct(y_pred, at_or_above=True)
        return float(y_pred[int(torch.nonzero(hits == hits.max()).flatten()[-1])])
    if rule == "sidbench":
        grid = torch.from_numpy(np.linspace(0, 1, 100))
        hits = correct(grid, at_or_above=False)
        return float(grid[int(torch.argmax(hits))])  # the first maximum; 0 (grid[0]) when all are 0
    values = torch.unique(torch.cat([real, fake]))
    candidates = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    hits = correct(candidates, at_or_above=False)
    winners = candidates[hits == hits.max()]
    return float(winners[(winners - 0.5).abs().argmin()])


def bootstrap_intervals(
    real: torch.Tensor, fake: torch.Tensor, threshold: float, n: int, seed: int, protocol: str = "dear"
) -> dict[str, float]:
    """95 % percentile intervals, resampling reals and fakes separately (stratified), seeded, under a
    metric protocol (`threshold` in its units). A metric the subset cannot define (one class only)
    gets NaN bounds."""
    gen = torch.Generator().manual_seed(seed)
    draws: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(n):
        r = real[torch.randint(len(real), (len(real),), generator=gen)] if len(real) else real
        f = fake[torch.randint(len(fake), (len(fake),), generator=gen)] if len(fake) else fake
        for k, v in detection_metrics(r, f, threshold, protocol).items():
            draws[k].append(v)
    out = {}
    for k, values in draws.items():
        t = torch.tensor(values, dtype=torch.float64)
        out[f"{k}_lo"] = float(torch.quantile(t, 0.025))
        out[f"{k}_hi"] = float(torch.quantile(t, 0.975))
    return out


def _mean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else float("nan")


def _mean_row(rows: list[dict[str, Any]], template: dict[str, Any], name: str) -> dict[str, Any]:
    """The unweighted mean over subsets (the reference's table average), each metric over the subsets
    that define it (a one-class subset's NaN AUC is skipped, not counted as 0). A real set shared by
    several subsets is counted once in n_real."""
    reals = {r["real"]: r["n_real"] for r in rows}
    row = {
        **template,
        "subset": name,
        "real": "+".join(reals),
        "threshold": float("nan"),
        **({"p_threshold": float("nan")} if "p_threshold" in rows[0] else {}),
        "n_real": sum(reals.values()),
        "n_fake": sum(r["n_fake"] for r in rows),
    }
    for k in METRICS:
        row[k] = _mean([r[k] for r in rows])
    return row


def evaluate_predictions(
    sources: Sequence[Any],
    outputs: Sequence[Sequence[Mapping[str, torch.Tensor]]],
    subsets: Mapping[str, Mapping[str, str]],
    models: tuple[str, ...] = ("base", "dear"),
    groups: Mapping[str, Sequence[str]] | None = None,
    policies: Sequence[str] = ("logit0",),
    calibrated: Mapping[str, float] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    protocol: str = "dear",
) -> list[dict[str, Any]]:
    """One row per (model, threshold policy, post-processing setting, subset), plus a mean row per
    group of subsets (`mean` when there is one group, else `mean:<group>`), under one metric
    protocol (the rows' `metrics` column).

    `sources[i]` (an EvalSource) describes `outputs[i]`, the predict batches of dataloader i;
    `subsets[name]` names its paired real source (`real`) and its fake source (`fake_source`,
    default the subset's own name). `calibrated[model]` is the validation-chosen threshold (a logit).
    The `threshold` column is a logit under every protocol; a peer protocol's rows add `p_threshold`,
    the probability its rule compares the float32 sigmoids with (0.5 for logit0, the sigmoid of the
    calibrated logit, the peer's own oracle search).
    A subset with reals only (or fakes only) is warned about once, in one line; the metrics it
    cannot define are NaN in its rows (the oracle's threshold too) and skipped by the mean rows.
    """
    check_protocol(protocol)
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown threshold policies {unknown}; choose from {', '.join(POLICIES)}")
    if "calibrated" in policies and not calibrated:
        raise ValueError("the calibrated policy needs thresholds chosen on a validation set")
    logits = gather_logits(sources, outputs, models)
    settings = list(dict.fromkeys(s.setting for s in sources))
    groups = dict(groups) if groups else {"all": list(subsets)}
    for subset, spec in subsets.items():
        n_real = len(logits[(spec["real"], settings[0])][models[0]])
        n_fake = len(logits[(spec.get("fake_source", subset), settings[0])][models[0]])
        missing = undefined(n_real, n_fake, protocol)
        if missing:
            log.warning(
                "subset %r has %d real and %d fake images: %s are undefined there (NaN in results.csv, "
                "n/a in results.md) and the mean rows skip them",
                subset,
                n_real,
                n_fake,
                ", ".join(missing),
            )
    rows: list[dict[str, Any]] = []
    ranked: dict[tuple[str, str, str], tuple[float, float]] = {}  # AUC and AP, the same under every policy
    for model in models:
        for policy in policies:
            for setting in settings:
                per_subset: dict[str, dict[str, Any]] = {}
                for subset, spec in subsets.items():
                    real = logits[(spec["real"], setting)][model]
                    fake = logits[(spec.get("fake_source", subset), setting)][model]
                    threshold = float(calibrated[model]) if policy == "calibrated" else None  # type: ignore[index]
                    measured = _subset_metrics(
                        real, fake, policy, threshold, protocol, bootstrap, seed, ranked.get((model, setting, subset))
                    )
                    row = {
                        "model": model,
                        "threshold_policy": policy,
                        "metrics": protocol,
                        "postprocess": setting,
                        "subset": subset,
                        "real": spec["real"],
                        **measured,
                    }
                    ranked[(model, setting, subset)] = (row["AUC"], row["AP"])
                    per_subset[subset] = row
                rows += per_subset.values()
                template = {"model": model, "threshold_policy": policy, "metrics": protocol, "postprocess": setting}
                for group, names in groups.items():
                    members = [per_subset[n] for n in names if n in per_subset]
                    if members:
                        rows.append(_mean_row(members, template, "mean" if len(groups) == 1 else f"mean:{group}"))
    return rows


def _subset_metrics(
    real: torch.Tensor,
    fake: torch.Tensor,
    policy: str,
    calibrated: float | None,
    protocol: str,
    bootstrap: int,
    seed: int,
    ranking: tuple[float, float] | None,
) -> dict[str, Any]:
    """One subset's row under one policy: its threshold, counts, metrics (and bootstrap intervals).
    A pure function of the logits' values and the settings, so it is kept by content (`_MEASURED`): a
    sweep's jobs score the same base and refit logits, job after job."""
    from dear_exp.cache import tensors_fingerprint  # here: schema.validate imports this module, not Lightning

    key = (
        tensors_fingerprint([real, fake]),  # their dtypes, shapes and bytes
        policy,
        calibrated,
        protocol,
        bootstrap,
        seed,
    )
    known = _MEASURED.get(key)
    if known is not None:
        _MEASURED.move_to_end(key)
        return dict(known)
    peer = protocol != "dear"
    if policy == "logit0":
        thr, p = 0.0, 0.5
    elif policy == "calibrated":
        assert calibrated is not None
        thr, p = calibrated, to_probability(calibrated)
    elif not (len(real) and len(fake)):  # no threshold separates one class from nothing
        thr = p = float("nan")
    elif peer:
        p = peer_oracle(real, fake, protocol)
        thr = to_logit(p)
    else:
        thr = best_threshold(real, fake)
    used = p if peer else thr
    row = {
        "threshold": thr,
        **({"p_threshold": p} if peer else {}),
        "n_real": len(real),
        "n_fake": len(fake),
        **detection_metrics(real, fake, used, protocol, ranking),
        **confusion_counts(real, fake, used, protocol),
    }
    if bootstrap:
        row.update(bootstrap_intervals(real, fake, used, bootstrap, seed, protocol))
    _MEASURED[key] = row
    if len(_MEASURED) > 4096:
        _MEASURED.popitem(last=False)
    return dict(row)


# subset rows by the content of their logits and settings, the most recently used last (at most 4096)
_MEASURED: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()


def gather_logits(
    sources: Sequence[Any], outputs: Sequence[Sequence[Mapping[str, torch.Tensor]]], models: Sequence[str]
) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """Per (source, setting): each model's logits, the predict batches concatenated in order."""
    return {
        (source.source, source.setting): {m: torch.cat([b[m] for b in batches]) for m in models}
        for source, batches in zip(sources, outputs)
    }
