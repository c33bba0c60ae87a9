"""Detection metrics through torchmetrics, under three threshold policies side by side.

`logit0` is the reference's rule (logit > 0 means fake). `calibrated` uses the threshold that
maximises balanced accuracy on a validation set (chosen before seeing the test set). `oracle` picks
that threshold on each test subset itself: an upper bound, labelled as such, never a result.

A metric a subset cannot define is NaN, never 0: AUC, AP, Acc and Gap need reals and fakes, R.Acc
needs reals, F.Acc fakes, and the accuracies need a threshold (the oracle has none on one class).
Mean rows average each metric over the subsets that define it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryRecall, BinarySpecificity

METRICS = ("AUC", "AP", "R.Acc", "F.Acc", "Acc", "Gap")
POLICIES = ("logit0", "calibrated", "oracle")
NEEDS_BOTH = ("AUC", "AP", "Acc", "Gap")  # undefined unless a subset has reals and fakes

log = logging.getLogger(__name__)


def rank_scores(logits: torch.Tensor) -> torch.Tensor:
    """A strictly increasing map of logits into (0, 1), in float64.

    torchmetrics applies a float32 sigmoid to values outside [0, 1]; logits near -170 (NPR) would
    all become 0 and tie. AUC and AP depend only on the ranking, which this keeps.
    """
    return 0.5 + torch.atan(logits.double()) / math.pi


def detection_metrics(real_logits: torch.Tensor, fake_logits: torch.Tensor, threshold: float = 0.0) -> dict[str, float]:
    """AUC, AP, R.Acc (reals below the threshold), F.Acc (fakes above it), Acc = their mean, and the
    asymmetry Gap = R.Acc - F.Acc, in percent. A logit exactly at the threshold is wrong for both.
    What the logits cannot define is NaN: without fakes, F.Acc and every metric in NEEDS_BOTH;
    without reals, R.Acc and those; with a NaN threshold, the four accuracies."""
    n_real, n_fake = len(real_logits), len(fake_logits)
    out = dict.fromkeys(METRICS, float("nan"))
    logits = torch.cat([real_logits, fake_logits]).double()
    target = torch.cat([torch.zeros(n_real), torch.ones(n_fake)]).long()
    scores = rank_scores(logits)
    thresholded = not math.isnan(threshold)
    r_acc = BinarySpecificity()((logits >= threshold).long(), target) if n_real and thresholded else None
    f_acc = BinaryRecall()((logits > threshold).long(), target) if n_fake and thresholded else None
    if r_acc is not None:
        out["R.Acc"] = 100.0 * float(r_acc)
    if f_acc is not None:
        out["F.Acc"] = 100.0 * float(f_acc)
    if n_real and n_fake:
        out["AUC"] = 100.0 * float(BinaryAUROC()(scores, target))
        out["AP"] = 100.0 * float(BinaryAveragePrecision()(scores, target))
        if r_acc is not None and f_acc is not None:
            out["Acc"] = 100.0 * float((r_acc + f_acc) / 2)
            out["Gap"] = 100.0 * float(r_acc - f_acc)
    return out


def undefined(n_real: int, n_fake: int) -> tuple[str, ...]:
    """The metrics a subset of n_real reals and n_fake fakes cannot define (at any threshold)."""
    if n_real and n_fake:
        return ()
    one_class = ("F.Acc",) if n_real else ("R.Acc",) if n_fake else ("R.Acc", "F.Acc")
    return tuple(k for k in METRICS if k in NEEDS_BOTH or k in one_class)


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


def bootstrap_intervals(
    real: torch.Tensor, fake: torch.Tensor, threshold: float, n: int, seed: int
) -> dict[str, float]:
    """95 % percentile intervals, resampling reals and fakes separately (stratified), seeded. A metric
    the subset cannot define (one class only) gets NaN bounds."""
    gen = torch.Generator().manual_seed(seed)
    draws: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(n):
        r = real[torch.randint(len(real), (len(real),), generator=gen)] if len(real) else real
        f = fake[torch.randint(len(fake), (len(fake),), generator=gen)] if len(fake) else fake
        for k, v in detection_metrics(r, f, threshold).items():
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
) -> list[dict[str, Any]]:
    """One row per (model, threshold policy, post-processing setting, subset), plus a mean row per
    group of subsets (`mean` when there is one group, else `mean:<group>`).

    `sources[i]` (an EvalSource) describes `outputs[i]`, the predict batches of dataloader i;
    `subsets[name]` names its paired real source (`real`) and its fake source (`fake_source`,
    default the subset's own name). `calibrated[model]` is the validation-chosen threshold.
    A subset with reals only (or fakes only) is warned about once, in one line; the metrics it
    cannot define are NaN in its rows (the oracle's threshold too) and skipped by the mean rows.
    """
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown threshold policies {unknown}; choose from {', '.join(POLICIES)}")
    if "calibrated" in policies and not calibrated:
        raise ValueError("the calibrated policy needs thresholds chosen on a validation set")
    logits: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for source, batches in zip(sources, outputs):
        logits[(source.source, source.setting)] = {m: torch.cat([b[m] for b in batches]) for m in models}
    settings = list(dict.fromkeys(s.setting for s in sources))
    groups = dict(groups) if groups else {"all": list(subsets)}
    for subset, spec in subsets.items():
        n_real = len(logits[(spec["real"], settings[0])][models[0]])
        n_fake = len(logits[(spec.get("fake_source", subset), settings[0])][models[0]])
        missing = undefined(n_real, n_fake)
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
    for model in models:
        for policy in policies:
            for setting in settings:
                per_subset: dict[str, dict[str, Any]] = {}
                for subset, spec in subsets.items():
                    real = logits[(spec["real"], setting)][model]
                    fake = logits[(spec.get("fake_source", subset), setting)][model]
                    if policy == "logit0":
                        thr = 0.0
                    elif policy == "calibrated":
                        thr = float(calibrated[model])  # type: ignore[index]
                    elif len(real) and len(fake):
                        thr = best_threshold(real, fake)
                    else:  # no threshold separates one class from nothing
                        thr = float("nan")
                    row = {
                        "model": model,
                        "threshold_policy": policy,
                        "postprocess": setting,
                        "subset": subset,
                        "real": spec["real"],
                        "threshold": thr,
                        "n_real": len(real),
                        "n_fake": len(fake),
                        **detection_metrics(real, fake, thr),
                    }
                    if bootstrap:
                        row.update(bootstrap_intervals(real, fake, thr, bootstrap, seed))
                    per_subset[subset] = row
                rows += per_subset.values()
                template = {"model": model, "threshold_policy": policy, "postprocess": setting}
                for group, names in groups.items():
                    members = [per_subset[n] for n in names if n in per_subset]
                    if members:
                        rows.append(_mean_row(members, template, "mean" if len(groups) == 1 else f"mean:{group}"))
    return rows
