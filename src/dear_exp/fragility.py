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

import csv
import io
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dear_exp import distributed
from dear_exp.data.datasets import EvalImages
from dear_exp.data.folders import Sample
from dear_exp.data.images import Preprocess
from dear_exp.data.postprocess import Chain
from dear_exp.detectors.base import Detector
from dear_exp.features import FeatureStore, data_parts
from dear_exp.files import write_atomic

log = logging.getLogger(__name__)


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

    def state(self) -> dict[str, torch.Tensor]:
        """The sums, as tensors: what the cache stores and ranks add up."""
        counts = torch.tensor([self.count, self.spatial, self.pooled], dtype=torch.float64)
        return {"sq_diff": self.sq_diff, "total": self.total, "total_sq": self.total_sq, "counts": counts}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> FragilityAccumulator:
        acc = cls(len(state["sq_diff"]))
        acc.sq_diff, acc.total, acc.total_sq = state["sq_diff"], state["total"], state["total_sq"]
        acc.count, acc.spatial, acc.pooled = (int(v) for v in state["counts"].tolist())
        return acc

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


def rad_percentiles(scores: torch.Tensor) -> torch.Tensor:
    """Each channel's rank in the RAD distribution as a fraction in [0, 1] (ties by index)."""
    return torch.argsort(torch.argsort(scores.float(), stable=True), stable=True).double() / max(len(scores) - 1, 1)


def bootstrap_mean(values: torch.Tensor, n: int, gen: torch.Generator) -> Interval:
    if values.numel() == 0:
        return Interval(math.nan, math.nan, math.nan)
    if n == 0:
        return Interval(float(values.mean()), math.nan, math.nan)
    draws = values[torch.randint(len(values), (n, len(values)), generator=gen)].mean(1)
    return Interval(float(values.mean()), float(draws.quantile(0.025)), float(draws.quantile(0.975)))


def difference(a: torch.Tensor, b: torch.Tensor, n: int, gen: torch.Generator) -> Interval:
    """mean(a) - mean(b) with a bootstrap 95 % interval (each side resampled on its own)."""
    if not a.numel() or not b.numel() or n == 0:
        return Interval(math.nan, math.nan, math.nan)
    i = torch.randint(len(a), (n, len(a)), generator=gen)
    j = torch.randint(len(b), (n, len(b)), generator=gen)
    diff = a[i].mean(1) - b[j].mean(1)
    return Interval(float(a.mean() - b.mean()), float(diff.quantile(0.025)), float(diff.quantile(0.975)))


def side(d: Interval) -> str:
    return "more" if d.low > 0 else "less" if d.high < 0 else "not resolved"


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
        "low": bootstrap_mean(low, bootstrap, gen),
        "middle": bootstrap_mean(mid, bootstrap, gen),
        "high": bootstrap_mean(high, bootstrap, gen),
    }
    out["extremes_minus_middle"] = difference(extremes, mid, bootstrap, gen)
    out["low_minus_middle"] = difference(low, mid, bootstrap, gen)
    out["high_minus_middle"] = difference(high, mid, bootstrap, gen)
    d = out["extremes_minus_middle"]
    assert isinstance(d, Interval)
    rho = spearmanr((scores - scores.median()).abs().numpy(), frag.numpy())
    out["spearman"] = float(rho.statistic)
    out["spearman_p"] = float(rho.pvalue)
    if bootstrap == 0 or math.isnan(d.low):
        out["verdict"] = "not tested (no bootstrap interval: task.bootstrap=0 or an empty band)"
    else:
        out["verdict"] = "yes" if d.low > 0 else "no" if d.high < 0 else "not resolved at this sample size"
    # each band on its own: a U shape has both "more"; a monotone trend has one "more", one "less"
    out["bands_vs_middle"] = {
        "low": side(out["low_minus_middle"]),  # type: ignore[arg-type]
        "high": side(out["high_minus_middle"]),  # type: ignore[arg-type]
    }
    return out


def log_fragility(loggers: list[Any], summary: dict[str, dict[str, Any]], plot: Path) -> None:
    """The band means, intervals and correlation of each setting, and the plot, to every logger (W&B, CSV)."""
    metrics = {}
    for setting, st in summary.items():
        for band in ("low", "middle", "high", "extremes_minus_middle", "low_minus_middle", "high_minus_middle"):
            for part in ("mean", "low", "high"):
                metrics[f"fragility/{setting}/{band}/{part}"] = st[band][part]
        metrics[f"fragility/{setting}/spearman"] = st["spearman"]
    for lg in loggers:
        lg.log_metrics(metrics)
        if hasattr(lg, "log_image"):
            lg.log_image(key="fragility", images=[str(plot)])
        lg.save()  # the CSV logger writes its file on save (no trainer.fit ends this run's logging)


@dataclass(frozen=True)
class Analysis:
    """What the analyses of one detector share (fragility here, the cue attribution in `cues`): the
    detector and its RAD scores, the bands' levels, the bootstrap and plot settings, where to write."""

    detector: Detector
    scores: torch.Tensor
    preprocess: Preprocess
    levels: tuple[float, float]
    bootstrap: int
    bins: int
    seed: int
    device: torch.device
    out: Path
    loggers: list[Any]


def analyse(
    a: Analysis, samples: list[Sample], settings: dict[str, list[Any]], title: str, store: FeatureStore | None = None
) -> dict[str, dict[str, Any]]:
    """The whole analysis for one detector: measure (every rank), band statistics, fragility.csv/json/png
    in `out` and a verdict line per setting (rank 0). Returns the statistics per setting."""
    detector, scores, preprocess, bootstrap, bins = a.detector, a.scores, a.preprocess, a.bootstrap, a.bins
    seed, device, out, loggers, levels = a.seed, a.device, a.out, a.loggers, a.levels
    accs = measure(detector, samples, settings, preprocess, seed, device, store)
    lo, hi = levels
    stats = {s: band_statistics(scores, acc.compute(), lo, hi, bootstrap, seed) for s, acc in accs.items()}
    summary = {s: {"compared": accs[s].compared, **_plain(st)} for s, st in stats.items()}
    if distributed.rank() != 0:
        return summary
    write_atomic(out / "fragility.csv", fragility_csv(scores, accs, lo, hi))
    write_atomic(out / "fragility.json", json.dumps({"images": len(samples), "settings": summary}, indent=1) + "\n")
    plot_fragility(out / "fragility.png", scores, {s: acc.compute() for s, acc in accs.items()}, lo, hi, bins, title)
    for setting, st in stats.items():
        log.info("%s", verdict_line(setting, st, accs[setting].compared))
    log_fragility(loggers, summary, out / "fragility.png")
    return summary


def measure(
    detector: Detector,
    samples: list[Sample],
    settings: dict[str, list[Any]],
    preprocess: Preprocess,
    seed: int,
    device: torch.device,
    store: FeatureStore | None = None,
) -> dict[str, FragilityAccumulator]:
    """One clean pass and one pass per setting for each image, compared as they come. Under DDP each
    rank measures every world-th image and the sums are added; with a store, the sums are a feature
    cache entry (kind `fragility`), keyed by the detector and what each data set depends on."""
    clean = EvalImages(samples, Chain("clean", [], seed), preprocess)
    processed = {s: EvalImages(samples, Chain(s, specs, seed), preprocess) for s, specs in settings.items()}

    def compute() -> dict[str, torch.Tensor]:
        share = range(distributed.rank(), len(samples), distributed.world())
        accs = _accumulate(detector, clean, processed, share, device)
        mine = {f"{s}/{k}": v for s, acc in accs.items() for k, v in acc.state().items()}
        every = distributed.all_gather(mine)
        return {k: torch.stack([part[k] for part in every]).sum(0) for k in mine}

    if store is None:
        state = compute()
    else:
        seen: dict[int, tuple[Any, str]] = {}
        parts = {"clean": data_parts(clean, seen), "settings": {s: data_parts(d, seen) for s, d in processed.items()}}
        state = store.fragility(parts, compute, f"fragility sums over {len(samples)} images")
    return {
        s: FragilityAccumulator.from_state({k: state[f"{s}/{k}"] for k in ("sq_diff", "total", "total_sq", "counts")})
        for s in settings
    }


@torch.no_grad()
def _accumulate(
    detector: Detector,
    clean: EvalImages,
    processed: dict[str, EvalImages],
    share: range,
    device: torch.device,
) -> dict[str, FragilityAccumulator]:
    accs = {s: FragilityAccumulator(detector.feature_channels) for s in processed}
    detector.to(device)
    for i in share:
        a = detector.forward_features(clean[i][0].unsqueeze(0).to(device))
        for s, data in processed.items():
            accs[s].update(a, detector.forward_features(data[i][0].unsqueeze(0).to(device)))
    return accs


def _plain(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: asdict(v) if isinstance(v, Interval) else v for k, v in stats.items()}


def verdict_line(setting: str, st: dict[str, Any], compared: str) -> str:
    low, mid, high, d = st["low"], st["middle"], st["high"], st["extremes_minus_middle"]
    return (
        f"{setting} ({compared}): extremes more fragile than the middle: {st['verdict']} "
        f"(low {low.mean:.3g} [{low.low:.3g}, {low.high:.3g}], middle {mid.mean:.3g} [{mid.low:.3g}, {mid.high:.3g}], "
        f"high {high.mean:.3g} [{high.low:.3g}, {high.high:.3g}]; extremes - middle {d.mean:.3g} "
        f"[{d.low:.3g}, {d.high:.3g}]; low band vs middle: {st['bands_vs_middle']['low']}, high band vs middle: "
        f"{st['bands_vs_middle']['high']}; Spearman(|RAD - median|, fragility) {st['spearman']:.3f})"
    )


def fragility_csv(scores: torch.Tensor, accs: dict[str, FragilityAccumulator], lo: float, hi: float) -> str:
    band, pct = bands(scores, lo, hi), rad_percentiles(scores)
    names = ("low", "middle", "high")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["channel", "rad", "rad_percentile", "band", "setting", "compared", "fragility"])
    for setting, acc in accs.items():
        frag = acc.compute()
        for k in range(len(scores)):
            w.writerow(
                [
                    k,
                    repr(float(scores[k])),
                    f"{100 * float(pct[k]):.4f}",
                    names[int(band[k])],
                    setting,
                    acc.compared,
                    repr(float(frag[k])),
                ]
            )
    return buf.getvalue()


def plot_fragility(
    path: Path, scores: torch.Tensor, frags: dict[str, torch.Tensor], lo: float, hi: float, bins: int, title: str
) -> None:
    # a resize moves activations far more than an encoding: one log scale for all settings
    plot_by_percentile(path, scores, frags, (lo, hi), bins, title, "fragility (MSE / clean variance, log scale)", True)


def plot_by_percentile(
    path: Path,
    scores: torch.Tensor,
    values: dict[str, torch.Tensor],
    levels: tuple[float, float],
    bins: int,
    title: str,
    ylabel: str,
    log_scale: bool,
) -> None:
    """Mean of each per-channel value per RAD-percentile bin, one line per entry; the bands the levels prune shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = levels
    order = torch.argsort(scores.float(), stable=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    edges = torch.linspace(0, len(scores), bins + 1).round().long()
    centres = [100 * (float(edges[b]) + float(edges[b + 1])) / 2 / len(scores) for b in range(bins)]
    for name, value in values.items():
        ranked = value[order]
        means = [float(torch.nanmean(ranked[edges[b] : edges[b + 1]])) for b in range(bins)]
        ax.plot(centres, means, marker="o", ms=3, label=name)
    ax.axvspan(0, 100 * lo, color="#C44E52", alpha=0.15, label="pruned")
    ax.axvspan(100 * hi, 100, color="#C44E52", alpha=0.15)
    ax.set_xlabel("RAD percentile of the channel")
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
