"""Per-channel cue attribution: how much each known cue drives each channel, beside its RAD. Needs
probe images that carry one cue alone, paired with the same clean images: the embedded demo's world
provides them (`demo.cues`), because its cues are known by construction.

Drive of cue k on channel c: the mean change of the channel's pooled activation (the feature the
head reads) between a probe carrying k and its clean image, divided by the standard deviation of the
clean activation over the probes (a paired standardised mean difference: a channel's scale cancels).
A channel's dominant cue is the one with the largest |drive|. The question it answers on the demo:
are the channels at RAD's extremes (the ones DEAR prunes) the ones the spurious cues (a: the
real-side JPEG shortcut, b: the generator fingerprints) drive, rather than the robust shared cue (c)?
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

import numpy as np
import torch

from dear_exp.data.images import Preprocess
from dear_exp.detectors.base import Detector
from dear_exp.files import write_atomic
from dear_exp.fragility import (
    Analysis,
    Interval,
    bands,
    bootstrap_mean,
    difference,
    plot_by_percentile,
    rad_percentiles,
    side,
)

log = logging.getLogger(__name__)
_BATCH = 32


@torch.no_grad()
def pooled(detector: Detector, images: list[np.ndarray], preprocess: Preprocess, device: torch.device) -> torch.Tensor:
    """[N, C] pooled activations of the dissected layer, in float64."""
    rows = []
    detector.to(device)
    for i in range(0, len(images), _BATCH):
        x = torch.stack([preprocess(im) for im in images[i : i + _BATCH]]).to(device)
        rows.append(detector.pool(detector.forward_features(x)).double().cpu())
    return torch.cat(rows)


def drives(clean: torch.Tensor, probes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Paired standardised mean difference per channel and cue (NaN where the clean activation is
    constant: no scale to compare against)."""
    sd = clean.std(0)
    sd = torch.where(sd > 1e-12 * (clean.abs().mean(0) + 1e-30), sd, torch.full_like(sd, float("nan")))
    return {cue: ((act - clean).mean(0) / sd).float() for cue, act in probes.items()}


def band_drives(
    scores: torch.Tensor, drive: dict[str, torch.Tensor], levels: tuple[float, float], bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per cue: mean |drive| of the low band, the kept middle and the high band (bootstrap 95 %
    intervals over channels), each band against the middle, and the share of each band's channels
    that cue dominates."""
    band = bands(scores, *levels)
    names = list(drive)
    table = torch.stack([drive[c].abs() for c in names])  # [cues, C]
    ok = ~torch.isnan(table).any(0)
    dominant = torch.full((len(scores),), -1, dtype=torch.long)
    dominant[ok] = table[:, ok].argmax(0)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, Any]] = {}
    for k, cue in enumerate(names):
        d = table[k].double()
        low, mid, high = (d[ok & (band == b)] for b in (0, 1, 2))
        st: dict[str, Any] = {
            "low": bootstrap_mean(low, bootstrap, gen),
            "middle": bootstrap_mean(mid, bootstrap, gen),
            "high": bootstrap_mean(high, bootstrap, gen),
            "low_minus_middle": difference(low, mid, bootstrap, gen),
            "high_minus_middle": difference(high, mid, bootstrap, gen),
        }
        st["bands_vs_middle"] = {"low": side(st["low_minus_middle"]), "high": side(st["high_minus_middle"])}
        st["dominant_share"] = {
            name: float((dominant[ok & (band == b)] == k).double().mean()) if bool((ok & (band == b)).any()) else None
            for b, name in enumerate(("low", "middle", "high"))
        }
        out[cue] = st
    return out


def cue_line(cue: str, letter: str, st: dict[str, Any]) -> str:
    low, mid, high = st["low"], st["middle"], st["high"]
    share = st["dominant_share"]
    return (
        f"cue {cue} ({letter}): |drive| low {low.mean:.3g} [{low.low:.3g}, {low.high:.3g}], middle {mid.mean:.3g} "
        f"[{mid.low:.3g}, {mid.high:.3g}], high {high.mean:.3g} [{high.low:.3g}, {high.high:.3g}]; low band vs middle: "
        f"{st['bands_vs_middle']['low']}, high band vs middle: {st['bands_vs_middle']['high']}; dominant in "
        f"{_pct(share['low'])} of the low band, {_pct(share['middle'])} of the middle, {_pct(share['high'])} of the high band"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def cues_csv(scores: torch.Tensor, drive: dict[str, torch.Tensor], levels: tuple[float, float]) -> str:
    band, pct = bands(scores, *levels), rad_percentiles(scores)
    names = ("low", "middle", "high")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["channel", "rad", "rad_percentile", "band", "cue", "drive"])
    for cue, d in drive.items():
        for k in range(len(scores)):
            w.writerow(
                [k, repr(float(scores[k])), f"{100 * float(pct[k]):.4f}", names[int(band[k])], cue, repr(float(d[k]))]
            )
    return buf.getvalue()


def attribute(
    a: Analysis, probes: dict[str, list[np.ndarray]], letters: dict[str, str], title: str
) -> dict[str, dict[str, Any]]:
    """The whole cue attribution: drives, band statistics, cues.csv/json/png in `a.out`, a line per cue."""
    detector, scores, preprocess, levels, device, out = a.detector, a.scores, a.preprocess, a.levels, a.device, a.out
    bootstrap, bins, seed, loggers = a.bootstrap, a.bins, a.seed, a.loggers
    clean = pooled(detector, probes["clean"], preprocess, device)
    acts = {cue: pooled(detector, ims, preprocess, device) for cue, ims in probes.items() if cue != "clean"}
    drive = drives(clean, acts)
    stats = band_drives(scores, drive, levels, bootstrap, seed)
    plain = {c: {k: v.__dict__ if isinstance(v, Interval) else v for k, v in st.items()} for c, st in stats.items()}
    write_atomic(out / "cues.csv", cues_csv(scores, drive, levels))
    doc = {"probes_per_cue": len(probes["clean"]), "letters": letters, "cues": plain}
    write_atomic(out / "cues.json", json.dumps(doc, indent=1) + "\n")
    plot_by_percentile(
        out / "cues.png",
        scores,
        {f"{c} ({letters[c]})": d.abs() for c, d in drive.items()},
        levels,
        bins,
        title,
        "|drive| (paired mean change / clean sd)",
        log_scale=False,
    )
    for cue, st in stats.items():
        log.info("%s", cue_line(cue, letters[cue], st))
    metrics = {f"cues/{c}/{b}/mean": st[b].mean for c, st in stats.items() for b in ("low", "middle", "high")}
    for lg in loggers:
        lg.log_metrics(metrics)
        if hasattr(lg, "log_image"):
            lg.log_image(key="cues", images=[str(out / "cues.png")])
        lg.save()
    return plain
