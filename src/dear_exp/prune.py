"""Pruning (method.md step 3): channel masks from RAD scores, the paper's ablation modes, and the
controls every run fits beside DEAR (`refit`: no channel pruned; `random`: as many pruned at random)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from dear_exp.errors import DearError
from dear_exp.schema import Checked

Mode = Literal["bilateral", "high", "low", "random", "none", "released"]


def validate_levels(alpha_low: float, alpha_high: float) -> None:
    if not (0.0 <= alpha_low < alpha_high <= 1.0):
        raise DearError(
            f"prune.alpha_low={alpha_low} and prune.alpha_high={alpha_high} must satisfy "
            "0 <= alpha_low < alpha_high <= 1 (e.g. prune.alpha_low=0.2 prune.alpha_high=0.8)"
        )


@dataclass(frozen=True)
class PruneSettings(Checked):
    """The `prune` config group (conf/prune/*.yaml holds the values): checked when built, from Hydra or
    Python. `released`: no dissection, the mask a released DEAR checkpoint ships."""

    prefix: ClassVar[str] = "prune"
    mode: Mode
    alpha_low: float = field(metadata={"min": 0.0, "max": 1.0, "example": 0.2})
    alpha_high: float = field(metadata={"min": 0.0, "max": 1.0, "example": 0.8})
    seed: int = field(metadata={"min": 0, "example": 0})

    def check(self) -> None:
        validate_levels(self.alpha_low, self.alpha_high)


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


def random_mask(channels: int, pruned: int, seed: int) -> torch.Tensor:
    """A mask with `pruned` channels, chosen with `seed`, set to 0: the control for any mask that prunes as many."""
    mask = torch.ones(channels)
    mask[torch.randperm(channels, generator=torch.Generator().manual_seed(seed))[:pruned]] = 0
    return mask


def channel_mask(
    p: PruneSettings,
    scores: torch.Tensor | None,
    channels: int,
    released: torch.Tensor | None = None,
) -> torch.Tensor:
    """A 0/1 float mask over channels (1 = kept) for any prune mode: `none` keeps all, `released` is the
    checkpoint's own gate (given as `released`), `random` prunes as many as `bilateral` would, chosen
    with prune.seed; the others rank the RAD `scores` with a stable sort (ties break by channel index)."""
    if p.mode == "released":
        if released is None:
            raise DearError(
                "prune.mode=released needs a detector whose checkpoint ships a channel mask (dear_c, dear_r); "
                "this one has none: use prune=bilateral"
            )
        return released.float().cpu()
    mask = torch.ones(channels)
    if p.mode == "none":
        return mask
    n_low, n_high = prune_counts(channels, p.alpha_low, p.alpha_high)
    if p.mode == "random":
        return random_mask(channels, n_low + n_high, p.seed)
    if scores is None:
        raise ValueError(f"prune.mode={p.mode} ranks RAD scores: dissect first")
    order = torch.argsort(scores.detach().float().cpu(), stable=True)
    if p.mode in ("bilateral", "low") and n_low:
        mask[order[:n_low]] = 0
    if p.mode in ("bilateral", "high") and n_high:
        mask[order[channels - n_high :]] = 0
    return mask


def build_mask(scores: torch.Tensor, mode: str, alpha_low: float, alpha_high: float, seed: int = 0) -> torch.Tensor:
    """`channel_mask` over all of `scores`' channels, from plain values."""
    settings = PruneSettings(mode=mode, alpha_low=alpha_low, alpha_high=alpha_high, seed=seed)  # type: ignore[arg-type]
    return channel_mask(settings, scores, scores.numel())


def needs_rad(mode: str) -> bool:
    """Whether a prune mode ranks RAD scores (random prunes as many as bilateral would, but needs none)."""
    return mode not in ("none", "released", "random")


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
    main = channel_mask(p, scores, channels, released)
    masks = {"refit": torch.ones(channels), "random": random_mask(channels, channels - int(main.sum()), p.seed)}
    return {name: main if name == names[-1] else masks[name] for name in names}
