"""Scoring a model on a benchmark under every post-processing setting, and writing the report.

Shared by task=dear (base and DEAR from one backbone pass) and task=evaluate (any detector as
released, optionally with a saved DEAR head)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dear_exp.data.benchmarks import benchmark_datamodule  # noqa: F401
from dear_exp.data.datamodules import BenchmarkDataModule
from dear_exp.data.datasets import EvalImages
from dear_exp.data.folders import Sample
from dear_exp.data.images import Preprocess
from dear_exp.data.postprocess import Chain
from dear_exp.errors import DearError
from dear_exp.metrics import METRICS, POLICIES, best_threshold, evaluate_predictions
from dear_exp.features import FeatureStore, head_logits
from dear_exp.report import markdown_table, plot_racc_facc, plot_severity, print_table, write_atomic, write_csv

log = logging.getLogger(__name__)


def validate_evaluation(task: DictConfig) -> None:
    """Threshold policies and bootstrap count, checked before any work."""
    unknown = sorted(set(task.thresholds) - set(POLICIES))
    if unknown:
        raise DearError(f"task.thresholds has {unknown}; choose from {', '.join(POLICIES)}")
    if task.bootstrap < 0:
        raise DearError(f"task.bootstrap={task.bootstrap} must be 0 (off) or a number of resamples")


def run_identity(cfg: DictConfig, task: str) -> dict[str, Any]:
    """The config keys that tell one run's rows from another's in a combined results table. Alpha
    levels only where the prune mode reads them, the solver only where a head was refitted."""
    net = cfg.detector.net
    refits = task == "dear"
    levels = refits and cfg.prune.mode not in ("none", "released")
    return {
        "task": task, "detector": cfg.detector.name, "layer": net.get("feature_layer", net.get("block", "")),
        "benchmark": cfg.benchmark.name, "prune_mode": cfg.prune.mode if refits else "",
        "alpha_low": cfg.prune.alpha_low if levels else "", "alpha_high": cfg.prune.alpha_high if levels else "",
        "solver": f"{cfg.head.solver}-{cfg.head.mode}" if refits else "", "seed": cfg.seed, "threads": cfg.threads,
    }


def model_logits(rows: dict[str, torch.Tensor], heads: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The detector's own logit and each head's logit: all from one cached pass."""
    out = {"base": rows["logit"], "label": rows["label"]}
    for name, head in heads.items():
        out[name] = head_logits(head, rows["pooled"])
    return out


def calibration_thresholds(store: FeatureStore, samples: list[Sample], preprocess: Preprocess,
                           heads: dict[str, torch.nn.Module], seed: int, batch_size: int = 64) -> dict[str, float]:
    """Per model, the threshold that maximises balanced accuracy on validation images, scored the
    way the test set is (native size, no post-processing): chosen before the test set is seen."""
    dataset = EvalImages(samples, Chain("clean", [], seed), preprocess)
    rows = store.rows("images", [("train_data val [clean, calibration]", dataset)], logits=True, batch_size=batch_size)
    logits = model_logits(rows[0], heads)
    labels = logits.pop("label")
    if not (labels == 0).any() or not (labels == 1).any():
        raise DearError("the calibrated threshold needs real and fake validation images; "
                        "drop `calibrated` from task.thresholds or give train_data.val both")
    thresholds = {m: best_threshold(v[labels == 0], v[labels == 1]) for m, v in logits.items()}
    log.info("Calibrated thresholds on %d validation images: %s", len(samples),
             ", ".join(f"{m} {t:.4g}" for m, t in thresholds.items()))
    return thresholds


def evaluate(store: FeatureStore, benchmark: BenchmarkDataModule, heads: dict[str, torch.nn.Module],
             policies: tuple[str, ...] = ("logit0",), calibrated: dict[str, float] | None = None,
             bootstrap: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Every source under every post-processing setting from the cache (one backbone pass each,
    shared by every head of a sweep), then the metrics per subset and policy."""
    models = ("base", *heads)
    log.info("Evaluating %s on %s under %s", "/".join(models), benchmark.name, ", ".join(benchmark.settings))
    requests = [(f"{benchmark.name}/{s.source} [{s.setting}]", ds) for s, ds in zip(benchmark.sources, benchmark.datasets)]
    rows = store.rows("images", requests, logits=True, batch_size=benchmark.batch_size)  # type: ignore[arg-type]
    outputs = [[model_logits(r, heads)] for r in rows]
    return evaluate_predictions(benchmark.sources, outputs, benchmark.subsets, models,
                                groups=getattr(benchmark, "groups", None), policies=policies,
                                calibrated=calibrated, bootstrap=bootstrap, seed=seed)


def report(cfg: DictConfig, task: str, out_dir: Path, rows: list[dict[str, Any]], loggers: list[Any]) -> dict[str, float]:
    """results.csv, results.md, the console table, the plots, and the same to every logger."""
    write_csv(out_dir / "results.csv", rows, run_identity(cfg, task))
    write_atomic(out_dir / "results.md", markdown_table(rows))
    print_table(rows)
    title = f"{cfg.detector.name} on {cfg.benchmark.name}"
    plots = {"racc_facc": out_dir / "racc_facc.png", "severity": out_dir / "severity.png"}
    plot_racc_facc(plots["racc_facc"], rows, title)
    plot_severity(plots["severity"], rows, title)
    for lg in loggers:
        if hasattr(lg, "log_table"):
            columns = list(dict.fromkeys(c for r in rows for c in r))
            lg.log_table(key="results", columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        if hasattr(lg, "log_image"):
            for key, path in plots.items():
                lg.log_image(key=key, images=[str(path)])
        lg.log_metrics({f"test/{r['model']}/{r.get('threshold_policy', 'logit0')}/{r['postprocess']}/{r['subset']}/{k}": r[k]
                        for r in rows for k in METRICS})
    return {f"{r['model']}/{r['postprocess']}/{r['subset']}/{k}": r[k] for r in rows
            if str(r["subset"]).startswith("mean") and r.get("threshold_policy", "logit0") == "logit0" for k in METRICS}
