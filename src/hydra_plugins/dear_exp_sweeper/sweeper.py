"""`hydra/sweeper=compose_once` (conf/hydra/default.yaml): Hydra's basic sweeper, with each job's
config composed once instead of twice.

Hydra's BasicSweeper composes every job of a batch before launching any (so that a bad override fails
before the first job runs), and its launchers then compose each job again. Composition costs about
0.3 s a job here (issue 15: a quarter of a cached sweep job). This sweeper keeps the configs its
validation pass composed and hands each to the launcher's own request for the same overrides; the
fail-first check, the configs and everything a launcher does with them are unchanged. Hydra has no
setting for this, hence the subclass (a plugin: Hydra finds it under the `hydra_plugins` namespace).
"""

# no `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# a dataclass cannot resolve string annotations
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

KEEP = 256  # configs kept at most (a larger batch composes the rest again at launch, as Hydra does)


@dataclass
class ComposeOnceSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.dear_exp_sweeper.sweeper.ComposeOnceSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf, provider="dear_exp"
)


class ComposedOnce:
    """Hydra's config loader, answering a job's composition from `kept` when the validation pass
    composed it (each kept config is handed out once: the launcher writes the job's number into it)."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.kept = loader, {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self.kept.pop(tuple(sweep_overrides), None)
        return kept if kept is not None else self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("loader", "kept"):  # pickling (joblib, submitit) and unpickling
            raise AttributeError(name)
        return getattr(self.loader, name)


class ComposeOnceSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.composed = ComposedOnce(hydra_context.config_loader)
        context = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)  # type: ignore[arg-type]
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        for overrides in batch:
            composed = self.composed.loader.load_sweep_config(self.config, list(overrides))
            if len(self.composed.kept) < KEEP:
                self.composed.kept[tuple(overrides)] = composed
