"""task=predict: score one image or a folder with any detector (and a saved DEAR head).

The verdict is `fake` when a model's logit is > its threshold: logit 0 by default, `task.threshold`
(a logit, for every model), or `task.threshold_from` (a task=dear or task=evaluate run whose
results.csv has `calibrated` rows: each model's threshold chosen on the validation split)."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dear_exp import build
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.errors import DearError
from dear_exp.evaluate import input_samples, score_images
from dear_exp.files import write_atomic
from dear_exp.refit import load_head
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


def head_model(path: Path) -> str:
    """The model name results.csv gives a saved head: head_<control>.safetensors -> <control>, else dear."""
    return path.stem.removeprefix("head_") if path.stem.startswith("head_") else "dear"


def calibrated_thresholds(source: Path, detector: str, models: dict[str, str]) -> dict[str, float]:
    """Per scored model, the calibrated logit threshold a run saved in its results.csv (the threshold
    column of its `calibrated` rows; one value per model). `models` maps the column prefix here
    (base, and the head's model: dear or a control) to the model name in results.csv."""
    path = source / "results.csv" if source.is_dir() else source
    key = f"task.threshold_from={source}"
    if not path.is_file():
        raise DearError(f"{key}: no results.csv there; give the run folder of a task=dear or task=evaluate run")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if "threshold_policy" not in (rows[0] if rows else {}):
        raise DearError(
            f"{key}: {path} is not a results.csv of task=dear or task=evaluate (no threshold_policy column)"
        )
    ran_on = {r.get("detector", "") for r in rows} - {""}
    if ran_on and detector not in ran_on:
        raise DearError(
            f"{key}: its thresholds were calibrated for detector {', '.join(sorted(ran_on))}, not {detector}; "
            f"use detector={sorted(ran_on)[0]} or another run"
        )
    out = {}
    for prefix, model in models.items():
        values = {
            float(r["threshold"])
            for r in rows
            if r["threshold_policy"] == "calibrated" and r["model"] == model and r.get("threshold", "") != ""
        }
        values = {v for v in values if not math.isnan(v)}
        if not values:
            raise DearError(
                f"{key}: {path} has no calibrated threshold for model {model}; rerun it with "
                "`calibrated` in task.thresholds, or give task.threshold=<logit>"
            )
        if len(values) > 1:
            raise DearError(f"{key}: {path} has {len(values)} calibrated thresholds for model {model}; give one run's")
        out[prefix] = values.pop()
    return out


def thresholds(cfg: DictConfig, models: dict[str, str]) -> tuple[dict[str, float], str]:
    """The verdict threshold of each model and where it comes from (one line)."""
    fixed, source = cfg.task.get("threshold"), cfg.task.get("threshold_from")
    if fixed is not None and source:
        raise DearError("task.threshold and task.threshold_from are both set; give one of them (or neither: logit 0)")
    if source:
        found = calibrated_thresholds(Path(str(source)), cfg.detector.name, models)
        return found, f"calibrated thresholds from {source}"
    if fixed is not None:
        return dict.fromkeys(models, float(fixed)), f"task.threshold={float(fixed):g}"
    return dict.fromkeys(models, 0.0), "logit 0"


def run(cfg: DictConfig) -> dict[str, float]:
    head_path = Path(cfg.task.head) if cfg.task.get("head") else None
    name = head_model(head_path) if head_path else None  # dear, or the control a head_<control> file holds
    models = {"base": "base", **({name: name} if name else {})}
    cut, origin = thresholds(cfg, models)  # a bad threshold source fails before any work
    root, samples = input_samples(Path(cfg.task.input))
    ensure_detector(cfg)
    detector = build_detector(cfg.detector)
    heads = {name: load_head(detector, head_path)} if name and head_path else {}
    trainer = build.make_trainer(cfg.trainer, [], [], cfg.progress, enable_progress_bar=len(samples) > 1)
    store = build.feature_store(cfg, trainer, detector)
    # the extraction path of evaluation: the same rows, the same logits
    logits = score_images(
        store, samples, preprocess_of(cfg.detector), heads, f"task.input {root}", cfg.task.batch_size, cfg.seed
    )
    heads_out = ("base", *heads)
    columns = ["path"]
    for h in heads_out:
        prefix = "" if h == "base" else f"{h}_"
        columns += [f"{prefix}logit", f"{prefix}p_fake", f"{prefix}verdict", f"{prefix}threshold"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for i, sample in enumerate(samples):
        line: list[Any] = [sample.key]
        for h in heads_out:
            logit = float(logits[h][i])
            line += [
                f"{logit:.6g}",
                f"{float(torch.sigmoid(logits[h][i])):.6g}",
                "fake" if logit > cut[h] else "real",
                repr(cut[h]),
            ]
        writer.writerow(line)
    target = Path(cfg.task.output) if cfg.task.get("output") else Path(cfg.paths.output_dir) / "predictions.csv"
    write_atomic(target, buf.getvalue())
    fakes = {h: int((logits[h].double() > cut[h]).sum()) for h in heads_out}
    print(
        f"scored {len(samples)} image(s) from {root}: "
        + ", ".join(f"{h} calls {n} fake" for h, n in fakes.items())
        + f" (threshold: {origin}"
        + ("" if origin == "logit 0" else "; " + ", ".join(f"{h} {cut[h]:.6g}" for h in heads_out))
        + f"); wrote {target}"
    )
    return {f"{h}/fake_share": fakes[h] / len(samples) for h in heads_out}
