"""Detectors that DEAR can dissect; each declares its dissected layer and preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from dear_exp.data.images import Preprocess
from dear_exp.detectors.base import Detector
from dear_exp.detectors.checkpoint import fetch_from_hub


def build_detector(cfg: Any, load_weights: bool = True) -> Detector:
    """Instantiate `detector.net` and load `detector.checkpoint` strictly; when the file is missing
    and `detector.hub` names a Hub repo and file, download it there first."""
    detector: Detector = instantiate(cfg.net)
    if load_weights:
        hub = cfg.get("hub")
        if hub and not Path(cfg.checkpoint).is_file():
            fetch_from_hub(Path(cfg.checkpoint), hub.repo_id, hub.filename, hub.get("revision"))
        detector.load_checkpoint(Path(cfg.checkpoint), hint=cfg.get("source_hint", ""), sha256=cfg.get("sha256"))
    return detector


def preprocess_of(cfg: Any) -> Preprocess:
    p = cfg.preprocess
    return Preprocess(
        mean=tuple(p.mean),
        std=tuple(p.std),
        trim_odd=bool(p.get("trim_odd", False)),
        resize_short=p.get("resize_short"),
        center_crop=p.get("center_crop"),
    )
