"""task=dear: dissect a frozen detector, prune both RAD extremes, refit the head, evaluate; beside
DEAR, the controls `refit` (the same refit, no channel pruned) and `random` (as many channels pruned
at random), so that every run shows what the refit alone does and what pruning adds."""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dear_exp.cache import FeatureCache, Tensors, tensors_fingerprint
from dear_exp.data.datamodules import DiagnosticDataModule, RefitDataModule, resolve_workers
from dear_exp.data.feature_data import FeatureRefitDataModule
from dear_exp.data.images import Preprocess
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.base import Detector
from dear_exp.dissect import rad_scores
from dear_exp.distributed import rendezvous
from dear_exp.errors import DearError
from dear_exp.features import FeatureStore, Views, describe_cache
from dear_exp.model import DEARModule, HeadModule, MaskedLinearHead
from dear_exp.prune import ALL_MODES, channel_mask, needs_rad, random_mask, validate_levels
from dear_exp.refit import HeadFit, NewtonFit, adam_fit, newton_fit
from dear_exp.report import MODEL_NAMES, plot_rad, save_dissection, save_tensors, write_atomic
from dear_exp.tasks.common import (
    ensure_demo,
    ensure_detector,
    instantiate_group,
    log_config,
    log_summary,
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
SOLVERS = ("newton", "adam")


def l2_grid(head: DictConfig) -> list[Any]:
    """head.l2 as a list: a grid, or one fixed strength given as a number."""
    return list(head.l2) if OmegaConf.is_list(head.l2) else [head.l2]


def validate(cfg: DictConfig) -> None:
    """Impossible settings fail before any work starts."""
    p, h = cfg.prune, cfg.head
    validate_levels(p.alpha_low, p.alpha_high)
    if p.mode not in ALL_MODES:
        raise DearError(f"prune.mode={p.mode!r} is not one of {', '.join(ALL_MODES)}")
    if h.init not in ("zeros", "detector"):
        raise DearError(f"head.init={h.init!r} must be zeros or detector")
    if h.mode not in HEAD_MODES:
        raise DearError(f"head.mode={h.mode!r} must be cached (features extracted once) or online "
                        "(a backbone pass at every step, as the reference)")
    if h.solver not in SOLVERS:
        raise DearError(f"head.solver={h.solver!r} must be newton (solved to convergence) or adam (the reference's "
                        "optimiser, head=reference)")
    if h.mode == "online" and h.solver != "adam":
        raise DearError("head.mode=online trains through the backbone at every step, which needs head.solver=adam "
                        "(head=reference); head.solver=newton solves on the cached rows (head.mode=cached)")
    if h.solver == "newton":
        l2 = l2_grid(h)
        if not l2 or any(not isinstance(v, (int, float)) or v <= 0 for v in l2):
            raise DearError(f"head.l2={l2} must be a non-empty list of L2 strengths > 0 (e.g. head.l2=[0.01])")
        if h.tol <= 0 or not isinstance(h.max_iter, int) or h.max_iter < 1:
            raise DearError(f"head.tol={h.tol} must be > 0 and head.max_iter={h.max_iter} at least 1")
    if not isinstance(h.views, int) or h.views < 1:
        raise DearError(f"head.views={h.views} must be a whole number of augmented views per image >= 1 (e.g. 4)")
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


def model_names(cfg: DictConfig) -> list[str]:
    """The heads a run fits, controls first, the run's own model last: `dear`, or `refit` with
    prune=none (the refit alone) and `random` with prune=random."""
    main = {"none": "refit", "random": "random"}.get(cfg.prune.mode, "dear")
    if not cfg.task.controls or main == "refit":
        return [main]
    return [m for m in ("refit", "random") if m != main] + [main]


def masks_for(cfg: DictConfig, scores: torch.Tensor | None, detector: Detector) -> dict[str, torch.Tensor]:
    """The channel mask of every head: the run's own from its prune mode, `refit` keeps all, `random`
    prunes as many channels as the run's own, chosen with prune.seed."""
    p, channels = cfg.prune, detector.feature_channels
    names = model_names(cfg)
    main = channel_mask(p.mode, scores, channels, p.alpha_low, p.alpha_high, p.seed, detector.released_mask())
    masks = {"refit": torch.ones(channels), "random": random_mask(channels, channels - int(main.sum()), p.seed)}
    return {name: main if name == names[-1] else masks[name] for name in names}


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


def cached_rows(cfg: DictConfig, store: FeatureStore, refit: RefitDataModule) -> tuple[Tensors, Tensors, Tensors]:
    """K augmented views of every training and inpaint image, and the centre-crop validation rows."""
    main, diag, k = refit.main, refit.diagnostic, cfg.head.views
    assert main.train_set is not None and main.val_set is not None and diag.dataset is not None
    train, inpaint, val = store.rows("views", [
        (f"train_data train x{k} views", Views(main.train_set, k, cfg.seed)),
        (f"diag_data inpaint x{k} views", Views(diag.dataset, k, cfg.seed)),
        ("train_data val [centre crop]", Views(main.val_set, 1, cfg.seed)),
    ], logits=False, batch_size=cfg.train_data.batch_size)
    return train, inpaint, val


def fit_callbacks(cfg: DictConfig, out_dir: Path, name: str) -> list[Any]:
    """Fresh callbacks for one Adam refit; the best-head checkpoint of head `name` goes to
    <callbacks.model_checkpoint.dirpath>/<name>/, so the fits of one run do not share a file."""
    callbacks = instantiate_group(cfg.get("callbacks"), "callback")
    for c in callbacks:
        if isinstance(c, ModelCheckpoint):
            c.dirpath = str(Path(c.dirpath or out_dir / "checkpoints") / name)
    return callbacks


def fit_heads(cfg: DictConfig, masks: dict[str, torch.Tensor], refit: RefitDataModule, store: FeatureStore,
              detector: Detector, device: torch.device, loggers: list[Any], out_dir: Path) -> list[HeadFit]:
    """Every head of the run, each refitted from the same rows with the configured solver. A Newton
    solve is a feature-cache entry (rank 0 solves, the others receive it; a sweep's controls are
    solved once); an Adam fit is a Lightning fit of its own (the run's loggers follow the run's own
    model, the controls report their summary)."""
    h, channels = cfg.head, detector.feature_channels
    rows = cached_rows(cfg, store, refit) if h.mode == "cached" else None
    own = detector.linear_head() if h.init == "detector" else None
    if h.init == "detector" and own is None:
        raise DearError("head.init=detector needs a classifier on the pooled dissected layer; "
                        "this detector has layers after it: use head.init=zeros")
    fits = []
    rows_key = tensors_fingerprint(t for r in rows for t in (r["pooled"], r["label"])) if rows is not None else ""
    for name, mask in masks.items():
        kept = int(mask.sum())
        log.info("Refitting head %s (%s, %d of %d channels) with %s", name, MODEL_NAMES.get(name, name), kept,
                 channels, h.solver)
        if h.solver == "newton":
            assert rows is not None
            init = None
            if own is not None:
                init = MaskedLinearHead(channels)
                init.linear.load_state_dict(own.state_dict())
            l2 = [float(v) for v in l2_grid(h)]
            parts = {"solver": "newton", "rows": rows_key, "mask": tensors_fingerprint([mask.float()]), "l2": l2,
                     "inpaint_weight": float(h.inpaint_weight), "tol": float(h.tol), "max_iter": int(h.max_iter),
                     "init": tensors_fingerprint(init.state_dict().values()) if init is not None else None,
                     "on": device.type}
            fit = NewtonFit.from_tensors(store.fit(parts, lambda: newton_fit(
                *rows, mask, h.inpaint_weight, l2, h.tol, h.max_iter, init, device).to_tensors(),
                f"{name} head, {kept} of {channels} channels"))
            fits.append(HeadFit(name, fit.head, {"kept": kept, **fit.summary()}, fit.path))
            continue
        module: HeadModule
        if rows is not None:
            module = HeadModule(channels, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay, init=h.init,
                                inpaint_weight=h.inpaint_weight, own_head=own)
            data: L.LightningDataModule = FeatureRefitDataModule(*rows, h.views, cfg.train_data.batch_size,
                                                                 cfg.diag_data.batch_size, cfg.seed)
        else:
            module = DEARModule(detector, lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay, init=h.init,
                                inpaint_weight=h.inpaint_weight)
            data = refit
        module.head.set_mask(mask)
        own_run = name == list(masks)[-1]
        trainer = make_trainer(cfg, fit_callbacks(cfg, out_dir, name), loggers if own_run else [])
        summary = adam_fit(module, data, trainer)
        fits.append(HeadFit(name, module.head.cpu().eval(), {"kept": kept, **summary}, []))
    return fits


def run(cfg: DictConfig) -> dict[str, float]:
    validate(cfg)
    ensure_demo(cfg, [cfg.train_data.root, cfg.diag_data.root, cfg.benchmark.root])
    out_dir = Path(cfg.paths.output_dir)
    ensure_detector(cfg, out_dir)
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    log.info("Loading detector %s from %s", cfg.detector.name, cfg.detector.checkpoint)
    detector = build_detector(cfg.detector)
    refit_data = RefitDataModule(train_datamodule(cfg, preprocess, cfg.augment, cfg.train_data.batch_size),
                                 diagnostic_datamodule(cfg, preprocess))
    refit_data.setup("fit")  # fail on missing data before any work: training data first
    benchmark = benchmark_datamodule(cfg, preprocess)
    benchmark.setup("predict")
    loggers = instantiate_group(cfg.get("logger"), "logger")
    log_config(loggers, cfg)
    trainer = make_trainer(cfg, instantiate_group(cfg.get("callbacks"), "callback"), loggers)
    rendezvous(trainer)  # under DDP: every rank from here on, so cache decisions are taken once
    store = feature_store(cfg, trainer, detector)
    device = trainer.strategy.root_device

    # 1. dissect: RAD per channel on the diagnostic inpaint set
    scores = rad_scores(refit_data.diagnostic, detector, device, store)[0] if needs_rad(cfg.prune.mode) else None
    # 2. prune: the run's mask, and the controls' masks
    masks = masks_for(cfg, scores, detector)
    main = list(masks)[-1]
    log.info("prune.mode=%s keeps %d of %d channels", cfg.prune.mode, int(masks[main].sum()), masks[main].numel())
    # 3. refit the head of every model on the same rows
    fits = fit_heads(cfg, masks, refit_data, store, detector, device, loggers, out_dir)
    # 4. evaluate the base detector and every head from one backbone pass per image
    heads = {f.name: f.head for f in fits}
    policies = tuple(cfg.task.thresholds)
    calibrated = None
    if "calibrated" in policies:
        assert refit_data.main.val_set is not None
        calibrated = calibration_thresholds(store, refit_data.main.val_set.samples, preprocess, heads, cfg.seed,
                                            cfg.benchmark.batch_size)
    rows = evaluate(store, benchmark, heads, policies, calibrated, cfg.task.bootstrap, cfg.seed)
    log.info("Feature cache: %s", describe_cache(store.cache))
    if not trainer.is_global_zero:
        return {}
    written = save_artefacts(cfg, out_dir, fits, scores, detector, loggers)
    metrics = report(cfg, "dear", out_dir, rows, loggers)
    log.info("Wrote results.csv, results.md, racc_facc.png, severity.png, %s to %s", ", ".join(written), out_dir)
    return metrics


REFIT_COLUMNS = ("model", "solver", "kept", "chosen", "l2", "iterations", "objective", "grad_max", "converged",
                 "val_loss", "val_bacc", "epochs", "val_bacc_last")


def refit_lines(fits: list[HeadFit]) -> list[dict[str, Any]]:
    """refit.csv: per head, every L2 strength the Newton solve tried (the kept one marked) or the Adam fit's
    summary: what shows that each fit converged and how it validated."""
    lines = []
    for fit in fits:
        solves = [{**asdict(s), "chosen": s.l2 == fit.summary["l2"]} for s in fit.path] or [{"chosen": True}]
        for solve in solves:
            lines.append({"model": fit.name, **fit.summary, **solve})
    return lines


def print_refit(fits: list[HeadFit]) -> None:
    from rich.console import Console
    from rich.table import Table

    adam = any(f.summary["solver"] == "adam" for f in fits)
    table = Table(title="head refit (val: train_data's validation split" + ("; adam: the kept epoch's val/bacc)"
                                                                           if adam else "; l2: the one kept)"))
    for name in ("model", "solver", "kept", "l2", "iterations", "objective", "max |grad|", "converged", "val BCE",
                 "val bacc"):
        table.add_column(name, justify="left" if name in ("model", "solver") else "right")
    for fit in fits:
        s = fit.summary

        def num(key: str, fmt: str) -> str:
            value = s.get(key)
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

        table.add_row(MODEL_NAMES.get(fit.name, fit.name), s["solver"], str(s["kept"]), num("l2", "g"),
                      num("iterations", "d") or num("epochs", "d") + " ep", num("objective", ".6g"),
                      num("grad_max", ".2g"), str(s.get("converged", "")), num("val_loss", ".4f"),
                      num("val_bacc", ".3f"))
    Console(width=max(120, Console().width)).print(table)


def save_artefacts(cfg: DictConfig, out_dir: Path, fits: list[HeadFit], scores: torch.Tensor | None,
                   detector: Detector, loggers: list[Any]) -> list[str]:
    """The run's own head (head.safetensors), each control's (head_<name>.safetensors), refit.csv, the
    dissection and its plot; the fit summaries to every logger. Returns the names written."""
    written = []
    for i, fit in enumerate(fits):
        name = "head.safetensors" if i == len(fits) - 1 else f"head_{fit.name}.safetensors"
        save_tensors(out_dir / name, {"weight": fit.head.linear.weight, "bias": fit.head.linear.bias,
                                      "mask": fit.head.mask})
        written.append(name)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REFIT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(refit_lines(fits))
    write_atomic(out_dir / "refit.csv", buf.getvalue())
    print_refit(fits)
    log_summary(loggers, {f"refit/{f.name}/{k}": float(v) for f in fits for k, v in f.summary.items()
                          if isinstance(v, (int, float))})
    if fits[-1].summary["solver"] == "adam":  # W&B's summary is the last epoch's unless told: the kept epoch's
        log_summary(loggers, {"val/bacc": fits[-1].summary["val_bacc"]})
    own = fits[-1].head.mask
    save_dissection(out_dir, scores, own)
    written += ["refit.csv", "rad_scores.csv", "dissection.safetensors"]
    if scores is not None:
        plot = out_dir / "rad_hist.png"
        plot_rad(plot, scores, own, f"{cfg.detector.name} {detector.feature_layer}: RAD, "
                                    f"{cfg.prune.mode} {cfg.prune.alpha_low}/{cfg.prune.alpha_high}")
        for lg in loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key="rad_hist", images=[str(plot)])
        written.append("rad_hist.png")
    return written
