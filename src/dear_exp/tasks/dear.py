"""task=dear: dissect a frozen detector, prune both RAD extremes, refit the head, evaluate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dear_exp.callbacks import DissectCallback
from dear_exp.data.datamodules import BenchmarkDataModule, DiagnosticDataModule, RefitDataModule
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.errors import DearError
from dear_exp.metrics import evaluate_predictions
from dear_exp.model import DEARModule
from dear_exp.prune import build_mask, validate_levels
from dear_exp.report import markdown_table, plot_rad, print_table, save_tensors, write_atomic, write_csv
from dear_exp.tasks.common import ensure_demo, instantiate_group, log_config, make_trainer, train_datamodule
from dear_exp.tasks.train_base import train_base

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Impossible settings fail before any work starts."""
    p = cfg.prune
    validate_levels(p.alpha_low, p.alpha_high)
    build_mask(torch.zeros(8), p.mode, 0.0, 1.0)  # checks the mode name
    if cfg.head.init not in ("zeros", "detector"):
        raise DearError(f"head.init={cfg.head.init!r} must be zeros or detector")


def diagnostic_datamodule(cfg: DictConfig, preprocess: Any) -> DiagnosticDataModule:
    dd = cfg.diag_data
    return DiagnosticDataModule(
        root=dd.root, image_dir=dd.image_dir, mask_dir=dd.mask_dir,
        augment=OmegaConf.to_container(cfg.augment),  # type: ignore[arg-type]
        preprocess=preprocess, batch_size=dd.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
        dissect_max_batches=dd.dissect_max_batches, dissect_augment=dd.dissect_augment,
        source_hint=dd.get("source_hint", ""),
    )


def benchmark_datamodule(cfg: DictConfig, preprocess: Any) -> BenchmarkDataModule:
    b = cfg.benchmark
    return BenchmarkDataModule(
        name=b.name, root=b.root,
        reals=OmegaConf.to_container(b.reals),  # type: ignore[arg-type]
        subsets=OmegaConf.to_container(b.subsets),  # type: ignore[arg-type]
        postprocess=OmegaConf.to_container(cfg.postprocess.settings),  # type: ignore[arg-type]
        preprocess=preprocess, batch_size=b.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
        source_hint=b.get("source_hint", ""),
    )


def run(cfg: DictConfig) -> dict[str, float]:
    validate(cfg)
    ensure_demo(cfg)
    out_dir = Path(cfg.paths.output_dir)
    if not Path(cfg.detector.checkpoint).is_file() and cfg.detector.get("train_if_missing"):
        log.info("%s not found and detector.train_if_missing=true: training it first", cfg.detector.checkpoint)
        train_base(cfg, out_dir=out_dir / "base_training")
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    log.info("Loading detector %s from %s", cfg.detector.name, cfg.detector.checkpoint)
    detector = build_detector(cfg.detector)

    refit_data = RefitDataModule(
        train_datamodule(cfg, preprocess, cfg.augment, cfg.train_data.batch_size),
        diagnostic_datamodule(cfg, preprocess),
    )
    benchmark = benchmark_datamodule(cfg, preprocess)
    refit_data.setup("fit")  # fail on missing data before any work
    benchmark.setup("predict")

    model = DEARModule(detector, lr=cfg.head.lr, betas=tuple(cfg.head.betas), weight_decay=cfg.head.weight_decay,
                       init=cfg.head.init, inpaint_weight=cfg.head.inpaint_weight)
    p = cfg.prune
    dissection = DissectCallback(refit_data.diagnostic, p.mode, p.alpha_low, p.alpha_high, p.seed, out_dir)
    callbacks = [dissection, *instantiate_group(cfg.get("callbacks"), "callback")]
    loggers = instantiate_group(cfg.get("logger"), "logger")
    log_config(loggers, cfg)
    trainer = make_trainer(cfg, callbacks, loggers)

    log.info("Dissecting at %s and refitting the head", detector.feature_layer)
    trainer.fit(model, datamodule=refit_data)
    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
        log.info("Restored the best head (val/bacc %.4f) from %s", float(best.best_model_score), best.best_model_path)

    log.info("Evaluating base and DEAR on %s under %s", cfg.benchmark.name, ", ".join(benchmark.settings))
    outputs = trainer.predict(model, datamodule=benchmark)
    if len(benchmark.sources) == 1:
        outputs = [outputs]  # Lightning unwraps a single dataloader's list
    rows = evaluate_predictions(benchmark.sources, outputs, benchmark.subsets)  # type: ignore[arg-type]

    if trainer.is_global_zero:
        save_outputs(cfg, out_dir, rows, model, dissection, loggers)
    mean = {f"{r['model']}/{r['postprocess']}/{k}": r[k] for r in rows if r["subset"] == "mean"
            for k in ("AUC", "AP", "R.Acc", "F.Acc", "Acc")}
    return mean


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The config keys that tell one run's rows from another's in a combined results table."""
    return {
        "detector": cfg.detector.name, "layer": cfg.detector.net.get("feature_layer", ""),
        "benchmark": cfg.benchmark.name, "prune_mode": cfg.prune.mode,
        "alpha_low": cfg.prune.alpha_low, "alpha_high": cfg.prune.alpha_high, "seed": cfg.seed,
    }


def save_outputs(cfg: DictConfig, out_dir: Path, rows: list[dict[str, Any]], model: DEARModule,
                 dissection: DissectCallback, loggers: list[Any]) -> None:
    head = model.head
    save_tensors(out_dir / "head.safetensors", {"weight": head.linear.weight, "bias": head.linear.bias,
                                                 "mask": head.mask})
    if dissection.scores is not None and dissection.mask is not None:
        plot_rad(out_dir / "rad_hist.png", dissection.scores, dissection.mask,
                 f"{cfg.detector.name} {cfg.detector.net.get('feature_layer', '')}: RAD, "
                 f"{cfg.prune.mode} {cfg.prune.alpha_low}/{cfg.prune.alpha_high}")
    write_csv(out_dir / "results.csv", rows, run_identity(cfg))
    table = markdown_table(rows)
    write_atomic(out_dir / "results.md", table)
    print_table(rows)
    log.info("Wrote results.csv, results.md, rad_scores.csv, rad_hist.png, head.safetensors to %s", out_dir)
    for lg in loggers:
        if hasattr(lg, "log_table"):
            columns = list(rows[0])
            lg.log_table(key="results", columns=columns, data=[[r[c] for c in columns] for r in rows])
            if (out_dir / "rad_hist.png").is_file():
                lg.log_image(key="rad_hist", images=[str(out_dir / "rad_hist.png")])
        lg.log_metrics({f"test/{r['model']}/{r['postprocess']}/{r['subset']}/{k}": r[k]
                        for r in rows for k in ("AUC", "AP", "R.Acc", "F.Acc", "Acc")})
