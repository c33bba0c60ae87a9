"""What a run leaves behind: results.csv, results.md, the RAD plot, scores, mask and head."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from dear_exp.errors import DearError
from dear_exp.files import write_atomic  # noqa: F401  (the report's writes; re-exported)
from dear_exp.metrics import METRICS, PEERS

MISSING = "n/a"  # how results.md and the console show a metric a subset cannot define (NaN in results.csv)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dear_exp.detectors.base import Detector
    from dear_exp.evaluate import Evaluation
    from dear_exp.refit import HeadFit

# the detector as released, and the refitted heads of a task=dear run: the controls `refit` (no channel
# pruned) and `random` (as many channels pruned at random as DEAR prunes), and DEAR itself
MODEL_NAMES = {"base": "Base", "refit": "Refit", "random": "Random", "dear": "DEAR"}
COLOURS = {"base": "#4C72B0", "refit": "#55A868", "random": "#8C8C8C", "dear": "#C44E52"}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A run's safetensors file (heads, dissection), the same bytes for the same tensors and metadata."""
    from safetensors.torch import save

    raw = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    write_atomic(path, canonical_safetensors(raw))


def canonical_safetensors(raw: bytes) -> bytes:
    """safetensors writes its JSON header's metadata in hash-map order, which changes from one save to
    the next (12 orders in 20 saves of a head): the header is written again with its keys sorted and
    padded to 8 bytes as safetensors pads it. The data and its offsets are unchanged."""
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw[8 + n :]


def save_dissection(out_dir: Path, scores: torch.Tensor | None, mask: torch.Tensor) -> None:
    """`rad_scores.csv` (channel, rad, kept) and `dissection.safetensors` (rad, mask)."""
    tensors = {"mask": mask.float()}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["channel", "rad", "kept"])
    for k in range(mask.numel()):
        writer.writerow([k, "" if scores is None else f"{float(scores[k]):.8g}", int(mask[k])])
    if scores is not None:
        tensors["rad"] = scores.float()
    write_atomic(out_dir / "rad_scores.csv", buf.getvalue())
    save_tensors(out_dir / "dissection.safetensors", tensors)


def plot_rad(path: Path, scores: torch.Tensor, mask: torch.Tensor, title: str) -> None:
    """Histogram of RAD scores with the pruned bands shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = scores.float().numpy()
    kept = mask.bool().numpy()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    ax.hist(s, bins=60, color="#4C72B0", alpha=0.85, label=f"channels ({kept.sum()} kept of {len(s)})")
    lo, hi = s.min(), s.max()
    if kept.any() and (~kept).any():
        keep_lo, keep_hi = s[kept].min(), s[kept].max()
        if (s < keep_lo).any():
            ax.axvspan(lo, keep_lo, color="#C44E52", alpha=0.2, label="pruned")
        if (s > keep_hi).any():
            ax.axvspan(keep_hi, hi, color="#C44E52", alpha=0.2, label=None if (s < keep_lo).any() else "pruned")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("RAD = mean(F_k inside inpainted region) - mean(F_k in background)")
    ax.set_ylabel("channels")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def is_missing(value: Any) -> bool:
    """A metric that is not there: None, NaN, or a CSV cell that reads as either."""
    if value is None or value == "":
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def cell(value: Any, fmt: str = ".1f") -> str:
    """A metric as a table shows it: formatted, or `n/a` when missing (never 0)."""
    return MISSING if is_missing(value) else format(float(value), fmt)


FULL_PRECISION = ("threshold", "p_threshold")  # read back by task.threshold_from: the very value applied


def write_csv(path: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """One flat row per (model x subset x post-processing), with the keys identifying the run. A
    metric a subset cannot define is written `nan` (float("nan") and pandas read it back as NaN).
    Metrics have 4 decimals; thresholds full precision (float() reads back the value used)."""
    if not rows:
        return
    fields = list(extra) + list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {
            k: (repr(v) if k in FULL_PRECISION else f"{v:.4f}") if isinstance(v, float) else v for k, v in row.items()
        }
        writer.writerow({**extra, **cells})
    write_atomic(path, buf.getvalue())


def policies(rows: list[dict[str, Any]]) -> list[str]:
    """The threshold policies of the rows, the lead one (`lead_policy`) first."""
    found = list(dict.fromkeys(r.get("threshold_policy", "logit0") for r in rows))
    lead = lead_policy(rows) if rows else "logit0"
    return [p for p in found if p == lead] + [p for p in found if p != lead]


def lead_policy(rows: list[dict[str, Any]]) -> str:
    """The policy a report leads with (README, "Metrics, thresholds and reports"): `calibrated` where the
    run has it (chosen on validation images before the test set is seen, so it follows a refitted head's
    shifted operating point), else `logit0`, the reference's rule; never the oracle."""
    found = {r.get("threshold_policy", "logit0") for r in rows}
    return "calibrated" if "calibrated" in found else "logit0"


def table_cells(rows: list[dict[str, Any]], policy: str = "logit0") -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per post-processing setting: a header and one line per subset and model, the models of a
    subset one under the other."""
    rows = [r for r in rows if r.get("threshold_policy", "logit0") == policy]
    models = list(dict.fromkeys(r["model"] for r in rows))
    index = {(r["model"], r["postprocess"], r["subset"]): r for r in rows}
    tables = {}
    for setting in dict.fromkeys(r["postprocess"] for r in rows):
        lines = []
        for subset in dict.fromkeys(r["subset"] for r in rows if r["postprocess"] == setting):
            lines += [
                [subset, MODEL_NAMES.get(m, m)] + [cell(index[(m, setting, subset)][k]) for k in METRICS]
                for m in models
                if (m, setting, subset) in index
            ]
        tables[setting] = (["subset", "model", *METRICS], lines)
    return tables


def missing_note(rows: list[dict[str, Any]], policy: str, setting: str) -> str | None:
    """The line under a table that has `n/a` cells: which subsets lack which metrics, and how the means
    treat them."""
    gaps: dict[str, list[str]] = {}
    for r in rows:
        if r.get("threshold_policy", "logit0") != policy or r["postprocess"] != setting:
            continue
        if str(r["subset"]).startswith("mean"):
            continue
        for k in METRICS:
            keys = gaps.setdefault(str(r["subset"]), []) if is_missing(r.get(k)) else None
            if keys is not None and k not in keys:
                keys.append(k)
    if not gaps:
        return None
    listed = "; ".join(f"{subset}: {', '.join(keys)}" for subset, keys in gaps.items())
    return (
        f"{MISSING}: undefined on a subset with one class only ({listed}). "
        "The mean rows average each metric over the subsets that define it."
    )


ORACLES = {
    "ufd": "its find_best_threshold (searched with sigmoid >= t over the sigmoids, scored with > t: on "
    "saturated sigmoids it can pick 1.0 and give F.Acc 0)",
    "sidbench": "its find_best_acc_threshold (the first of 100 points of [0, 1] of the highest overall accuracy)",
    "overall": "none in its code: ours, the midpoint between neighbouring sigmoids of the highest overall accuracy",
}


def protocol_of(rows: list[dict[str, Any]]) -> str:
    """The metric protocol the rows were computed under (rows written before it was a column: dear)."""
    return str(rows[0].get("metrics") or "dear") if rows else "dear"


def protocol_note(protocol: str) -> str:
    """How results.md says what its numbers are: the protocol and its rule, in one paragraph."""
    if protocol == "dear":
        return (
            "Metrics: protocol `dear` (DEAR's scripts/eval.py; task.metrics=dear). R.Acc: reals with logit < "
            "threshold; F.Acc: fakes with logit > threshold (a logit on the threshold is wrong for both); "
            "Acc = (R.Acc + F.Acc) / 2 (balanced); AUC and AP rank the float64 logits. Thresholds are logits."
        )
    peer = PEERS[protocol]
    return (
        f"Metrics: protocol `{protocol}`, the rule of {peer.title} ({peer.code}; task.metrics={protocol}). "
        "An image is fake when its float32 sigmoid is > p (p_threshold in results.csv: 0.5 for logit0, the "
        "sigmoid of the calibrated logit; p = 0.5 counts as real); R.Acc and F.Acc per class, Acc the overall "
        "accuracy (not balanced); AUC and AP (scikit-learn's) on the float32 sigmoids, which tie at 1.0 for "
        f"logits above about 17 and at 0 below about -104. {peer.title} reports {', '.join(peer.reported)}; "
        f"the other columns are computed in its convention. Oracle threshold: {ORACLES[peer.oracle]}. "
        "The threshold column is the logit of p."
    )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    out = [protocol_note(protocol_of(rows)), ""] if rows else []
    for policy in policies(rows):
        note = " (oracle: chosen on the test subset itself, an upper bound)" if policy == "oracle" else ""
        for setting, (head, lines) in table_cells(rows, policy).items():
            out += [
                f"### {setting}, threshold {policy}{note}\n",
                "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head),
            ]
            out += [
                "| " + " | ".join([f"**{c}**" if line[0].startswith("mean") else c for c in line]) + " |"
                for line in lines
            ]
            missing = missing_note(rows, policy, setting)
            if missing:
                out += ["", missing]
            out.append("")
    return "\n".join(out)


def in_multirun() -> bool:
    """Whether this process is one job of a Hydra multirun (its console is shared with every job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


PLOTS = ("auto", "always", "never")


def plots_wanted(setting: str) -> bool:
    """task.plots: `auto` draws a single run's figures and none in a multirun job (a sweep's 25 jobs'
    figures would cost more than their head fits; task=compare draws the sweep's heatmaps), `always`
    in every job, `never` none. The tables, CSVs and W&B tables are written either way."""
    if setting not in PLOTS:
        raise DearError(
            f"task.plots={setting!r} is not a choice: auto (a single run's figures, none in a multirun job), "
            "always or never"
        )
    return setting == "always" or (setting == "auto" and not in_multirun())


def job_line(rows: list[dict[str, Any]]) -> str:
    """One line for a multirun job's console: the mean AUC, F.Acc and Acc of each model, per setting
    (and group of subsets, where the benchmark has several), under the lead policy."""
    lead = lead_policy(rows)
    means = [r for r in rows if r.get("threshold_policy", "logit0") == lead and str(r["subset"]).startswith("mean")]
    parts = []
    for setting, subset in dict.fromkeys((r["postprocess"], r["subset"]) for r in means):
        cells = [
            f"{MODEL_NAMES.get(r['model'], r['model'])} {cell(r['AUC'])}/{cell(r['F.Acc'])}/{cell(r['Acc'])}"
            for r in means
            if r["postprocess"] == setting and r["subset"] == subset
        ]
        where = setting if subset == "mean" else f"{setting} {str(subset).removeprefix('mean:')}"
        parts.append(f"{where}: {', '.join(cells)}")
    return f"mean AUC/F.Acc/Acc ({_policy_name(lead)}) " + "; ".join(parts) + " (tables: results.md)"


def _policy_name(policy: str) -> str:
    return {"logit0": "logit 0", "calibrated": "calibrated threshold"}.get(policy, policy)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The lead policy's tables in full (`lead_policy`: calibrated where the run has it, else logit 0);
    the other threshold policies as a summary of the means."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    protocol, lead = protocol_of(rows), lead_policy(rows)
    if lead == "logit0":
        at = "logit 0" if protocol == "dear" else "sigmoid > 0.5"
    else:
        at = "calibrated on train_data's validation split, before the test set is seen"
    at += "" if protocol == "dear" else f"; metrics: {protocol}, see results.md"
    for setting, (head, lines) in table_cells(rows, lead).items():
        table = Table(title=f"post-processing: {setting} (threshold: {at})")
        for i, name in enumerate(head):
            table.add_column(name, justify="left" if i < 2 else "right")
        for i, line in enumerate(lines):  # a rule under each subset's models
            table.add_row(
                *line,
                style="bold" if line[0].startswith("mean") else None,
                end_section=i + 1 == len(lines) or lines[i + 1][0] != line[0],
            )
        console.print(table)
        missing = missing_note(rows, lead, setting)
        if missing:
            console.print(missing)
    others = [p for p in policies(rows) if p != lead]
    if others:
        meaning = {
            "logit0": "logit0 = the reference's rule",
            "oracle": "oracle = chosen on the test set: an upper bound",
        }
        glossary = "; ".join(meaning[p] for p in others if p in meaning)
        table = Table(title="means under the other threshold policies" + (f" ({glossary})" if glossary else ""))
        for name in ("model", "policy", "post-processing", "subset", *METRICS):
            table.add_column(
                name, justify="left" if name in ("model", "policy", "post-processing", "subset") else "right"
            )
        for policy in others:
            for r in rows:
                if r.get("threshold_policy", "logit0") == policy and str(r["subset"]).startswith("mean"):
                    table.add_row(
                        MODEL_NAMES.get(r["model"], r["model"]),
                        policy,
                        r["postprocess"],
                        r["subset"],
                        *(cell(r[k]) for k in METRICS),
                    )
        console.print(table)


def figure(path: Path, fig: Any, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> None:
    """A figure written atomically as PNG; `rect`: the part tight_layout fills (room for a legend below)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout(rect=rect)
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def _placed(row: dict[str, Any]) -> bool:
    """Whether a row has both coordinates of the R.Acc / F.Acc plot (a one-class subset lacks one)."""
    return not is_missing(row["R.Acc"]) and not is_missing(row["F.Acc"])


RACC_FACC_POLICIES = ("logit0", "calibrated")  # the reference's rule beside the validation-chosen threshold


def plot_racc_facc(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """R.Acc against F.Acc per generator: a panel per post-processing setting (columns) and threshold
    policy (rows: logit 0, and the calibrated threshold where the run has it), one colour per model, one
    marker per generator (named in the legend), an arrow from the base detector to the run's own model
    (the last one). A one-class subset lacks a coordinate and is not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = [r for r in rows if not str(r["subset"]).startswith("mean")]
    shown = [p for p in RACC_FACC_POLICIES if any(r.get("threshold_policy", "logit0") == p for r in rows)]
    rows = [r for r in rows if r.get("threshold_policy", "logit0") in shown]
    settings = list(dict.fromkeys(r["postprocess"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    markers = "os^Dvx+*<>ph8HdP"
    marker = {s: markers[i % len(markers)] for i, s in enumerate(subsets)}
    target = models[-1] if models else "base"
    fig, axes = plt.subplots(
        max(1, len(shown)),
        max(1, len(settings)),
        figsize=(max(5.6, 3.3 * len(settings)), 3.3 * max(1, len(shown)) + 0.7),
        dpi=110,
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    index = {(r["model"], r.get("threshold_policy", "logit0"), r["postprocess"], r["subset"]): r for r in rows}
    for pi, policy in enumerate(shown):
        for si, setting in enumerate(settings):
            ax = axes[pi][si]
            ax.plot([0, 100], [100, 0], color="0.85", lw=0.8, ls="--")
            ax.set_title(f"{setting}: {_policy_name(policy)}", fontsize=8)
            for model in models:
                for subset in subsets:
                    r = index.get((model, policy, setting, subset))
                    if r is None or not _placed(r):
                        continue
                    ax.scatter([r["R.Acc"]], [r["F.Acc"]], marker=marker[subset], color=COLOURS.get(model, "0.3"), s=30)
                    d = index.get((target, policy, setting, subset))
                    if model == "base" and target != "base" and d and _placed(d):
                        ax.annotate(
                            "",
                            xy=(d["R.Acc"], d["F.Acc"]),
                            xytext=(r["R.Acc"], r["F.Acc"]),
                            arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.7},
                        )
            ax.set_xlim(-2, 102)
            ax.set_ylim(-2, 102)
            ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("R.Acc (%): reals called real", fontsize=8)
    for row in axes:
        row[0].set_ylabel("F.Acc (%): fakes called fake", fontsize=8)
    handles = [
        Line2D([], [], ls="", marker="o", color=COLOURS.get(m, "0.3"), label=MODEL_NAMES.get(m, m)) for m in models
    ] + [Line2D([], [], ls="", marker=marker[s], color="0.35", label=str(s)) for s in subsets]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)
    fig.suptitle(
        f"{title}: R.Acc against F.Acc per generator (arrows: base to {MODEL_NAMES.get(target, target)})", fontsize=9
    )
    figure(path, fig, rect=(0, 0.07 + 0.04 * (len(handles) // 8), 1, 1))


def severity_rows(rows: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """What `severity.png` draws: the mean rows of the lead policy (`lead_policy`), and that policy."""
    policy = lead_policy(rows)
    return policy, [
        r for r in rows if r.get("threshold_policy", "logit0") == policy and str(r["subset"]).startswith("mean")
    ]


def plot_severity(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Mean AUC, R.Acc and F.Acc per model across the post-processing settings, in config order; R.Acc
    and F.Acc at the policy the console leads with (`lead_policy`), named in the panels' titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policy, means = severity_rows(rows)
    groups = list(dict.fromkeys(r["subset"] for r in means))
    settings = list(dict.fromkeys(r["postprocess"] for r in means))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=120, sharey=True)
    for ax, metric in zip(axes, ("AUC", "R.Acc", "F.Acc")):
        for model in dict.fromkeys(r["model"] for r in means):
            for group in groups:
                pts = {r["postprocess"]: r[metric] for r in means if r["model"] == model and r["subset"] == group}
                label = MODEL_NAMES.get(model, model) + ("" if len(groups) == 1 else f" {group}")
                ax.plot(
                    range(len(settings)),
                    [pts.get(s, float("nan")) for s in settings],
                    marker="o",
                    label=label,
                    color=COLOURS.get(model) if len(groups) == 1 else None,
                )
        ax.set_xticks(range(len(settings)), settings, rotation=45, ha="right", fontsize=7)
        ax.set_title(metric if metric == "AUC" else f"{metric}, {_policy_name(policy)}", fontsize=9)
        ax.set_ylim(-2, 102)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    figure(path, fig)


def compare_rows(
    tables: list[tuple[str, list[dict[str, Any]]]],
) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """One table from several runs' results.csv: a line per (run, model, threshold policy, setting,
    mean row) with the mean metrics, and the best cells: per metric among the lines that share a
    policy, setting and subset (highest, except Gap: closest to 0). Rows aggregated over seeds carry
    `<metric>_sd`: their cells read `mean ± sd` and the best is chosen on the means, rounded as shown.
    A missing metric (NaN) reads `n/a` and is never the best. Within a run the lead policy comes first
    (`policies`), as in every other table."""
    head = ["run", "model", "policy", "post-processing", "subset", *METRICS]
    lines: list[list[str]] = []
    values: list[list[float]] = []
    rank = {p: i for i, p in enumerate(policies([r for _, rows in tables for r in rows]))}
    for label, rows in tables:
        for r in sorted(rows, key=lambda r: rank[r.get("threshold_policy", "logit0")]):
            if str(r["subset"]).startswith("mean"):
                means = [float("nan") if is_missing(r[k]) else round(float(r[k]), 1) for k in METRICS]
                cells = [
                    cell(m) + (f" ± {cell(r[k + '_sd'])}" if k + "_sd" in r and not math.isnan(m) else "")
                    for m, k in zip(means, METRICS)
                ]
                lines.append(
                    [
                        label,
                        MODEL_NAMES.get(r["model"], r["model"]),
                        r.get("threshold_policy", "logit0"),
                        r["postprocess"],
                        r["subset"],
                        *cells,
                    ]
                )
                values.append(means)
    best: set[tuple[int, int]] = set()
    comparable: dict[tuple[str, ...], list[int]] = {}
    for i, line in enumerate(lines):
        comparable.setdefault(tuple(line[2:5]), []).append(i)
    for members in comparable.values():
        for j, metric in enumerate(METRICS):
            keys = {
                i: abs(values[i][j]) if metric == "Gap" else -values[i][j]
                for i in members
                if not math.isnan(values[i][j])
            }
            if not keys:
                continue
            top = min(keys.values())
            best |= {(i, j + 5) for i, k in keys.items() if k == top}
    return head, lines, best


def run_identity(cfg: DictConfig, task: str, prune: Any = None) -> dict[str, Any]:
    """The config keys that tell one run's rows from another's in a combined results table. Alpha
    levels only where the prune mode reads them, the solver only where a head was refitted. `prune`:
    the settings the rows were pruned with, where not cfg.prune's (one pair of task=dear_grid)."""
    net = cfg.detector.net
    refits = task == "dear"
    prune = prune if prune is not None else cfg.prune
    levels = refits and prune.mode not in ("none", "released")
    return {
        "task": task,
        "detector": cfg.detector.name,
        "layer": net.get("feature_layer", net.get("block", "")),
        "benchmark": cfg.benchmark.name,
        "prune_mode": prune.mode if refits else "",
        "alpha_low": float(prune.alpha_low) if levels else "",  # 0 and 0.0 the same level, written alike
        "alpha_high": float(prune.alpha_high) if levels else "",
        "solver": f"{cfg.head.solver}-{cfg.head.mode}" if refits else "",
        "seed": cfg.seed,
        "threads": cfg.threads,
    } | ({"max_sample": cfg.benchmark.max_sample} if cfg.benchmark.get("max_sample") is not None else {})


def save_loggers(loggers: list[Any]) -> None:
    """Write what the loggers hold: Lightning's CSV logger writes metrics.csv only on save, which no
    trainer.fit calls in a run whose heads are solved on cached rows."""
    for lg in loggers:
        lg.save()


def write_results(out_dir: Path, rows: list[dict[str, Any]], identity: dict[str, Any]) -> None:
    """results.csv (every row with the run's identity) and results.md (the tables per setting, the
    leaderboards, the confusion matrices)."""
    from dear_exp.leaderboard import confusion_markdown, leaderboard_markdown

    write_csv(out_dir / "results.csv", rows, identity)
    write_atomic(
        out_dir / "results.md", "\n".join([markdown_table(rows), leaderboard_markdown(rows), confusion_markdown(rows)])
    )


def run_title(cfg: DictConfig) -> str:
    """The figures' title: the detector and the data."""
    return f"{cfg.detector.name} on {cfg.benchmark.name}"


def draw_figures(out_dir: Path, evaluation: Evaluation, title: str) -> dict[str, Path]:
    """racc_facc.png, severity.png, roc.png and pr.png of one evaluation, by name."""
    from dear_exp.curves import plot_curves

    rows = evaluation.rows
    plots = {name: out_dir / f"{name}.png" for name in ("racc_facc", "severity", "roc", "pr")}
    plot_racc_facc(plots["racc_facc"], rows, title)
    plot_severity(plots["severity"], rows, title)
    plot_curves(plots["roc"], plots["pr"], evaluation, title)
    return plots


def write_report(
    cfg: DictConfig, task: str, out_dir: Path, evaluation: Evaluation, loggers: list[Any], draw: bool = True
) -> dict[str, float]:
    """results.csv, results.md (the tables per setting, the leaderboards, the confusion matrices), the
    console table, the plots when `draw` (R.Acc/F.Acc, severity, ROC and PR curves), and the same to
    every logger."""
    from dear_exp.leaderboard import log_tables

    rows = evaluation.rows
    write_results(out_dir, rows, run_identity(cfg, task))
    if in_multirun():  # 25 jobs' tables would bury each other: one line each, the tables in results.md
        log.info("%s", job_line(rows))
    else:
        print_table(rows)
    plots = draw_figures(out_dir, evaluation, run_title(cfg)) if draw else {}
    log_tables(loggers, rows)
    for lg in loggers:
        if hasattr(lg, "log_table"):
            columns = list(dict.fromkeys(c for r in rows for c in r))
            lg.log_table(key="results", columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        if hasattr(lg, "log_image"):
            for key, path in plots.items():
                lg.log_image(key=key, images=[str(path)])
        lg.log_metrics(  # a metric a subset cannot define is not logged (NaN stays in results.csv)
            {
                f"test/{r['model']}/{r.get('threshold_policy', 'logit0')}/{r['postprocess']}/{r['subset']}/{k}": r[k]
                for r in rows
                for k in METRICS
                if not is_missing(r[k])
            }
        )
    save_loggers(loggers)
    return {
        f"{r['model']}/{r['postprocess']}/{r['subset']}/{k}": r[k]
        for r in rows
        if str(r["subset"]).startswith("mean") and r.get("threshold_policy", "logit0") == "logit0"
        for k in METRICS
    }


REFIT_COLUMNS = (
    "model",
    "solver",
    "kept",
    "chosen",
    "l2",
    "iterations",
    "objective",
    "grad_max",
    "converged",
    "val_loss",
    "val_bacc",
    "epochs",
    "val_bacc_last",
)


def refit_lines(fits: list[HeadFit]) -> list[dict[str, Any]]:
    """refit.csv: per head, every L2 strength the Newton solve tried (the kept one marked) or the Adam fit's
    summary: what shows that each fit converged and how it validated."""
    lines = []
    for fit in fits:
        solves = [{**asdict(s), "chosen": s.l2 == fit.summary["l2"]} for s in fit.path] or [{"chosen": True}]
        for solve in solves:
            lines.append({"model": fit.name, **fit.summary, **solve})
    return lines


def refit_metrics(fits: list[HeadFit]) -> dict[str, float]:
    """Each head's fit summary as logged metrics: refit/<model>/<key>."""
    return {f"refit/{f.name}/{k}": float(v) for f in fits for k, v in f.summary.items() if isinstance(v, (int, float))}


def print_refit(fits: list[HeadFit]) -> None:
    from rich.console import Console
    from rich.table import Table

    adam = any(f.summary["solver"] == "adam" for f in fits)
    table = Table(
        title="head refit (val: train_data's validation split"
        + ("; adam: the kept epoch's val/bacc)" if adam else "; l2: the one kept)")
    )
    for name in (
        "model",
        "solver",
        "kept",
        "l2",
        "iterations",
        "objective",
        "max |grad|",
        "converged",
        "val BCE",
        "val bacc",
    ):
        table.add_column(name, justify="left" if name in ("model", "solver") else "right")
    for fit in fits:
        s = fit.summary

        def num(key: str, fmt: str, s: dict[str, Any] = s) -> str:
            value = s.get(key)
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

        table.add_row(
            MODEL_NAMES.get(fit.name, fit.name),
            s["solver"],
            str(s["kept"]),
            num("l2", "g"),
            num("iterations", "d") or num("epochs", "d") + " ep",
            num("objective", ".6g"),
            num("grad_max", ".2g"),
            str(s.get("converged", "")),
            num("val_loss", ".4f"),
            num("val_bacc", ".3f"),
        )
    Console(width=max(120, Console().width)).print(table)


def log_summary(loggers: list[Any], metrics: dict[str, float]) -> None:
    """Final figures of a run: logged, and W&B's run summary set to them (it would otherwise keep the
    last value logged under a key, e.g. the last epoch's val/bacc instead of the kept epoch's)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        lg.log_metrics(metrics)
        if isinstance(lg, WandbLogger):
            lg.experiment.summary.update(metrics)


def save_refit(
    cfg: DictConfig,
    out_dir: Path,
    fits: list[HeadFit],
    scores: torch.Tensor | None,
    detector: Detector,
    loggers: list[Any],
    draw: bool = True,
    quiet: bool = False,
    prune: Any = None,
    identity: dict[str, str] | None = None,
) -> list[str]:
    """The run's own head (head.safetensors), each control's (head_<name>.safetensors), refit.csv, the
    dissection and its plot; the fit summaries to every logger; the refit table on the console unless
    `quiet` or in a multirun job. `prune`: the settings the masks were made with, where not cfg.prune's
    (one pair of task=dear_grid); `identity`: the heads' `head_identity`, where computed before (it
    hashes the detector's weights when they are loaded). Returns the names written."""
    from dear_exp.refit.head import head_identity, save_head

    identity = identity or head_identity(detector)  # hashes the detector's weights: once for every head
    written = []
    for i, fit in enumerate(fits):
        name = "head.safetensors" if i == len(fits) - 1 else f"head_{fit.name}.safetensors"
        save_head(out_dir / name, fit.head, identity)
        written.append(name)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REFIT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(refit_lines(fits))
    write_atomic(out_dir / "refit.csv", buf.getvalue())
    if not (quiet or in_multirun()):
        print_refit(fits)
    log_summary(loggers, refit_metrics(fits))
    if fits[-1].summary["solver"] == "adam":  # W&B's summary is the last epoch's unless told: the kept epoch's
        log_summary(loggers, {"val/bacc": fits[-1].summary["val_bacc"]})
    own = fits[-1].head.mask
    save_dissection(out_dir, scores, own)
    written += ["refit.csv", "rad_scores.csv", "dissection.safetensors"]
    if scores is not None and draw:
        plot, p = out_dir / "rad_hist.png", prune if prune is not None else cfg.prune
        plot_rad(
            plot,
            scores,
            own,
            f"{cfg.detector.name} {detector.feature_layer}: RAD, {p.mode} {p.alpha_low}/{p.alpha_high}",
        )
        for lg in loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key="rad_hist", images=[str(plot)])
        written.append("rad_hist.png")
    return written
