"""task=fragility: does DEAR's premise hold for this detector and data? Per channel, its RAD (from
the diagnostic inpaint set) and its fragility under each post-processing setting (fragility.py), the
mean fragility of the bands `prune.alpha_low/alpha_high` would prune and of the kept middle, and a
verdict per setting.

    python -m dear_exp task=fragility postprocess=robust

Writes fragility.csv (one row per channel x setting), fragility.json (the band statistics) and
fragility.png (fragility against RAD percentile, binned, one line per setting, pruned bands shaded).
On the embedded demo (`task.cues=auto`) also cues.csv/json/png: how much each of the demo world's
known cues drives each channel (`dear_exp.cues`), so RAD's extremes can be checked against them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from dear_exp import build, distributed
from dear_exp.cues import attribute
from dear_exp.data.datamodules import BenchmarkDataModule
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.base import Detector
from dear_exp.dissect import rad_scores
from dear_exp.distributed import rendezvous
from dear_exp.errors import DearError
from dear_exp.features import FeatureStore
from dear_exp.fragility import Analysis, analyse
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    if not any(cfg.postprocess.settings.values()):
        raise DearError(
            "task=fragility compares clean images with processed ones: give a postprocess preset with a setting beyond clean (e.g. postprocess=robust)"
        )
    demo_world(cfg, cfg.task.cues)  # an impossible task.cues fails before any work
    build.ensure_demo(cfg, [cfg.train_data.root, cfg.diag_data.root, cfg.benchmark.root])
    ensure_detector(cfg)
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    detector = build_detector(cfg.detector).eval()
    diag = build.diag_data(cfg, preprocess)
    diag.setup("fit")
    benchmark = build.benchmark(cfg, preprocess)
    loggers = build.instantiate_group(cfg.get("logger"), "logger")
    build.log_config(loggers, cfg)
    trainer = build.make_trainer(cfg.trainer, [], loggers, cfg.progress)
    rendezvous(trainer)
    store, device = build.feature_store(cfg, trainer, detector), trainer.strategy.root_device
    scores = rad_scores(diag, detector, device, store)[0]
    summary = premise(cfg, cfg.task, detector, scores, benchmark, device, loggers, store)
    return {f"{s}/verdict": st["verdict"] for s, st in summary.items()}


def premise(
    cfg: DictConfig,
    task: DictConfig,
    detector: Detector,
    scores: torch.Tensor,
    benchmark: BenchmarkDataModule,
    device: torch.device,
    loggers: list[Any],
    store: FeatureStore,
) -> dict[str, dict[str, Any]]:
    """Fragility against RAD on the benchmark's first images (task=fragility, and task=dear with
    task.fragility.enabled; every rank measures a share), then, on rank 0, the cue attribution where
    the demo's cues are known."""
    a = Analysis(
        detector,
        scores,
        preprocess_of(cfg.detector),
        (float(cfg.prune.alpha_low), float(cfg.prune.alpha_high)),
        task.bootstrap,
        task.bins,
        cfg.seed,
        device,
        Path(cfg.paths.work_dir),
        loggers,
    )
    samples = benchmark.first_images(task.max_images)
    title = f"{cfg.detector.name}: fragility against RAD ({len(samples)} images)"
    summary = analyse(a, samples, benchmark.settings_beyond_clean(), title, store)
    if distributed.rank() == 0 and demo_world(cfg, task.cues):
        from dear_exp.demo.cues import CUES, cue_probes

        log.info("cue attribution: %d probes per cue of the demo world (task.cues=%s)", task.cue_probes, task.cues)
        probes = cue_probes(task.cue_probes, cfg.demo.seed, texture=cfg.demo.texture)
        letters = {name: cue.letter for name, cue in CUES.items()}
        attribute(a, probes, letters, f"{cfg.detector.name}: what drives each channel, against RAD")
    return summary


def demo_world(cfg: DictConfig, cues: str) -> bool:
    """Whether to attribute channels to the demo's cues: `auto` when the detector's training data is
    the embedded demo (the only world whose cues are known), `always` (refused elsewhere), `never`."""
    in_demo = Path(cfg.train_data.root).resolve().is_relative_to(Path(cfg.demo.dir).resolve())
    if cues == "always" and not in_demo:
        raise DearError(
            f"task.cues=always needs a detector trained on the embedded demo (train_data.root={cfg.train_data.root} "
            f"is not in demo.dir={cfg.demo.dir}): only the demo's cues are known; use task.cues=auto or never"
        )
    return cues == "always" or (cues == "auto" and in_demo)
