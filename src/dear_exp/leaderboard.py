"""The views a reader compares with published tables: a leaderboard per model and threshold policy
(generators down, post-processing settings across, as the papers lay theirs out) and the confusion
matrix behind every per-subset accuracy."""

from __future__ import annotations

from typing import Any

from dear_exp.metrics import CONFUSION
from dear_exp.report import MODEL_NAMES, cell, is_missing, lead_policy, policies

COLUMNS = ("AUC", "R.Acc", "F.Acc")  # per setting: the paper's columns (method.md), R.Acc and F.Acc apart


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-subset rows first (in the benchmark's order), then each group's mean (the 9 generators' and
    the in-the-wild sets' apart)."""
    return sorted(rows, key=lambda r: str(r["subset"]).startswith("mean"))


def leaderboard(rows: list[dict[str, Any]], model: str, policy: str) -> tuple[list[str], list[list[str]]]:
    """One model under one threshold policy: a line per subset and mean row, AUC, R.Acc and F.Acc per
    post-processing setting."""
    mine = [r for r in rows if r["model"] == model and r.get("threshold_policy", "logit0") == policy]
    settings = list(dict.fromkeys(r["postprocess"] for r in mine))
    index = {(r["postprocess"], r["subset"]): r for r in mine}
    head = ["subset"] + [f"{s} {k}" for s in settings for k in COLUMNS]
    lines = []
    for subset in dict.fromkeys(r["subset"] for r in _ordered(mine)):
        cells = [cell(index[(s, subset)][k]) if (s, subset) in index else "" for s in settings for k in COLUMNS]
        lines.append([str(subset), *cells])
    return head, lines


def _models(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def _table(head: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        bold = line[0].startswith("mean")
        out.append("| " + " | ".join(f"**{c}**" if bold and c else c for c in line) + " |")
    return out


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    """results.md's leaderboard: a table per threshold policy (the lead one first) and model."""
    order = [lead_policy(rows)] + [p for p in policies(rows) if p != lead_policy(rows)]
    out = ["## Leaderboard", ""]
    for policy in order:
        for model in _models(rows):
            head, lines = leaderboard(rows, model, policy)
            if lines:
                out += [f"### {MODEL_NAMES.get(model, model)}, threshold {policy}", "", *_table(head, lines), ""]
    return "\n".join(out)


def confusion(rows: list[dict[str, Any]], policy: str) -> tuple[list[str], list[list[str]]]:
    """The confusion matrix of every per-subset row under a policy: a line per subset, setting and model."""
    head = ["subset", "post-processing", "model", "threshold", *CONFUSION]
    lines = []
    mine = [
        r for r in rows if r.get("threshold_policy", "logit0") == policy and not str(r["subset"]).startswith("mean")
    ]
    for subset in dict.fromkeys(r["subset"] for r in mine):
        for r in (r for r in mine if r["subset"] == subset):
            counts = ["" if is_missing(r.get(k)) else str(int(float(r[k]))) for k in CONFUSION]
            lines.append(
                [
                    str(subset),
                    r["postprocess"],
                    MODEL_NAMES.get(r["model"], r["model"]),
                    cell(r.get("threshold"), ".4g"),
                    *counts,
                ]
            )
    return head, lines


def confusion_markdown(rows: list[dict[str, Any]]) -> str:
    """results.md's confusion matrices, one table per threshold policy: TN reals called real, FP reals
    called fake, FN fakes called real, TP fakes called fake (R.Acc = TN / (TN + FP), F.Acc = TP / (TP + FN))."""
    out = [
        "## Confusion matrices",
        "",
        "TN: reals called real, FP: reals called fake, FN: fakes called real, TP: fakes called fake "
        "(R.Acc = TN / (TN + FP), F.Acc = TP / (TP + FN)); the threshold is a logit.",
        "",
    ]
    for policy in policies(rows):
        head, lines = confusion(rows, policy)
        if lines:
            out += [f"### threshold {policy}", "", *_table(head, lines), ""]
    return "\n".join(out)


def log_tables(loggers: list[Any], rows: list[dict[str, Any]]) -> None:
    """The leaderboards (`leaderboard/<policy>/<model>`) and confusion matrices (`confusion/<policy>`) as
    tables, to every logger that takes tables (W&B)."""
    for lg in loggers:
        if not hasattr(lg, "log_table"):
            continue
        for policy in policies(rows):
            for model in _models(rows):
                head, lines = leaderboard(rows, model, policy)
                if lines:
                    lg.log_table(key=f"leaderboard/{policy}/{model}", columns=head, data=lines)
            head, lines = confusion(rows, policy)
            if lines:
                lg.log_table(key=f"confusion/{policy}", columns=head, data=lines)
