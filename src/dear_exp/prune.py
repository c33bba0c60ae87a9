"""Pruning (method.md step 3): channel masks from RAD scores, the paper's ablation modes, and the
controls every run fits beside DEAR (`refit`: no channel pruned; `random`: as many pruned at random)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from dear_exp.errors import DearError

MODES: tuple[str, ...] = ("bilateral", "high", "low", "random", "none")
# `released`: no dissection, the mask a released DEAR checkpoint ships (`channel_mask`)
ALL_MODES: tuple[str, ...] = (*MODES, "released")


def validate_levels(alpha_low: float, alpha_high: float) -> None:
    if not (0.0 <= alpha_low < alpha_high <= 1.0):
        raise DearError(
            f"prune.alpha_low={alpha_low} and prune.alpha_high={alpha_high} must satisfy "
            "0 <= alpha_low < alpha_high <= 1 (e.g. prune.alpha_low=0.2 prune.alpha_high=0.8)"
        )


def prune_counts(num_channels: int, alpha_low: float, alpha_high: float) -> tuple[int, int]:
    """Channels pruned at the low and high end, with the reference's integer rounding.

    The reference prunes int(C*exclude_bottom) lowest and int(C*exclude_top) highest channels,
    exclude_bottom = alpha_low, exclude_top = 1 - alpha_high (DEAR-c 0.2/0.8 keeps 1230 of 2048).
    Products are rounded to 9 decimals first, so float noise (1 - 0.8 = 0.19999999999999996)
    cannot drop a channel from the count: alpha_high=0.8 prunes exactly floor(0.2*C).
    """
    validate_levels(alpha_low, alpha_high)
    n_low = math.floor(round(num_channels * alpha_low, 9))
    n_high = math.floor(round(num_channels * (1.0 - alpha_high), 9))
    if n_low + n_high >= num_channels:
        raise DearError(
            f"prune.alpha_low={alpha_low}, prune.alpha_high={alpha_high} prune all {num_channels} "
            "channels; widen the band so at least one channel remains"
        )
    return n_low, n_high


def build_mask(
    scores: torch.Tensor,
    mode: str,
    alpha_low: float,
    alpha_high: float,
    seed: int = 0,
) -> torch.Tensor:
    """A 0/1 float mask over channels: 1 = kept.

    Ranking is a stable sort of the scores, so ties break by channel index and the mask is
    reproducible. `random` prunes as many channels as `bilateral`, chosen with `seed`.
    """
    if mode not in MODES:
        raise DearError(f"prune.mode={mode!r} is not one of {', '.join(MODES)}")
    c = scores.numel()
    mask = torch.ones(c)
    if mode == "none":
        return mask
    n_low, n_high = prune_counts(c, alpha_low, alpha_high)
    order = torch.argsort(scores.detach().float().cpu(), stable=True)
    if mode == "random":
        return random_mask(c, n_low + n_high, seed)
    if mode in ("bilateral", "low") and n_low:
        mask[order[:n_low]] = 0
    if mode in ("bilateral", "high") and n_high:
        mask[order[c - n_high :]] = 0
    return mask


def random_mask(channels: int, pruned: int, seed: int) -> torch.Tensor:
    """A mask with `pruned` channels, chosen with `seed`, set to 0: the control for any mask that prunes as many."""
    mask = torch.ones(channels)
    mask[torch.randperm(channels, generator=torch.Generator().manual_seed(seed))[:pruned]] = 0
    return mask


def channel_mask(
    mode: str,
    scores: torch.Tensor | None,
    channels: int,
    alpha_low: float,
    alpha_high: float,
    seed: int,
    released: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mask of any prune mode: `none` keeps all, `released` is the checkpoint's own gate (given as
    `released`), the others rank the RAD `scores`."""
    if mode == "none":
        return torch.ones(channels)
    if mode == "released":
        if released is None:
            raise DearError(
                "prune.mode=released needs a detector whose checkpoint ships a channel mask (dear_c, dear_r); "
                "this one has none: use prune=bilateral"
            )
        return released.float().cpu()
    if mode == "random":
        n_low, n_high = prune_counts(channels, alpha_low, alpha_high)
        return random_mask(channels, n_low + n_high, seed)
    if scores is None:
        raise ValueError(f"prune.mode={mode} ranks RAD scores: dissect first")
    return build_mask(scores, mode, alpha_low, alpha_high, seed)


def needs_rad(mode: str) -> bool:
    """Whether a prune mode ranks RAD scores (random prunes as many as bilateral would, but needs none)."""
    return mode not in ("none", "released", "random")


@dataclass(frozen=True)
class PruneSettings:
    """The `prune` config group (conf/prune/*.yaml holds the values; dear_exp.schema checks them)."""

    mode: Literal["bilateral", "high", "low", "random", "none", "released"]
    alpha_low: float = field(metadata={"min": 0.0, "max": 1.0, "example": 0.2})
    alpha_high: float = field(metadata={"min": 0.0, "max": 1.0, "example": 0.8})
    seed: int = field(metadata={"min": 0, "example": 0})

    def check(self) -> None:
        validate_levels(self.alpha_low, self.alpha_high)


def model_names(mode: str, controls: bool = True) -> list[str]:
    """The heads a run fits, controls first, the run's own model last: `dear`, or `refit` with
    prune=none (the refit alone) and `random` with prune=random."""
    main = {"none": "refit", "random": "random"}.get(mode, "dear")
    if not controls or main == "refit":
        return [main]
    return [m for m in ("refit", "random") if m != main] + [main]


def run_masks(
    p: PruneSettings,
    scores: torch.Tensor | None,
    channels: int,
    released: torch.Tensor | None = None,
    controls: bool = True,
) -> dict[str, torch.Tensor]:
    """The channel mask of every head of a run (`model_names`): the run's own from its prune mode, `refit`
    keeps all, `random` prunes as many channels as the run's own, chosen with prune.seed."""
    names = model_names(p.mode, controls)
    main = channel_mask(p.mode, scores, channels, p.alpha_low, p.alpha_high, p.seed, released)
    masks = {"refit": torch.ones(channels), "random": random_mask(channels, channels - int(main.sum()), p.seed)}
    return {name: main if name == names[-1] else masks[name] for name in names}
