"""task=predict: score one image or a folder with any detector (and a saved DEAR head)."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from dear_exp.data.datasets import EvalImages
from dear_exp.data.folders import IMAGE_EXTENSIONS, Sample, list_images
from dear_exp.data.postprocess import Chain
from dear_exp.data.samplers import SizeBucketBatchSampler
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.errors import DearError
from dear_exp.model import DEARModule
from dear_exp.report import write_atomic
from dear_exp.tasks.common import ensure_detector, make_trainer
from dear_exp.tasks.evaluate import load_head

log = logging.getLogger(__name__)


def input_samples(path: Path) -> tuple[Path, list[Sample]]:
    """The images to score, keyed by their path relative to the input folder, sorted."""
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DearError(f"{path} is not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return path.parent, [Sample(path, -1, path.name)]
    files = list_images(path, "give an image or a folder of images as task.input")
    return path, [Sample(p, -1, p.relative_to(path).as_posix()) for p in files]


def run(cfg: DictConfig) -> dict[str, float]:
    root, samples = input_samples(Path(cfg.task.input))
    ensure_detector(cfg, Path(cfg.paths.output_dir))
    model = DEARModule(build_detector(cfg.detector))
    heads = ("base",)
    if cfg.task.get("head"):
        model.head = load_head(model.detector.feature_channels, Path(cfg.task.head))
        heads = ("base", "dear")
    dataset = EvalImages(samples, Chain("none", [], cfg.seed), preprocess_of(cfg.detector))
    batches = SizeBucketBatchSampler(dataset.final_sizes(), cfg.task.batch_size)  # equal sizes batch together
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=0)
    trainer = make_trainer(cfg, [], [], enable_progress_bar=len(samples) > 1)
    outputs = trainer.predict(model, dataloaders=loader)
    logits = {h: torch.empty(len(samples), dtype=torch.float64) for h in heads}
    for out in outputs:
        for h in heads:
            logits[h][out["index"]] = out[h].double()
    columns = ["path"]
    for h in heads:
        prefix = "" if h == "base" else "dear_"
        columns += [f"{prefix}logit", f"{prefix}p_fake", f"{prefix}verdict"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for i, sample in enumerate(samples):
        line: list[str] = [sample.key]
        for h in heads:
            logit = float(logits[h][i])
            line += [f"{logit:.6g}", f"{float(torch.sigmoid(logits[h][i])):.6g}", "fake" if logit > 0 else "real"]
        writer.writerow(line)
    target = Path(cfg.task.output) if cfg.task.get("output") else Path(cfg.paths.output_dir) / "predictions.csv"
    write_atomic(target, buf.getvalue())
    fakes = {h: int((logits[h] > 0).sum()) for h in heads}
    print(f"scored {len(samples)} image(s) from {root}: " + ", ".join(f"{h} calls {n} fake" for h, n in fakes.items())
          + f"; wrote {target}")
    return {f"{h}/fake_share": fakes[h] / len(samples) for h in heads}
