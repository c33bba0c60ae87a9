"""ROC and precision-recall curves per subset, setting and model: what a single operating point hides
(where each threshold policy sits on the curve, and what another threshold would give)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

from dear_exp.evaluate import Evaluation
from dear_exp.metrics import peer_scores, rank_scores
from dear_exp.report import COLOURS, MODEL_NAMES, figure

# the operating points marked on the curves: the policies a reader compares (oracle is an upper bound)
MARKED = {"logit0": "o", "calibrated": "s"}


def curve(real: torch.Tensor, fake: torch.Tensor, protocol: str) -> dict[str, torch.Tensor]:
    """ROC (fpr, tpr) and PR (precision, recall) of one subset's logits, through torchmetrics, on the
    scores the protocol ranks (float64 logits for dear, float32 sigmoids for a peer: their ties too)."""
    scores = rank_scores(torch.cat([real, fake])) if protocol == "dear" else peer_scores(torch.cat([real, fake]))
    target = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))]).long()
    fpr, tpr, _ = binary_roc(scores, target)
    precision, recall, _ = binary_precision_recall_curve(scores, target)
    return {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}


def operating_point(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """(FPR, TPR, precision) of a results row's threshold, from its confusion counts; None when a count
    is missing (no threshold, or a row written before the counts were columns)."""
    try:
        tn, fp, fn, tp = (float(row[k]) for k in ("TN", "FP", "FN", "TP"))
    except (KeyError, TypeError, ValueError):
        return None
    if any(math.isnan(v) for v in (tn, fp, fn, tp)) or not (tn + fp) or not (tp + fn):
        return None
    return fp / (tn + fp), tp / (tp + fn), tp / (tp + fp) if tp + fp else 1.0


def plot_curves(roc_path: Path, pr_path: Path, evaluation: Evaluation, title: str) -> None:
    """roc.png and pr.png: a panel per subset (rows) and post-processing setting (columns), a line per
    model, the logit-0 (circle) and calibrated (square) operating points marked. A subset with one class
    has no curve: its panel says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluation.rows
    subsets = list(evaluation.subsets)
    settings = list(dict.fromkeys(r["postprocess"] for r in rows))
    points = {
        (r["model"], r["threshold_policy"], r["postprocess"], r["subset"]): r
        for r in rows
        if r.get("threshold_policy") in MARKED
    }
    figures = {
        kind: plt.subplots(
            len(subsets), len(settings), figsize=(2.6 * len(settings), 2.4 * len(subsets)), dpi=100, squeeze=False
        )
        for kind in ("roc", "pr")
    }
    for i, subset in enumerate(subsets):
        for j, setting in enumerate(settings):
            for kind, (_, axes) in figures.items():
                ax = axes[i][j]
                ax.set_title(f"{subset}, {setting}", fontsize=8)
                ax.set_xlim(-0.02, 1.02)
                ax.set_ylim(-0.02, 1.02)
                ax.tick_params(labelsize=6)
                if kind == "roc":
                    ax.plot([0, 1], [0, 1], color="0.85", lw=0.6, ls="--")
            real, fake = evaluation.pair(subset, setting, evaluation.models[0])
            if not (len(real) and len(fake)):
                for _, axes in figures.values():
                    axes[i][j].text(0.5, 0.5, "one class: no curve", ha="center", va="center", fontsize=7)
                continue
            for model in evaluation.models:
                c = curve(*evaluation.pair(subset, setting, model), evaluation.protocol)
                colour, name = COLOURS.get(model, "0.3"), MODEL_NAMES.get(model, model)
                figures["roc"][1][i][j].plot(c["fpr"], c["tpr"], color=colour, lw=1.0, label=name)
                figures["pr"][1][i][j].plot(c["recall"], c["precision"], color=colour, lw=1.0, label=name)
                for policy, marker in MARKED.items():
                    point = operating_point(points.get((model, policy, setting, subset), {}))
                    if point is None:
                        continue
                    fpr, tpr, precision = point
                    figures["roc"][1][i][j].plot([fpr], [tpr], marker, color=colour, ms=4, mfc="none")
                    figures["pr"][1][i][j].plot([tpr], [precision], marker, color=colour, ms=4, mfc="none")
    labels = {
        "roc": ("false positive rate (reals called fake)", "true positive rate (F.Acc)"),
        "pr": ("recall (F.Acc)", "precision"),
    }
    for kind, (fig, axes) in figures.items():
        for ax in axes[-1]:
            ax.set_xlabel(labels[kind][0], fontsize=7)
        for row in axes:
            row[0].set_ylabel(labels[kind][1], fontsize=7)
        axes[0][0].legend(fontsize=6, loc="lower right" if kind == "roc" else "lower left")
        fig.suptitle(f"{title}: {'ROC' if kind == 'roc' else 'precision-recall'} (o logit 0, □ calibrated)", fontsize=9)
        figure(roc_path if kind == "roc" else pr_path, fig)
