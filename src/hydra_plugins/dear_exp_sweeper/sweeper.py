"""`hydra/sweeper=compose_once` (conf/hydra/default.yaml): Hydra's basic sweeper, with each job's
config composed once instead of twice, and a job that differs from one already composed only in plain
values derived from that one instead of composed from the files again.

Hydra's BasicSweeper composes every job of a batch before launching any (so that a bad override fails
before the first job runs), and its launchers then compose each job again. Composition costs 0.1-0.3 s
a job here (issue 15: as much as a cached sweep job's own work). This sweeper keeps the configs its
validation pass composed and hands each to the launcher's own request for the same overrides. And an
alpha sweep's jobs differ only in `prune.alpha_low=0.1`-style values: such a job is the last composed
job's config with Hydra's own override step (`_apply_overrides_to_config`) run for the values that
differ, and its override lists and `override_dirname` renewed. Anything else (a config group, a `+`,
`~` or `++` override, a dict or list value, a `hydra.` key, a later override on the same key) is
composed by Hydra from the files, and so is a derivation that fails, so that Hydra's own error is
raised. tests/test_sweeper.py checks the derived configs equal Hydra's. Every job's values are also
checked by dear-exp's schema before the first job runs. Hydra has no setting for any of this, hence
the subclass (a plugin: Hydra finds it under the `hydra_plugins` namespace);
`hydra/sweeper=basic` is Hydra's own.
"""

# no `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# a dataclass cannot resolve string annotations
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

KEEP = 256  # configs kept at most (a larger batch composes the rest again at launch, as Hydra does)


@dataclass
class ComposeOnceSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.dear_exp_sweeper.sweeper.ComposeOnceSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="compose_once", node=ComposeOnceSweeperConf, provider="dear_exp"
)


class ComposedOnce:
    """Hydra's config loader, answering a job's composition from `kept` when the validation pass
    composed it (each kept config is handed out once: the launcher writes the job's number into it),
    else by `derive` or, failing that, Hydra."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.kept = loader, {}
        # the last job Hydra composed from the files: its overrides (the master's `hydra.` ones first),
        # parsed, and its config as composed (before a launcher writes the job's number into it)
        self.last: tuple[list[str], list[Override], DictConfig] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """A launcher that sends the Hydra context to other processes (joblib, submitit) sends the
        loader alone: the configs are composed here, before they go."""
        return {"loader": self.loader, "kept": {}, "last": None}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("loader", "kept", "last"):  # pickling (joblib, submitit), unpickling
            raise AttributeError(name)
        return getattr(self.loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        kept = self.kept.pop(tuple(sweep_overrides), None)
        return kept if kept is not None else self.compose(master_config, sweep_overrides)

    def compose(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        overrides = [*OmegaConf.to_container(master_config.hydra.overrides.hydra), *sweep_overrides]  # type: ignore[misc]
        derived = self.derive(master_config, overrides)
        if derived is not None:
            return derived
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        parsed = OverridesParser.create().parse_overrides(overrides)
        self.last = (overrides, parsed, copy.deepcopy(config))
        return config

    def plain(self, override: Override) -> bool:
        """`key=value` of one scalar on a key that is not a config group: what Hydra applies to the
        composed config with OmegaConf.update, after composition (its `config_overrides`)."""
        return (
            override.type == OverrideType.CHANGE
            and override.package is None
            and override.value_type == ValueType.ELEMENT
            and not override.is_hydra_override()
            and not isinstance(override.value(), (dict, list))
            and not self.loader.repository.group_exists(override.key_or_group)
        )

    def derive(self, master_config: DictConfig, overrides: list[str]) -> DictConfig | None:
        """The config of `overrides` from the last composed job's, or None where they differ in more
        than plain values (see the module's docstring)."""
        if self.last is None or len(overrides) != len(self.last[0]):
            return None
        last_overrides, last_parsed, last_config = self.last
        changed = [i for i, (a, b) in enumerate(zip(last_overrides, overrides)) if a != b]
        try:
            parsed = list(last_parsed)
            for i, new in zip(changed, OverridesParser.create().parse_overrides([overrides[i] for i in changed])):
                if not (self.plain(new) and self.plain(last_parsed[i])) or new.key_or_group != parsed[i].key_or_group:
                    return None
                parsed[i] = new
            if any(_touches(o.key_or_group, parsed[i].key_or_group) for i in changed for o in parsed[i + 1 :]):
                return None  # a later override on the same key (or within it) decides its value
            config = copy.deepcopy(last_config)
            ConfigLoaderImpl._apply_overrides_to_config([parsed[i] for i in changed], config)
        except Exception:  # noqa: BLE001 -- Hydra's own composition raises its own message
            return None
        app = [o for o in parsed if not o.is_hydra_override()]
        config.hydra.overrides.task = [o.input_line for o in app]
        job = config.hydra.job
        job.override_dirname = get_overrides_dirname(
            overrides=app,
            kv_sep=job.config.override_dirname.kv_sep,
            item_sep=job.config.override_dirname.item_sep,
            exclude_keys=job.config.override_dirname.exclude_keys,
        )
        OmegaConf.copy_cache(from_config=master_config, to_config=config)  # as Hydra's load_sweep_config
        return config


def _touches(key: str, other: str) -> bool:
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


class ComposeOnceSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.composed = ComposedOnce(hydra_context.config_loader)
        context = HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks)  # type: ignore[arg-type]
        super().setup(hydra_context=context, task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        try:
            for overrides in batch:
                composed = self.composed.compose(self.config, list(overrides))
                check_values(composed)
                if len(self.composed.kept) < KEEP:
                    self.composed.kept[tuple(overrides)] = composed
        except BaseException:
            self.remove_refused_sweep()
            raise

    def remove_refused_sweep(self) -> None:
        """Hydra writes the sweep folder's `multirun.yaml` before any batch is checked: a sweep refused
        before its first job leaves no folder (one that holds anything else, an earlier sweep's jobs,
        is left as it is)."""
        assert self.config is not None
        folder = Path(self.config.hydra.sweep.dir)
        if folder.is_dir() and [p.name for p in folder.iterdir()] == ["multirun.yaml"]:
            (folder / "multirun.yaml").unlink()
            folder.rmdir()


def check_values(config: DictConfig) -> None:
    """dear-exp's own checks of the values (`schema.validate`, which every job also runs at its start),
    on every job before the first runs: `prune.alpha_low=0.1,abc` stops the sweep before any work, not
    at its second job. The config is read as its job will read it (Hydra's job config set, with the
    number and output folder a launcher gives it), so that `${hydra:runtime.output_dir}` resolves. The
    checks import torch, so torch's huge-page switch is set first, from this config, as a job's start
    does (the first job's setting holds for the process either way)."""
    from hydra.core.hydra_config import HydraConfig

    from dear_exp import schema
    from dear_exp.memory import set_huge_pages

    set_huge_pages(config.memory.huge_pages is True)
    job = copy.deepcopy(config)
    with read_write(job.hydra), open_dict(job.hydra):
        job.hydra.job.num, job.hydra.job.id = 0, "0"
        job.hydra.runtime.output_dir = str(job.hydra.sweep.dir)
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(job)
    try:
        schema.validate(OmegaConf.masked_copy(job, [str(k) for k in job if k != "hydra"]))
    finally:
        hydra_config.cfg = before
