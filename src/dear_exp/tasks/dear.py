"""task=dear: dissect a frozen detector, prune both RAD extremes, refit the head, evaluate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dear_exp.cache import FeatureCache
from dear_exp.callbacks import DissectCallback
from dear_exp.data.datamodules import DiagnosticDataModule, RefitDataModule, resolve_workers
from dear_exp.data.feature_data import FeatureRefitDataModule
from dear_exp.data.images import Preprocess
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.base import Detector
from dear_exp.distributed import rendezvous
from dear_exp.errors import DearError
from dear_exp.features import FeatureStore, Views, describe_cache
from dear_exp.model import DEARModule, HeadModule
from dear_exp.prune import CALLBACK_MODES, validate_levels
from dear_exp.report import plot_rad, save_tensors
from dear_exp.tasks.common import (
    ensure_demo,
    ensure_detector,
    instantiate_group,
    log_config,
    make_trainer,
    train_datamodule,
)
from dear_exp.tasks.evaluation import (
    benchmark_datamodule,
    calibration_thresholds,
    evaluate,
    report,
    validate_evaluation,
)

log = logging.getLogger(__name__)
HEAD_MODES = ("cached", "online")


def validate(cfg: DictConfig) -> None:
    """Impossible settings fail before any work starts."""
    p = cfg.prune
    validate_levels(p.alpha_low, p.alpha_high)
    if p.mode not in CALLBACK_MODES:
        raise DearError(f"prune.mode={p.mode!r} is not one of {', '.join(CALLBACK_MODES)}")
    if cfg.head.init not in ("zeros", "detector"):
        raise DearError(f"head.init={cfg.head.init!r} must be zeros or detector")
    if cfg.head.mode not in HEAD_MODES:
        raise DearError(f"head.mode={cfg.head.mode!r} must be cached (features extracted once) or online "
                        "(a backbone pass at every step, as the reference)")
    if cfg.head.views < 1:
        raise DearError(f"head.views={cfg.head.views} must be at least 1 augmented view per training image")
    validate_evaluation(cfg.task)
    dd = cfg.diag_data
    if dd.dissect_max_batches < 1:
        raise DearError(f"diag_data.dissect_max_batches={dd.dissect_max_batches} must be at least 1")
    if not dd.dissect_augment and dd.batch_size != 1:
        raise DearError("diag_data.dissect_augment=false reads whole images of different sizes: "
                        "set diag_data.batch_size=1 with it")
    crop, fixed = cfg.augment.crop, cfg.detector.preprocess.get("center_crop")
    if fixed and not cfg.detector.preprocess.get("resize_short") and crop < fixed:
        raise DearError(f"augment.crop={crop} is smaller than detector.preprocess.center_crop={fixed}: the "
                        f"training crops would be zero-padded to {fixed}; use augment=crop224 or augment.crop={fixed}")
    limit = cfg.trainer.get("limit_predict_batches")
    if limit is not None and limit != 1.0:
        raise DearError(f"trainer.limit_predict_batches={limit}: feature rows are always extracted whole, so that "
                        "cache entries are complete; use a smaller benchmark (e.g. demo.scale=tiny) to debug")


def diagnostic_datamodule(cfg: DictConfig, preprocess: Preprocess) -> DiagnosticDataModule:
    dd = cfg.diag_data
    return DiagnosticDataModule(
        root=dd.root, image_dir=dd.image_dir, mask_dir=dd.mask_dir,
        augment=OmegaConf.to_container(cfg.augment),  # type: ignore[arg-type]
        preprocess=preprocess, batch_size=dd.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
        dissect_max_batches=dd.dissect_max_batches, dissect_augment=dd.dissect_augment,
        source_hint=dd.get("source_hint", ""), rad_weight=dd.get("rad_weight", "mask"),
    )


def feature_store(cfg: DictConfig, trainer: L.Trainer, detector: Detector) -> FeatureStore:
    return FeatureStore(FeatureCache(cfg.cache.dir, cfg.cache.enabled), trainer, detector,
                        resolve_workers(cfg.num_workers))


def cached_refit_data(cfg: DictConfig, store: FeatureStore, refit: RefitDataModule) -> FeatureRefitDataModule:
    """K augmented views of every training and inpaint image, and the centre-crop validation rows."""
    main, diag, k = refit.main, refit.diagnostic, cfg.head.views
    assert main.train_set is not None and main.val_set is not None and diag.dataset is not None
    train, inpaint, val = store.rows("views", [
        (f"train_data train x{k} views", Views(main.train_set, k, cfg.seed)),
        (f"diag_data inpaint x{k} views", Views(diag.dataset, k, cfg.seed)),
        ("train_data val [centre crop]", Views(main.val_set, 1, cfg.seed)),
    ], logits=False, batch_size=cfg.train_data.batch_size)
    return FeatureRefitDataModule(train, inpaint, val, k, cfg.train_data.batch_size, cfg.diag_data.batch_size, cfg.seed)


def run(cfg: DictConfig) -> dict[str, float]:
    validate(cfg)
    ensure_demo(cfg, [cfg.train_data.root, cfg.diag_data.root, cfg.benchmark.root])
    out_dir = Path(cfg.paths.output_dir)
    ensure_detector(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    log.info("Loading detector %s from %s", cfg.detector.name, cfg.detector.checkpoint)
    detector = build_detector(cfg.detector)

    refit_data = RefitDataModule(
        train_datamodule(cfg, preprocess, cfg.augment, cfg.train_data.batch_size),
        diagnostic_datamodule(cfg, preprocess),
    )
    refit_data.setup("fit")  # fail on missing data before any work: training data first
    benchmark = benchmark_datamodule(cfg, preprocess)
    benchmark.setup("predict")

    p, h = cfg.prune, cfg.head
    dissection = DissectCallback(refit_data.diagnostic, p.mode, p.alpha_low, p.alpha_high, p.seed, out_dir,
                                 detector=detector)
    callbacks = [dissection, *instantiate_group(cfg.get("callbacks"), "callback")]
    loggers = instantiate_group(cfg.get("logger"), "logger")
    log_config(loggers, cfg)
    trainer = make_trainer(cfg, callbacks, loggers)
    rendezvous(trainer)  # under DDP: every rank from here on, so cache decisions are taken once
    store = feature_store(cfg, trainer, detector)
    dissection.store = store

    model: HeadModule
    data: L.LightningDataModule
    if h.mode == "cached":
        own = detector.linear_head() if h.init == "detector" else None
        model = HeadModule(detector.feature_channels, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay,
                           init=h.init, inpaint_weight=h.inpaint_weight, own_head=own)
        data = cached_refit_data(cfg, store, refit_data)
    else:
        model = DEARModule(detector, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay,
                           init=h.init, inpaint_weight=h.inpaint_weight)
        data = refit_data
    log.info("Dissecting at %s and refitting the head (%s)", detector.feature_layer, h.mode)
    trainer.fit(model, datamodule=data)
    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    if best is not None and best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
        log.info("Restored the best head (val/bacc %.4f) from %s", float(best.best_model_score), best.best_model_path)

    head = model.head.cpu().eval()
    policies = tuple(cfg.task.thresholds)
    calibrated = None
    if "calibrated" in policies:
        assert refit_data.main.val_set is not None
        calibrated = calibration_thresholds(store, refit_data.main.val_set.samples, preprocess, head, cfg.seed,
                                            cfg.benchmark.batch_size)
    rows = evaluate(store, benchmark, head, policies, calibrated, cfg.task.bootstrap, cfg.seed)
    log.info("Feature cache: %s", describe_cache(store.cache))
    if not trainer.is_global_zero:
        return {}
    save_artefacts(cfg, out_dir, head, detector, dissection, loggers)
    metrics = report(cfg, "dear", out_dir, rows, loggers)
    log.info("Wrote results.csv, results.md, racc_facc.png, severity.png, rad_scores.csv, rad_hist.png, "
             "head.safetensors to %s", out_dir)
    return metrics


def save_artefacts(cfg: DictConfig, out_dir: Path, head: torch.nn.Module, detector: Detector,
                   dissection: DissectCallback, loggers: list[Any]) -> None:
    save_tensors(out_dir / "head.safetensors", {"weight": head.linear.weight, "bias": head.linear.bias,
                                                 "mask": head.mask})
    if dissection.scores is None or dissection.mask is None:
        return
    plot = out_dir / "rad_hist.png"
    plot_rad(plot, dissection.scores, dissection.mask,
             f"{cfg.detector.name} {detector.feature_layer}: RAD, "
             f"{cfg.prune.mode} {cfg.prune.alpha_low}/{cfg.prune.alpha_high}")
    for lg in loggers:
        if hasattr(lg, "log_image"):
            lg.log_image(key="rad_hist", images=[str(plot)])
