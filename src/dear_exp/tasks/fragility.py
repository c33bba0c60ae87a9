"""task=fragility: does DEAR's premise hold for this detector and data? Per channel, its RAD (from
the diagnostic inpaint set) and its fragility under each post-processing setting (fragility.py), the
mean fragility of the bands `prune.alpha_low/alpha_high` would prune and of the kept middle, and a
verdict per setting.

    python -m dear_exp task=fragility postprocess=robust

Writes fragility.csv (one row per channel x setting), fragility.json (the band statistics) and
fragility.png (fragility against RAD percentile, binned, one line per setting, pruned bands shaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from dear_exp import build
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.dissect import rad_scores
from dear_exp.distributed import rendezvous
from dear_exp.errors import DearError
from dear_exp.fragility import analyse
from dear_exp.training import ensure_detector


def run(cfg: DictConfig) -> dict[str, Any]:
    if not any(cfg.postprocess.settings.values()):
        raise DearError(
            "task=fragility compares clean images with processed ones: give a postprocess preset with a setting beyond clean (e.g. postprocess=robust)"
        )
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
    samples = benchmark.first_images(cfg.task.max_images)
    summary = analyse(
        detector,
        scores,
        samples,
        benchmark.settings_beyond_clean(),
        preprocess,
        (float(cfg.prune.alpha_low), float(cfg.prune.alpha_high)),
        cfg.task.bootstrap,
        cfg.task.bins,
        cfg.seed,
        device,
        Path(cfg.paths.work_dir),
        f"{cfg.detector.name}: fragility against RAD ({len(samples)} images)",
        loggers,
    )
    return {f"{s}/verdict": st["verdict"] for s, st in summary.items()}
