"""Scoring a model on a benchmark under every post-processing setting, and writing the report.

Shared by task=dear (base and DEAR from one backbone pass) and task=evaluate (any detector as
released, optionally with a saved DEAR head)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from dear_exp.data.datamodules import BenchmarkDataModule
from dear_exp.data.images import Preprocess
from dear_exp.metrics import METRICS, evaluate_predictions
from dear_exp.model import DEARModule
from dear_exp.report import markdown_table, print_table, write_atomic, write_csv

log = logging.getLogger(__name__)


def benchmark_datamodule(cfg: DictConfig, preprocess: Preprocess) -> BenchmarkDataModule:
    b = cfg.benchmark
    return BenchmarkDataModule(
        name=b.name, root=b.root,
        reals=OmegaConf.to_container(b.reals),  # type: ignore[arg-type]
        subsets=OmegaConf.to_container(b.subsets),  # type: ignore[arg-type]
        postprocess=OmegaConf.to_container(cfg.postprocess.settings),  # type: ignore[arg-type]
        preprocess=preprocess, batch_size=b.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
        source_hint=b.get("source_hint", ""),
    )


def run_identity(cfg: DictConfig, task: str) -> dict[str, Any]:
    """The config keys that tell one run's rows from another's in a combined results table."""
    net = cfg.detector.net
    return {
        "task": task, "detector": cfg.detector.name, "layer": net.get("feature_layer", net.get("block", "")),
        "benchmark": cfg.benchmark.name, "prune_mode": cfg.prune.mode,
        "alpha_low": cfg.prune.alpha_low, "alpha_high": cfg.prune.alpha_high, "seed": cfg.seed,
    }


def evaluate(trainer: L.Trainer, model: DEARModule, benchmark: BenchmarkDataModule,
             models: tuple[str, ...]) -> list[dict[str, Any]]:
    log.info("Evaluating %s on %s under %s", "/".join(models), benchmark.name, ", ".join(benchmark.settings))
    outputs = trainer.predict(model, datamodule=benchmark)
    if len(benchmark.sources) == 1:
        outputs = [outputs]  # Lightning unwraps a single dataloader's list
    return evaluate_predictions(benchmark.sources, outputs, benchmark.subsets, models)  # type: ignore[arg-type]


def report(cfg: DictConfig, task: str, out_dir: Path, rows: list[dict[str, Any]], loggers: list[Any]) -> dict[str, float]:
    """results.csv, results.md, the console table, and the same rows to every logger."""
    write_csv(out_dir / "results.csv", rows, run_identity(cfg, task))
    write_atomic(out_dir / "results.md", markdown_table(rows))
    print_table(rows)
    for lg in loggers:
        if hasattr(lg, "log_table"):
            columns = list(rows[0])
            lg.log_table(key="results", columns=columns, data=[[r[c] for c in columns] for r in rows])
        lg.log_metrics({f"test/{r['model']}/{r['postprocess']}/{r['subset']}/{k}": r[k] for r in rows for k in METRICS})
    return {f"{r['model']}/{r['postprocess']}/{k}": r[k] for r in rows if r["subset"] == "mean" for k in METRICS}
