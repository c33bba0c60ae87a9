"""task=fragility: does DEAR's premise hold for this detector and data? Per channel, its RAD (from
the diagnostic inpaint set) and its fragility under each post-processing setting (fragility.py), the
mean fragility of the bands `prune.alpha_low/alpha_high` would prune and of the kept middle, and a
verdict per setting.

    python -m dear_exp task=fragility postprocess=robust

Writes fragility.csv (one row per channel x setting), fragility.json (the band statistics) and
fragility.png (fragility against RAD percentile, binned, one line per setting, pruned bands shaded).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from dear_exp import build
from dear_exp.data.datasets import EvalImages
from dear_exp.data.postprocess import Chain
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.dissect import rad_scores
from dear_exp.distributed import rendezvous
from dear_exp.errors import DearError
from dear_exp.files import write_atomic
from dear_exp.fragility import FragilityAccumulator, Interval, band_statistics, bands
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    presets = OmegaConf.to_container(cfg.postprocess.settings, resolve=True)
    assert isinstance(presets, dict)
    settings = {str(k): list(v or []) for k, v in presets.items() if v}
    if not settings:
        raise DearError(
            "task=fragility compares clean images with processed ones: give a postprocess preset with a setting beyond clean (e.g. postprocess=robust)"
        )
    build.ensure_demo(cfg, [cfg.train_data.root, cfg.diag_data.root, cfg.benchmark.root])
    ensure_detector(cfg)
    L.seed_everything(cfg.seed, workers=True)
    preprocess = preprocess_of(cfg.detector)
    detector = build_detector(cfg.detector).eval()
    diag = build.diag_data(cfg, preprocess)
    diag.setup("fit")
    benchmark = build.benchmark(cfg, preprocess)
    trainer = build.make_trainer(cfg.trainer, [], [], cfg.progress)
    rendezvous(trainer)
    store, device = build.feature_store(cfg, trainer, detector), trainer.strategy.root_device
    scores = rad_scores(diag, detector, device, store)[0]
    samples = [s for source in benchmark.index.sources.values() for s in source][: cfg.task.max_images]
    accs = measure(detector, samples, settings, preprocess, cfg.seed, device)
    out = Path(cfg.paths.work_dir)
    lo, hi = float(cfg.prune.alpha_low), float(cfg.prune.alpha_high)
    stats = {s: band_statistics(scores, a.compute(), lo, hi, cfg.task.bootstrap, cfg.seed) for s, a in accs.items()}
    write_atomic(out / "fragility.csv", fragility_csv(scores, accs, lo, hi))
    summary = {s: {"compared": accs[s].compared, **_plain(st)} for s, st in stats.items()}
    write_atomic(out / "fragility.json", json.dumps({"images": len(samples), "settings": summary}, indent=1) + "\n")
    plot_fragility(
        out / "fragility.png",
        scores,
        {s: a.compute() for s, a in accs.items()},
        lo,
        hi,
        cfg.task.bins,
        f"{cfg.detector.name}: fragility against RAD ({len(samples)} images)",
    )
    for setting, st in stats.items():
        log.info("%s", verdict_line(setting, st, accs[setting].compared))
    return {f"{s}/verdict": st["verdict"] for s, st in stats.items()}


@torch.no_grad()
def measure(
    detector: torch.nn.Module,
    samples: list,
    settings: dict[str, list],
    preprocess: Any,
    seed: int,
    device: torch.device,
) -> dict[str, FragilityAccumulator]:
    """One clean pass and one pass per setting for each image, compared as they come."""
    clean = EvalImages(samples, Chain("clean", [], seed), preprocess)
    processed = {s: EvalImages(samples, Chain(s, specs, seed), preprocess) for s, specs in settings.items()}
    accs = {s: FragilityAccumulator(detector.feature_channels) for s in settings}
    detector.to(device)
    for i in range(len(samples)):
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
        f"[{d.low:.3g}, {d.high:.3g}]; Spearman(|RAD - median|, fragility) {st['spearman']:.3f})"
    )


def fragility_csv(scores: torch.Tensor, accs: dict[str, FragilityAccumulator], lo: float, hi: float) -> str:
    band = bands(scores, lo, hi)
    pct = torch.argsort(torch.argsort(scores.float(), stable=True), stable=True).double() / max(len(scores) - 1, 1)
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
    """Mean fragility per RAD-percentile bin, one line per setting; the bands the levels prune shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort(scores.float(), stable=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    edges = torch.linspace(0, len(scores), bins + 1).round().long()
    centres = [100 * (float(edges[b]) + float(edges[b + 1])) / 2 / len(scores) for b in range(bins)]
    for setting, frag in frags.items():
        ranked = frag[order]
        means = [float(torch.nanmean(ranked[edges[b] : edges[b + 1]])) for b in range(bins)]
        ax.plot(centres, means, marker="o", ms=3, label=setting)
    ax.axvspan(0, 100 * lo, color="#C44E52", alpha=0.15, label="pruned")
    ax.axvspan(100 * hi, 100, color="#C44E52", alpha=0.15)
    ax.set_xlabel("RAD percentile of the channel")
    ax.set_yscale("log")  # a resize moves activations far more than an encoding: one scale for all settings
    ax.set_ylabel("fragility (MSE / clean variance, log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
