"""Detectors that DEAR can dissect; each declares its dissected layer and preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from dear_exp.data.images import Preprocess
from dear_exp.detectors.base import Detector
from dear_exp.detectors.checkpoint import load_strict, read_state_dict


def build_detector(cfg: Any, load_weights: bool = True) -> Detector:
    """Instantiate `detector.net` and load `detector.checkpoint` strictly."""
    detector: Detector = instantiate(cfg.net)
    if load_weights:
        path = Path(cfg.checkpoint)
        state = read_state_dict(path, hint=cfg.get("source_hint", ""), sha256=cfg.get("sha256"))
        load_strict(detector, state, str(path))
    return detector


def preprocess_of(cfg: Any) -> Preprocess:
    p = cfg.preprocess
    return Preprocess(mean=tuple(p.mean), std=tuple(p.std), trim_odd=bool(p.get("trim_odd", False)))
