"""A detector whose weights are read only when a backbone pass needs them.

A sweep job after the first reads every row from the feature cache: what it needs of the detector is
its identity (the sha256 of its weights, which keys every cache entry), its class, dissected layer and
channel count, its released gate and its own classifier. `card_of` keeps those in the cache, under the
checkpoint file's content hash and the detector's config, the first time the weights are loaded;
later jobs get a `DeferredDetector` that answers from the card and loads the weights (checking their
fingerprint against the card's) only on a cache miss, e.g. a post-processing setting not seen before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf
from torch import nn

from dear_exp.cache import FeatureCache, Tensors, module_fingerprint
from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError
from dear_exp.files import file_sha256

log = logging.getLogger(__name__)


def card_key(cfg: Any) -> dict[str, Any]:
    """What identifies a detector before its weights are read: the checkpoint file's content hash,
    the checksum it must match (`detector.sha256`) and the resolved `detector.net` config, plus the
    size and modification time of every other existing file the config names (a release spread over
    several files)."""
    net = OmegaConf.to_container(cfg.net, resolve=True)
    others = sorted(str(v) for v in _strings(net) if v != str(cfg.checkpoint) and Path(v).is_file())
    return {
        "checkpoint_sha256": content_hash(Path(cfg.checkpoint)),
        "sha256": cfg.get("sha256"),
        "net": net,
        "hint": cfg.get("source_hint", ""),
        "files": [[p, Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in others],
    }


_HASHED: dict[tuple[str, int, int], str] = {}


def content_hash(path: Path) -> str:
    """The file's sha256, read once per process while its path, size and modification time stay the
    same: the jobs of a multirun in one process (Hydra's basic launcher) hash a 1.2 GB ViT-L release
    once, not once each."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = file_sha256(path)
    return _HASHED[key]


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def card_of(detector: Detector) -> Tensors:
    """A loaded detector's card: its identity and what the refit and the masks read of it."""
    info = {
        "class": type(detector).__name__,
        "layer": detector.feature_layer,
        "channels": detector.feature_channels,
        "fingerprint": module_fingerprint(detector),
    }
    out = {"info": torch.frombuffer(bytearray(json.dumps(info).encode()), dtype=torch.uint8).clone()}
    mask = detector.released_mask()
    if mask is not None:
        out["released_mask"] = mask.detach().cpu()
    head = detector.linear_head()
    if head is not None:
        out["head_weight"], out["head_bias"] = head.weight.detach().cpu(), head.bias.detach().cpu()
    return out


class DeferredDetector:
    """Stands in for a Detector (duck-typed) from its card; anything the card does not answer loads the
    weights first (logged once) and is the loaded detector's."""

    def __init__(self, cfg: Any, card: Tensors, load: Any) -> None:
        self._cfg, self._card, self._load, self._real = cfg, card, load, None
        info = json.loads(bytes(card["info"].tolist()).decode())
        self.class_name, self.feature_layer = info["class"], info["layer"]
        self.feature_channels, self.fingerprint = int(info["channels"]), info["fingerprint"]

    def released_mask(self) -> torch.Tensor | None:
        return self._card.get("released_mask")

    def linear_head(self) -> nn.Linear | None:
        if "head_weight" not in self._card:
            return None
        w = self._card["head_weight"]
        head = nn.Linear(w.shape[1], w.shape[0]).to(w.dtype)
        with torch.no_grad():
            head.weight.copy_(w)
            head.bias.copy_(self._card["head_bias"])
        return head

    def materialise(self) -> Detector:
        if self._real is None:
            log.info("Loading detector weights from %s (a backbone pass is needed)", self._cfg.checkpoint)
            real = self._load(self._cfg)
            if module_fingerprint(real) != self.fingerprint:
                raise DearError(
                    f"the weights in {self._cfg.checkpoint} differ from those the cache recorded for that file; "
                    "clear the cache (task=cache task.action=clear) or point cache.dir elsewhere"
                )
            self._real = real
        return self._real

    def __getattr__(self, name: str) -> Any:  # only for what __init__ did not set
        return getattr(self.materialise(), name)


def real(detector: Detector | DeferredDetector) -> Detector:
    """The loaded detector (loading a deferred one's weights)."""
    return detector.materialise() if isinstance(detector, DeferredDetector) else detector


def fingerprint(detector: Detector | DeferredDetector) -> str:
    """The sha256 of the detector's weights (from the card without loading them)."""
    return detector.fingerprint if isinstance(detector, DeferredDetector) else module_fingerprint(detector)


def class_name(detector: Detector | DeferredDetector) -> str:
    return detector.class_name if isinstance(detector, DeferredDetector) else type(detector).__name__


def load_detector(cfg: Any, cache: FeatureCache, build: Any) -> Detector:
    """The detector of `cfg` (`build(cfg)` loads it): deferred when the cache holds its card (the weights
    are then read only if a backbone pass is needed), else loaded and its card written."""
    if not cache.enabled or not Path(cfg.checkpoint).is_file():
        return cast(Detector, build(cfg))
    loaded: list[Detector] = []

    def compute() -> Tensors:
        loaded.append(build(cfg))
        return card_of(loaded[0])

    card = cache.fetch("detector", card_key(cfg), compute, describe=f"{cfg.name} card", collective=False)
    if loaded:
        return loaded[0]
    log.info(
        "Detector %s: its identity from the cache; the weights are read only if a backbone pass needs them", cfg.name
    )
    return cast(Detector, DeferredDetector(cfg, card, build))
