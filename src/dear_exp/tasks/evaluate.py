"""task=evaluate: score a detector as released (and optionally a saved DEAR head) without training."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.errors import DearError
from dear_exp.distributed import rendezvous
from dear_exp.features import describe_cache
from dear_exp.model import MaskedLinearHead
from dear_exp.tasks.dear import feature_store
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


def load_head(channels: int, path: Path) -> MaskedLinearHead:
    """A `head.safetensors` written by task=dear (weight, bias, mask) for this detector's layer, in the
    precision it was saved in (a solved head is float64)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise DearError(f"DEAR head not found: {path}; give the head.safetensors of a task=dear run")
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise DearError(f"cannot read DEAR head {path} ({exc}); give the head.safetensors of a task=dear run") from None
    expected = {"weight": (1, channels), "bias": (1,), "mask": (channels,)}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        raise DearError(f"DEAR head {path} has {got}, this detector's layer needs {expected}; "
                        "use the head of a run with the same detector and layer")
    head = MaskedLinearHead(channels, dtype=tensors["weight"].dtype)
    head.linear.load_state_dict({"weight": tensors["weight"], "bias": tensors["bias"]})
    head.set_mask(tensors["mask"])
    return head


def run(cfg: DictConfig) -> dict[str, float]:
    validate_evaluation(cfg.task)
    ensure_demo(cfg, [cfg.benchmark.root] + ([cfg.train_data.root] if cfg.detector.get("train_if_missing") else []))
    ensure_detector(cfg, Path(cfg.paths.output_dir))
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    log.info("Loading detector %s from %s", cfg.detector.name, cfg.detector.checkpoint)
    detector = build_detector(cfg.detector)
    heads = {}
    if cfg.task.get("head"):  # head_refit.safetensors -> model `refit`; head.safetensors -> `dear`
        path = Path(cfg.task.head)
        name = path.stem.removeprefix("head_") if path.stem.startswith("head_") else "dear"
        heads[name] = load_head(detector.feature_channels, path)
    benchmark = benchmark_datamodule(cfg, preprocess)
    benchmark.setup("predict")
    loggers = instantiate_group(cfg.get("logger"), "logger")
    log_config(loggers, cfg)
    trainer = make_trainer(cfg, [], loggers)
    rendezvous(trainer)
    store = feature_store(cfg, trainer, detector)
    policies = tuple(cfg.task.thresholds)
    calibrated = None
    if "calibrated" in policies:  # on the validation split of train_data
        ensure_demo(cfg, [cfg.train_data.root])
        data = train_datamodule(cfg, preprocess, cfg.augment, cfg.benchmark.batch_size)
        data.setup("validate")
        assert data.val_set is not None
        calibrated = calibration_thresholds(store, data.val_set.samples, preprocess, heads, cfg.seed,
                                            cfg.benchmark.batch_size)
    rows = evaluate(store, benchmark, heads, policies, calibrated, cfg.task.bootstrap, cfg.seed)
    log.info("Feature cache: %s", describe_cache(store.cache))
    if not trainer.is_global_zero:
        return {}
    return report(cfg, "evaluate", Path(cfg.paths.output_dir), rows, loggers)
