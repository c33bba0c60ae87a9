"""task=predict: score one image or a folder with any detector (and a saved DEAR head)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from dear_exp import build
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.evaluate import input_samples, score_images
from dear_exp.files import write_atomic
from dear_exp.refit import load_head
from dear_exp.training import ensure_detector

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    root, samples = input_samples(Path(cfg.task.input))
    ensure_detector(cfg)
    detector = build_detector(cfg.detector)
    heads = {"dear": load_head(detector, Path(cfg.task.head))} if cfg.task.get("head") else {}
    trainer = build.make_trainer(cfg.trainer, [], [], cfg.progress, enable_progress_bar=len(samples) > 1)
    store = build.feature_store(cfg, trainer, detector)
    # the extraction path of evaluation: the same rows, the same logits
    logits = score_images(
        store, samples, preprocess_of(cfg.detector), heads, f"task.input {root}", cfg.task.batch_size, cfg.seed
    )
    heads_out = ("base", *heads)
    columns = ["path"]
    for h in heads_out:
        prefix = "" if h == "base" else "dear_"
        columns += [f"{prefix}logit", f"{prefix}p_fake", f"{prefix}verdict"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for i, sample in enumerate(samples):
        line: list[str] = [sample.key]
        for h in heads_out:
            logit = float(logits[h][i])
            line += [f"{logit:.6g}", f"{float(torch.sigmoid(logits[h][i])):.6g}", "fake" if logit > 0 else "real"]
        writer.writerow(line)
    target = Path(cfg.task.output) if cfg.task.get("output") else Path(cfg.paths.output_dir) / "predictions.csv"
    write_atomic(target, buf.getvalue())
    fakes = {h: int((logits[h] > 0).sum()) for h in heads_out}
    print(
        f"scored {len(samples)} image(s) from {root}: "
        + ", ".join(f"{h} calls {n} fake" for h, n in fakes.items())
        + f"; wrote {target}"
    )
    return {f"{h}/fake_share": fakes[h] / len(samples) for h in heads_out}
