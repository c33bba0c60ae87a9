"""Detection metrics through torchmetrics, at logit threshold 0 (the reference's rule)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryRecall, BinarySpecificity

METRICS = ("AUC", "AP", "R.Acc", "F.Acc", "Acc")


def rank_scores(logits: torch.Tensor) -> torch.Tensor:
    """A strictly increasing map of logits into (0, 1), in float64.

    torchmetrics applies a float32 sigmoid to values outside [0, 1]; logits near -170 (NPR) would
    all become 0 and tie. AUC and AP depend only on the ranking, which this keeps.
    """
    return 0.5 + torch.atan(logits.double()) / math.pi


def detection_metrics(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, float]:
    """AUC, AP, R.Acc (reals with logit < 0), F.Acc (fakes with logit > 0), Acc, in percent."""
    logits = torch.cat([real_logits, fake_logits]).double()
    target = torch.cat([torch.zeros(len(real_logits)), torch.ones(len(fake_logits))]).long()
    scores = rank_scores(logits)
    f_acc = BinaryRecall()((logits > 0).long(), target)
    r_acc = BinarySpecificity()((logits >= 0).long(), target)
    out = {
        "AUC": BinaryAUROC()(scores, target),
        "AP": BinaryAveragePrecision()(scores, target),
        "R.Acc": r_acc,
        "F.Acc": f_acc,
        "Acc": (r_acc + f_acc) / 2,
    }
    return {k: 100.0 * float(v) for k, v in out.items()}


def evaluate_predictions(
    sources: list[Any],
    outputs: list[list[dict[str, torch.Tensor]]],
    subsets: dict[str, dict[str, str]],
    models: tuple[str, ...] = ("base", "dear"),
) -> list[dict[str, Any]]:
    """One row per (model, post-processing setting, fake subset), plus the mean over subsets.

    `sources[i]` (an EvalSource) describes `outputs[i]`, the predict batches of dataloader i;
    `subsets[name]` names its paired real source (`real`) and its fake source (`fake_source`,
    default the subset's own name).
    """
    logits: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for source, batches in zip(sources, outputs):
        logits[(source.source, source.setting)] = {m: torch.cat([b[m] for b in batches]) for m in models}
    settings = list(dict.fromkeys(s.setting for s in sources))
    rows: list[dict[str, Any]] = []
    for model in models:
        for setting in settings:
            per_subset = []
            for subset, spec in subsets.items():
                real = logits[(spec["real"], setting)][model]
                fake = logits[(spec.get("fake_source", subset), setting)][model]
                row = {"model": model, "postprocess": setting, "subset": subset, "real": spec["real"],
                       "n_real": len(real), "n_fake": len(fake), **detection_metrics(real, fake)}
                per_subset.append(row)
            rows += per_subset
            mean: dict[str, Any] = defaultdict(float)
            for row in per_subset:
                for k in METRICS:
                    mean[k] += row[k] / len(per_subset)
            rows.append({"model": model, "postprocess": setting, "subset": "mean", "real": "",
                         "n_real": sum(r["n_real"] for r in per_subset),
                         "n_fake": sum(r["n_fake"] for r in per_subset), **mean})
    return rows
