"""task=train_base: train detector.net from scratch and save it in the released `{'model': ...}` format."""

from __future__ import annotations

from omegaconf import DictConfig

from dear_exp.build import instantiate_group
from dear_exp.training import train_base


def run(cfg: DictConfig) -> dict[str, str]:
    return {"checkpoint": str(train_base(cfg, instantiate_group(cfg.get("logger"), "logger")))}
