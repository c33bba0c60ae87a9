"""Channel fragility (DEAR's premise, method.md): how much each channel's activation moves when an
image is post-processed, against the channel's RAD. The paper's finding is a U shape: channels at
both extremes of the RAD distribution move most, the middle ones least, which is what justifies
pruning both ends.

Fragility of channel k under a setting: the mean squared change of its activation between the clean
and the processed image, divided by the variance of its clean activation over the same elements
(a relative MSE: a channel's scale cancels, so channels of different scale compare). Maps are
compared position by position where clean and processed maps have the same size; a setting that
changes the size (resizing) compares the pooled activations instead, and the output says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class FragilityAccumulator:
    """Per-channel sums over images for one post-processing setting, in float64."""

    def __init__(self, channels: int) -> None:
        self.sq_diff = torch.zeros(channels, dtype=torch.float64)
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.total_sq = torch.zeros(channels, dtype=torch.float64)
        self.count = 0
        self.spatial = self.pooled = 0  # images compared each way

    def update(self, clean: torch.Tensor, processed: torch.Tensor) -> None:
        """clean, processed: [N, C, H, W] maps of the same images (or [N, C] pooled rows)."""
        if clean.dim() == 4 and clean.shape[-2:] != processed.shape[-2:]:
            clean, processed = clean.mean((2, 3)), processed.mean((2, 3))
            self.pooled += len(clean)
        elif clean.dim() == 4:
            self.spatial += len(clean)
        else:
            self.pooled += len(clean)
        a = clean.double().transpose(0, 1).reshape(clean.shape[1], -1)  # [C, elements]
        b = processed.double().transpose(0, 1).reshape(processed.shape[1], -1)
        self.sq_diff += ((a - b) ** 2).sum(1).cpu()
        self.total += a.sum(1).cpu()
        self.total_sq += (a**2).sum(1).cpu()
        self.count += a.shape[1]

    @property
    def compared(self) -> str:
        """How the maps were compared: spatial, pooled, or both (some images changed size)."""
        return {(True, False): "spatial", (False, True): "pooled"}.get((self.spatial > 0, self.pooled > 0), "both")

    def compute(self) -> torch.Tensor:
        """Relative MSE per channel: mean squared change / variance of the clean activation (NaN for a
        channel that is constant on the clean images: it has no scale to compare against)."""
        if self.count == 0:
            raise ValueError("no image was compared")
        mean = self.total / self.count
        var = self.total_sq / self.count - mean**2
        var = torch.where(var > 1e-12 * (mean**2 + 1e-30), var, torch.full_like(var, float("nan")))
        return (self.sq_diff / self.count / var).float()


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def bands(scores: torch.Tensor, alpha_low: float, alpha_high: float) -> torch.Tensor:
    """Per channel: 0 = the low band prune.alpha_low prunes, 1 = kept middle, 2 = the high band
    (the ranking and rounding of `prune.channel_mask`)."""
    from dear_exp.prune import prune_counts

    c = scores.numel()
    n_low, n_high = prune_counts(c, alpha_low, alpha_high)
    order = torch.argsort(scores.float(), stable=True)
    band = torch.ones(c, dtype=torch.long)
    band[order[:n_low]] = 0
    band[order[c - n_high :]] = 2
    return band


def _bootstrap_mean(values: torch.Tensor, n: int, gen: torch.Generator) -> Interval:
    if values.numel() == 0:
        return Interval(math.nan, math.nan, math.nan)
    if n == 0:
        return Interval(float(values.mean()), math.nan, math.nan)
    draws = values[torch.randint(len(values), (n, len(values)), generator=gen)].mean(1)
    return Interval(float(values.mean()), float(draws.quantile(0.025)), float(draws.quantile(0.975)))


def band_statistics(
    scores: torch.Tensor, frag: torch.Tensor, alpha_low: float, alpha_high: float, bootstrap: int, seed: int
) -> dict[str, object]:
    """Mean fragility of the low band, the kept middle and the high band with bootstrap 95 % intervals
    (channels resampled), the extremes-minus-middle difference with its interval, Spearman's rank
    correlation between |RAD - median RAD| and fragility, and the verdict."""
    from scipy.stats import spearmanr

    ok = ~torch.isnan(frag)
    scores, frag = scores[ok].double(), frag[ok].double()
    band = bands(scores, alpha_low, alpha_high)
    gen = torch.Generator().manual_seed(seed)
    low, mid, high = (frag[band == b] for b in (0, 1, 2))
    extremes = torch.cat([low, high])
    out: dict[str, object] = {
        "channels": int(ok.sum()),
        "low": _bootstrap_mean(low, bootstrap, gen),
        "middle": _bootstrap_mean(mid, bootstrap, gen),
        "high": _bootstrap_mean(high, bootstrap, gen),
    }
    if extremes.numel() and mid.numel() and bootstrap > 0:
        i = torch.randint(len(extremes), (bootstrap, len(extremes)), generator=gen)
        j = torch.randint(len(mid), (bootstrap, len(mid)), generator=gen)
        diff = extremes[i].mean(1) - mid[j].mean(1)
        d = Interval(float(extremes.mean() - mid.mean()), float(diff.quantile(0.025)), float(diff.quantile(0.975)))
    else:
        d = Interval(math.nan, math.nan, math.nan)
    out["extremes_minus_middle"] = d
    rho = spearmanr((scores - scores.median()).abs().numpy(), frag.numpy())
    out["spearman"] = float(rho.statistic)
    out["spearman_p"] = float(rho.pvalue)
    if bootstrap == 0 or math.isnan(d.low):
        out["verdict"] = "not tested (no bootstrap interval: task.bootstrap=0 or an empty band)"
    else:
        out["verdict"] = "yes" if d.low > 0 else "no" if d.high < 0 else "not resolved at this sample size"
    return out
