"""The one schema of the config: every value a user sets is checked here, once, before any work.

Two sources, read by one checker:
- typed settings: the dataclasses of the stages that a group's `_target_` names (`refit.RefitSettings`
  for `head`, `prune.PruneSettings` for `prune`; `Checked`, they check themselves when built) and the constructors that `_target_` groups name (datamodules, detectors, callbacks):
  a key's type and its allowed values (a `Literal`) come from the annotation, its range from the
  field's metadata (`min`, `max`, `gt`, `lt`, `len`);
- `RULES`: the counts, sizes, rates, seeds and qualities wherever they appear in the tree, by key name.
A failure is one line: the key, the value, what is allowed, an example. The values themselves live in
conf/*.yaml only (the printed config is the whole truth); nothing here has a default.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf

from dear_exp.errors import DearError

# by the last part of a key, wherever it is: (type, lower bound, lower inclusive, upper bound, example)
Rule = tuple[type, float | None, bool, float | None, str]
_COUNT: Rule = (int, 1, True, None, "4")
RULES: dict[str, Rule] = {
    "batch_size": (int, 1, True, None, "32"),
    "dissect_max_batches": _COUNT,
    "max_images": _COUNT,
    "max_sample": _COUNT,
    "bins": _COUNT,
    "cue_probes": (int, 2, True, None, "100"),
    "views": _COUNT,
    "max_iter": _COUNT,
    "max_epochs": _COUNT,
    "min_epochs": (int, 0, True, None, "1"),
    "bootstrap": (int, 0, True, None, "1000"),
    "seed": (int, 0, True, None, "0"),
    "threads": (int, 1, True, None, "2"),
    "crop": (int, 1, True, None, "224"),
    "resized_crop": (int, 1, True, None, "256"),
    "center_crop": (int, 1, True, None, "224"),
    "resize_short": (int, 1, True, None, "256"),
    "cutout_size": (int, 0, True, None, "48"),
    "size": (int, 1, True, None, "512"),
    "quality": (int, 1, True, 100, "75"),
    "lr": (float, 0, False, None, "1e-4"),
    "min_lr": (float, 0, False, None, "1e-6"),
    "tol": (float, 0, False, None, "1e-9"),
    "weight_decay": (float, 0, True, None, "0.0"),
    "inpaint_weight": (float, 0, True, None, "1.0"),
    "factor": (float, 0, False, 1, "0.1"),
    "patience": (int, 1, True, None, "5"),
    "min_delta": (float, 0, True, None, "0.001"),
    "strength": (float, 0, False, 1, "0.9"),
    "guidance_scale": (float, 0, True, None, "7.5"),
    "num_inference_steps": (int, 1, True, None, "30"),
    "every_s": (float, 0, False, None, "30"),
    "texture": (float, 0, True, 64, "3.0"),
    "threshold": (float, None, True, None, "0.65"),  # task=predict's verdict threshold, a logit (null: 0)
}
# a probability wherever it is: a key named p_<op> (augment.p_jpeg, ...)
PROBABILITY: Rule = (float, 0, True, 1, "0.5")
# [low, high] ranges by group and key (augment, base_train.augment): each end checked by the rule, low <= high
RANGES: dict[str, Rule] = {
    "augment.jpeg_quality": (int, 1, True, 100, "[30, 100]"),
    "augment.noise_var": (float, 0, True, None, "[10, 50]"),
    "augment.blur_sigma": (float, 0, True, None, "[0.0, 3.0]"),
}
# enumerations outside the typed settings: key path -> allowed values
ENUMS: dict[str, tuple[str, ...]] = {
    "demo.scale": ("tiny", "demo", "bench"),
    "progress.when": ("no_tty", "always", "never"),
    "augment.name": ("reference", "crop_flip", "center_crop", "none"),
    "base_train.augment.name": ("reference", "crop_flip", "center_crop", "none"),
    "diag_data.rad_weight": ("mask", "alpha"),
    "task.cues": ("auto", "always", "never"),
    "task.fragility.cues": ("auto", "always", "never"),
    "task.metrics": ("dear", "aigcdb", "cnndetection", "ufd", "sidbench"),  # metrics.PROTOCOLS
    "task.scores": ("csv", "none"),  # scores.csv of task=dear / task=evaluate
}


def fail(key: str, value: Any, allowed: str, example: str) -> DearError:
    return DearError(f"{key}={value!r} {allowed} (e.g. {key}={example})")


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_range(
    key: str, value: Any, kind: type, low: float | None, low_inclusive: bool, high: float | None, example: str
) -> None:
    what = "a whole number" if kind is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    allowed = f"must be {what}" + (f" {' and '.join(bounds)}" if bounds else "")
    if not _is(value, kind):
        raise fail(key, value, allowed, example)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise fail(key, value, allowed, example)
    if high is not None and value > high:
        raise fail(key, value, allowed, example)


def check_interval(key: str, value: Any, rule: Rule) -> None:
    """A [low, high] pair: two values, each within the rule, low <= high."""
    example = rule[-1]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise fail(key, value, "must be a [low, high] pair", example)
    for v in value:
        check_range(key, v, *rule[:-1], example)
    if value[0] > value[1]:
        raise fail(key, value, "must be [low, high] with low <= high", example)


def check_value(key: str, value: Any, annotation: Any, meta: Mapping[str, Any] | None = None) -> None:
    """`value` against a type annotation (Literal, int, float, bool, str, list[...], X | None) and the
    field metadata's bounds."""
    meta = meta or {}
    example = str(meta.get("example", ""))
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                check_value(key, value, option, meta)
                return
            except DearError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise fail(key, value, f"must be one of {', '.join(map(str, args))}", str(args[0]))
        return
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple, ListConfig)):
            raise fail(key, value, "must be a list", example or "[...]")
        if "len" in meta and len(value) != meta["len"]:
            raise fail(key, list(value), f"must list {meta['len']} values", example)
        inner = args[0] if args else Any
        for v in value:
            check_value(key, v, inner, {k: m for k, m in meta.items() if k != "len"} | {"example": example})
        return
    if annotation in (int, float):
        low, inclusive = (meta["gt"], False) if "gt" in meta else (meta.get("min"), True)
        check_range(key, value, annotation, low, inclusive, meta.get("max", meta.get("lt")), example)
        if "lt" in meta and value >= meta["lt"]:
            raise fail(key, value, f"must be < {meta['lt']:g}", example)
        return
    if annotation is bool and not isinstance(value, bool):
        raise fail(key, value, "must be true or false", "true")
    if annotation is str and not isinstance(value, str):
        raise fail(key, value, "must be a string", example or "...")


def check_keys(cls: type, values: Mapping[str, Any], prefix: str) -> None:
    """Every field of a settings dataclass present, no key it does not know."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields) - {"_target_"})
    if unknown:
        raise DearError(f"{prefix}.{unknown[0]} is not a setting of {prefix} (its settings: {', '.join(fields)})")
    for name in fields:
        if name not in values:
            raise DearError(f"{prefix}.{name} must be set (add {prefix}.{name}=... or use a {prefix} preset)")


class Checked:
    """A settings dataclass that checks itself when built (from Hydra or from Python alike): each field's
    type and range from its annotation and metadata, then `check` for what no single value shows."""

    prefix: typing.ClassVar[str]

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check_value(f"{self.prefix}.{f.name}", getattr(self, f.name), hints[f.name], f.metadata)
        self.check()

    def check(self) -> None:
        """What no single value shows (nothing by default)."""


def settings(cls: type, group: DictConfig | Mapping[str, Any], prefix: str) -> Any:
    """A typed settings object from its config group, checked."""
    container = OmegaConf.to_container(group, resolve=True) if OmegaConf.is_config(group) else group
    values = {str(k): v for k, v in dict(container).items()}  # type: ignore[arg-type]
    values.pop("_target_", None)
    check_keys(cls, values, prefix)
    return cls(**values)


def _leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        yield prefix, node  # the list as a whole (a [low, high] range), then each element as key[]
        for v in node:
            yield from _leaves(v, f"{prefix}[]")
    else:
        yield prefix, node


def _target(key: str, node: Mapping[str, Any]) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(node["_target_"])
    except Exception:
        raise DearError(
            f"{key}._target_={node['_target_']!r} cannot be imported; check the module and class name"
        ) from None


def build(group: DictConfig, prefix: str) -> Any:
    """The typed settings object a group's `_target_` names (e.g. `head` -> refit.RefitSettings), checked."""
    return settings(_target(prefix, group), group, prefix)


def _check_target(key: str, node: dict[str, Any], target: Any) -> None:
    """A `_target_` group's keys against its constructor's parameters and their annotations."""
    init = target.__init__ if inspect.isclass(target) else target
    try:
        params = inspect.signature(init).parameters
        hints = typing.get_type_hints(init)
    except (TypeError, ValueError, NameError):
        return  # a C extension or an unresolvable annotation: the constructor itself checks
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for name, value in node.items():
        if name.startswith("_"):
            continue
        if name not in params:
            raise DearError(
                f"{key}.{name} is not a parameter of {node['_target_']} "
                f"(its parameters: {', '.join(p for p in params if p != 'self')})"
            )
        if name in hints and not isinstance(value, dict) and name not in RULES and not _is_missing(value):
            check_value(f"{key}.{name}", value, hints[name])


def _is_missing(value: Any) -> bool:
    return isinstance(value, str) and value == "???"


ALPHAS = ("alpha_low", "alpha_high")


def alpha_pairs(prune: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """task=dear_grid's pairs: every prune.alpha_low x prune.alpha_high, each a number or a list of
    numbers, alpha_low-major (a multirun's order when alpha_low is given first)."""
    levels = []
    for k in ALPHAS:
        value = prune.get(k)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise DearError(f"prune.{k}=[] lists no value; give one or more (e.g. prune.{k}=[0.1,0.2])")
        twice = [v for v in values if values.count(v) > 1]
        if twice:
            raise DearError(f"prune.{k}={values} lists {twice[0]} twice; give each value once")
        levels.append(values)
    return list(itertools.product(*levels))


def _check_grid(tree: dict[str, Any], task: Mapping[str, Any]) -> None:
    """prune.alpha_low / alpha_high as lists: task=dear_grid's grid, every pair checked as one prune
    setting (the tree then holds the first, for the checks that follow); any other task takes one value."""
    prune = tree.get("prune")
    if not isinstance(prune, dict) or "_target_" not in prune:
        return
    listed = [k for k in ALPHAS if isinstance(prune.get(k), list)]
    if task.get("name") != "dear_grid":
        if listed:
            k = listed[0]
            raise DearError(
                f"prune.{k}={prune[k]} is a list: task=dear_grid runs every alpha pair in one process; "
                f"task={task.get('name')} takes one value (or a multirun, a job per value: -m prune.{k}=0.1,0.2)"
            )
        return
    mode = prune.get("mode")
    if mode in ("none", "released"):
        raise DearError(
            f"task=dear_grid varies prune.alpha_low and prune.alpha_high, which prune.mode={mode} "
            "does not read; use prune=bilateral (or high, low, random)"
        )
    unread = {"high": "alpha_low", "low": "alpha_high"}.get(str(mode))  # prune=high prunes above alpha_high only
    if unread in listed and len(prune[unread]) > 1:
        raise DearError(
            f"prune.mode={mode} does not read prune.{unread}, so prune.{unread}={prune[unread]} would repeat "
            f"the same pairs; give it one value (or use prune=bilateral)"
        )
    if (task.get("fragility") or {}).get("enabled"):
        raise DearError(
            "task.fragility.enabled=true reads one alpha pair's bands: run it with task=dear or task=fragility"
        )
    target = _target("prune", prune)
    pairs = alpha_pairs(prune)
    for low, high in pairs:
        settings(target, {**prune, "alpha_low": low, "alpha_high": high}, "prune")
    tree["prune"] = {**prune, "alpha_low": pairs[0][0], "alpha_high": pairs[0][1]}


def validate(cfg: DictConfig) -> None:
    """The whole config, before any work: every typed group, every `_target_`, every counted value."""
    tree: dict[str, Any] = {}
    for k in cfg:
        try:
            tree[str(k)] = OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        except Exception:  # an interpolation only a running Hydra job resolves (hydra:runtime.output_dir)
            tree[str(k)] = OmegaConf.to_container(cfg[k], resolve=False) if OmegaConf.is_config(cfg[k]) else None
    task = tree.get("task", {})
    _check_grid(tree, task)
    for item, value in _leaves(tree, ""):
        key = item.replace("[]", "")
        name = key.split(".")[-1]
        rule = RULES.get(name, PROBABILITY if name.startswith("p_") else None)
        if rule is not None and value is not None and not isinstance(value, list) and not _is_missing(value):
            check_range(key, value, *rule)
        group_key = ".".join(key.split(".")[-2:])
        if group_key in RANGES and value is not None and not item.endswith("[]"):
            check_interval(key, value, RANGES[group_key])
        if key in ENUMS and not isinstance(value, list) and value not in ENUMS[key]:
            raise fail(key, value, f"must be one of {', '.join(ENUMS[key])}", ENUMS[key][0])
    workers = tree.get("num_workers")
    if workers != "auto" and not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0):
        raise fail("num_workers", workers, "must be auto or a whole number >= 0", "0")
    if "thresholds" in task and not task["thresholds"]:
        raise DearError(
            "task.thresholds=[] lists no threshold policy; give at least one (e.g. task.thresholds=[logit0])"
        )
    from dear_exp.metrics import POLICIES  # here: importing the schema must not import torch (memory.py)

    unknown = [p for p in task.get("thresholds", []) or [] if p not in POLICIES]
    if unknown:
        raise DearError(
            f"task.thresholds has {unknown}; choose from {', '.join(POLICIES)} (e.g. task.thresholds=[logit0,oracle])"
        )

    cross_checks(tree)

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            if "_target_" in node and not key.startswith("hydra"):
                target = _target(key, node)
                if inspect.isclass(target) and issubclass(target, Checked):
                    settings(target, node, key)
                else:
                    _check_target(key, node, target)
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))

    walk(tree, "")


def cross_checks(tree: dict[str, Any]) -> None:
    """What no single value shows."""
    dd, aug, pre = (
        tree.get("diag_data") or {},
        tree.get("augment") or {},
        (tree.get("detector") or {}).get("preprocess") or {},
    )
    if dd and dd.get("dissect_augment") is False and dd.get("batch_size") != 1:
        raise DearError(
            "diag_data.dissect_augment=false reads whole images of different sizes: set diag_data.batch_size=1 with it"
        )
    crop, fixed = aug.get("crop"), pre.get("center_crop")
    if crop and fixed and not pre.get("resize_short") and crop < fixed:
        raise DearError(
            f"augment.crop={crop} is smaller than detector.preprocess.center_crop={fixed}: the "
            f"training crops would be zero-padded to {fixed}; use augment=crop224 or augment.crop={fixed}"
        )
    limit = (tree.get("trainer") or {}).get("limit_predict_batches")
    if limit is not None and limit != 1.0 and (tree.get("task") or {}).get("name") in ("dear", "dear_grid"):
        raise DearError(
            f"trainer.limit_predict_batches={limit}: feature rows are always extracted whole, so that "
            "cache entries are complete; use a smaller benchmark (e.g. demo.scale=tiny) to debug"
        )
