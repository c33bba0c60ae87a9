"""Shared fixtures: composing the real Hydra config with outputs under tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from dear_exp.__main__ import CONF_DIR, register_resolvers

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(1)  # tests run two at a time on two cores (pytest -n 2)
register_resolvers()


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """compose_cfg(*overrides) -> the config the CLI would run, rooted in tmp_path."""

    def _compose(*overrides: str, root: Path | None = None) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            # threads=1 first (an explicit threads= in overrides wins): tests run two at a time on two cores
            cfg = compose(
                "main",
                overrides=[f"paths.root_dir={root or tmp_path}", "threads=1", *overrides],
                return_hydra_config=True,
            )
        with read_write(cfg), open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "out")
            cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        HydraConfig().set_config(cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]  # the task sees what the CLI gives it: no hydra node
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny embedded data set, built once per test worker; its cache root."""
    from dear_exp.demo import ensure_demo_data

    root = tmp_path_factory.mktemp("cache")
    ensure_demo_data(root / ".cache" / "demo", scale="tiny", seed=0)
    return root
