"""Refit (method.md step 4): a linear head on the pooled features of the frozen detector, for each
channel mask of a run, all from the same rows with the same solver.

`refit_heads` is the stage. `head.solver=newton` (newton.py) solves the convex objective to
convergence on the cached rows (rows.py); `head.solver=adam` (adam.py) is the reference's optimiser,
on the cached rows or online through the backbone (`head.mode=online`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from dear_exp.cache import Tensors, tensors_fingerprint
from dear_exp.detectors.base import Detector
from dear_exp.detectors.deferred import real
from dear_exp.errors import DearError
from dear_exp.refit.adam import DEARModule, FeatureRefitDataModule, HeadModule, PlateauLRDrop, RefitDataModule, adam_fit
from dear_exp.refit.head import MaskedLinearHead, load_head, save_head, starting_head
from dear_exp.refit.newton import NewtonFit, Solve, channel_stats, newton_fit
from dear_exp.refit.rows import Views, view_rows
from dear_exp.refit.settings import RefitSettings
from dear_exp.report import MODEL_NAMES

if TYPE_CHECKING:
    from dear_exp.features import FeatureStore

__all__ = [
    "DEARModule",
    "FeatureRefitDataModule",
    "HeadFit",
    "HeadModule",
    "MaskedLinearHead",
    "NewtonFit",
    "PlateauLRDrop",
    "RefitDataModule",
    "RefitSettings",
    "SharedRows",
    "Solve",
    "Views",
    "adam_fit",
    "load_head",
    "newton_fit",
    "refit_heads",
    "save_head",
    "view_rows",
]
log = logging.getLogger(__name__)


class SharedRows:
    """What every head solved on the same cached rows (train, inpaint, val) shares, computed when first
    needed: their fingerprint (the `heads` cache key: 12 MB of rows on make bench's data, 25 ms) and
    each channel's mean and sd (`channel_stats`). One per run; task=dear_grid keeps one for every pair."""

    def __init__(self, rows: tuple[Tensors, Tensors, Tensors]) -> None:
        self.rows = rows

    @functools.cached_property
    def key(self) -> str:
        return tensors_fingerprint(t for r in self.rows for t in (r["pooled"], r["label"]))

    @functools.cached_property
    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return channel_stats(self.rows[0])


@dataclass
class HeadFit:
    """One refitted head of a run (`dear` or a control) and what shows how its fit went: for newton the
    chosen solve and the whole L2 path, for adam the best validation balanced accuracy it kept."""

    name: str
    head: MaskedLinearHead
    summary: dict[str, Any]
    path: list[Solve]


def _newton(
    name: str,
    mask: torch.Tensor,
    shared: SharedRows,
    s: RefitSettings,
    own: torch.nn.Linear | None,
    device: torch.device,
    store: FeatureStore | None,
) -> HeadFit:
    """A Newton solve, as a feature-cache entry when a store is given (rank 0 solves, the others receive
    it; a sweep's controls are solved once): keyed by the rows' content (`shared.key`), the mask and the
    settings."""
    channels, kept = mask.numel(), int(mask.sum())
    init = None
    if own is not None:
        init = MaskedLinearHead(channels)
        init.linear.load_state_dict(own.state_dict())
    l2 = [float(v) for v in s.l2]

    def solve() -> Tensors:
        fit = newton_fit(*shared.rows, mask, s.inpaint_weight, l2, s.tol, s.max_iter, init, device, shared.stats)
        return fit.to_tensors()

    if store is None:
        tensors = solve()
    else:
        parts = {
            "solver": "newton",
            "rows": shared.key,
            "mask": tensors_fingerprint([mask.float()]),
            "l2": l2,
            "inpaint_weight": float(s.inpaint_weight),
            "tol": float(s.tol),
            "max_iter": int(s.max_iter),
            "init": tensors_fingerprint(init.state_dict().values()) if init is not None else None,
            "on": device.type,
        }
        tensors = store.fit(parts, solve, f"{name} head, {kept} of {channels} channels")
    fit = NewtonFit.from_tensors(tensors)
    return HeadFit(name, fit.head, {"kept": kept, **fit.summary()}, fit.path)


def refit_heads(
    masks: dict[str, torch.Tensor],
    settings: RefitSettings,
    detector: Detector,
    device: torch.device | str = "cpu",
    rows: tuple[Tensors, Tensors, Tensors] | None = None,
    store: FeatureStore | None = None,
    online: RefitDataModule | None = None,
    trainer_for: Callable[[str], L.Trainer] | None = None,
    seed: int = 0,
    batch_sizes: tuple[int, int] = (64, 16),
    shared: SharedRows | None = None,
) -> list[HeadFit]:
    """One head per mask, in the masks' order, each refitted from the same data with the same solver.

    rows: the cached (train, inpaint, val) rows (`view_rows`); online: the image data of
    head.mode=online instead; trainer_for(name): a fresh Lightning trainer for each Adam fit;
    batch_sizes: adam's (training, inpaint) batch sizes on the cached rows; shared: what the rows'
    solves share, where kept from an earlier call with the same rows."""
    s, device = settings, torch.device(device)
    own = starting_head(detector, s.init)
    if (rows is None) == (online is None):
        raise ValueError("give the cached rows or the online data, not both")
    if rows is not None and (shared is None or shared.rows is not rows):
        shared = SharedRows(rows)
    fits = []

    for name, mask in masks.items():
        log.info(
            "Refitting head %s (%s, %d of %d channels) with %s",
            name,
            MODEL_NAMES.get(name, name),
            int(mask.sum()),
            mask.numel(),
            s.solver,
        )
        if s.solver == "newton":
            if rows is None:
                raise DearError("head.solver=newton solves on the cached rows: set head.mode=cached")
            assert shared is not None
            fits.append(_newton(name, mask, shared, s, own, device, store))
            continue
        if trainer_for is None:
            raise ValueError("head.solver=adam fits through Lightning: give trainer_for")
        module: HeadModule
        data: L.LightningDataModule
        if rows is not None:
            module = HeadModule(detector.feature_channels, s, own)
            data = FeatureRefitDataModule(*rows, s.views, *batch_sizes, seed)
        else:
            assert online is not None
            module, data = DEARModule(real(detector), s), online  # the backbone runs: its weights are needed
        module.head.set_mask(mask)
        summary = adam_fit(module, data, trainer_for(name))
        fits.append(HeadFit(name, module.head.cpu().eval(), {"kept": int(mask.sum()), **summary}, []))
    return fits
