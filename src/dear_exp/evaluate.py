"""Evaluation (method.md step 5): the base detector and every refitted head scored from one backbone pass
per image (the feature store's rows), under each post-processing setting and threshold policy."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dear_exp.data.datamodules import BenchmarkDataModule
from dear_exp.data.datasets import EvalImages
from dear_exp.data.folders import IMAGE_EXTENSIONS, Sample, list_images
from dear_exp.data.images import Preprocess
from dear_exp.data.postprocess import Chain
from dear_exp.errors import DearError
from dear_exp.features import FeatureStore, head_logits
from dear_exp.files import write_atomic
from dear_exp.metrics import best_threshold, evaluate_predictions, gather_logits

log = logging.getLogger(__name__)


def model_logits(rows: dict[str, torch.Tensor], heads: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The detector's own logit and each head's logit: all from one cached pass."""
    out = {"base": rows["logit"], "label": rows["label"]}
    for name, head in heads.items():
        out[name] = head_logits(head, rows["pooled"])
    return out


def calibration_thresholds(
    store: FeatureStore,
    samples: list[Sample],
    preprocess: Preprocess,
    heads: dict[str, torch.nn.Module],
    seed: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Per model, the threshold that maximises balanced accuracy on validation images, scored the
    way the test set is (native size, no post-processing): chosen before the test set is seen."""
    logits = score_images(
        store, samples, preprocess, heads, "train_data val [clean, calibration]", batch_size, seed, setting="clean"
    )
    labels = logits.pop("label")
    if not (labels == 0).any() or not (labels == 1).any():
        raise DearError(
            "the calibrated threshold needs real and fake validation images; "
            "drop `calibrated` from task.thresholds or give train_data.val both"
        )
    thresholds = {m: best_threshold(v[labels == 0], v[labels == 1]) for m, v in logits.items()}
    log.info(
        "Calibrated thresholds on %d validation images: %s",
        len(samples),
        ", ".join(f"{m} {t:.4g}" for m, t in thresholds.items()),
    )
    return thresholds


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation gives the report: the metric rows (`evaluate_predictions`) and the logits they
    were computed from, per (source, setting) and model, from which the ROC and PR curves are drawn."""

    rows: list[dict[str, Any]]
    logits: dict[tuple[str, str], dict[str, torch.Tensor]]
    subsets: Mapping[str, Mapping[str, str]]
    models: tuple[str, ...]
    protocol: str = "dear"

    def pair(self, subset: str, setting: str, model: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The subset's real and fake logits under one setting, for one model."""
        spec = self.subsets[subset]
        return (
            self.logits[(spec["real"], setting)][model],
            self.logits[(spec.get("fake_source", subset), setting)][model],
        )


def evaluate(
    store: FeatureStore,
    benchmark: BenchmarkDataModule,
    heads: dict[str, torch.nn.Module],
    policies: tuple[str, ...] = ("logit0",),
    calibrated: dict[str, float] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    protocol: str = "dear",
    scores: Path | None = None,
) -> Evaluation:
    """Every source under every post-processing setting from the cache (one backbone pass each,
    shared by every head of a sweep), then the metrics per subset and policy under the metric
    protocol; `scores`: also write every image's logits there (`write_scores`)."""
    models = ("base", *heads)
    log.info("Evaluating %s on %s under %s", "/".join(models), benchmark.name, ", ".join(benchmark.settings))
    requests = [
        (f"{benchmark.name}/{s.source} [{s.setting}]", ds) for s, ds in zip(benchmark.sources, benchmark.datasets)
    ]
    rows = store.rows("images", requests, logits=True, batch_size=benchmark.batch_size)  # type: ignore[arg-type]
    outputs = [[model_logits(r, heads)] for r in rows]
    if scores is not None:
        write_scores(
            scores, benchmark.sources, [ds.samples for ds in benchmark.datasets], outputs, benchmark.subsets, models
        )
    rows = evaluate_predictions(
        benchmark.sources,
        outputs,
        benchmark.subsets,
        models,
        groups=getattr(benchmark, "groups", None),
        policies=policies,
        calibrated=calibrated,
        bootstrap=bootstrap,
        seed=seed,
        protocol=protocol,
    )
    logits = gather_logits(benchmark.sources, outputs, models)
    return Evaluation(rows, logits, benchmark.subsets, models, protocol)


SCORE_COLUMNS = ("path", "source", "subset", "setting", "label")


def write_scores(
    path: Path,
    sources: Sequence[Any],
    samples: Sequence[Sequence[Sample]],
    outputs: Sequence[Sequence[Mapping[str, torch.Tensor]]],
    subsets: Mapping[str, Mapping[str, str]],
    models: tuple[str, ...],
) -> None:
    """scores.csv: one row per image and post-processing setting, the logits every metric of
    results.csv is computed from. `path` is relative to the benchmark root; `source` the index's
    source (a real set or a subset's fakes); `subset` the subsets that score the image, `;`-joined (a
    real set paired with several generators lists them all); `label` 0 real, 1 fake; `logit_<model>`
    per model (base = the detector as released), at full precision (repr: float() reads back the
    same value). Written atomically."""
    logits = gather_logits(sources, outputs, models)
    member: dict[str, list[str]] = {}
    for subset, spec in subsets.items():
        member.setdefault(spec["real"], []).append(subset)
        member.setdefault(spec.get("fake_source", subset), []).append(subset)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*SCORE_COLUMNS, *(f"logit_{m}" for m in models)])
    n = 0
    for source, items in zip(sources, samples):
        values = logits[(source.source, source.setting)]
        if any(len(values[m]) != len(items) for m in models):
            raise RuntimeError(f"{source.source} [{source.setting}]: {len(items)} images but other counts of logits")
        columns = [values[m].tolist() for m in models]
        for i, sample in enumerate(items):
            writer.writerow(
                [
                    sample.key,
                    source.source,
                    ";".join(dict.fromkeys(member.get(source.source, []))),
                    source.setting,
                    sample.label,
                    *(repr(float(c[i])) for c in columns),
                ]
            )
            n += 1
    write_atomic(path, buf.getvalue())
    log.info("Wrote %s: %d rows (image x post-processing setting), logits of %s", path.name, n, ", ".join(models))


def score_images(
    store: FeatureStore,
    samples: list[Sample],
    preprocess: Preprocess,
    heads: dict[str, torch.nn.Module],
    describe: str,
    batch_size: int = 64,
    seed: int = 0,
    setting: str = "none",
) -> dict[str, torch.Tensor]:
    """Logits of the base detector and each head for images as they are (no post-processing): the
    extraction path evaluation uses, so task=predict scores an image exactly as task=evaluate does."""
    dataset = EvalImages(samples, Chain(setting, [], seed), preprocess)
    rows = store.rows("images", [(describe, dataset)], logits=True, batch_size=batch_size)
    return model_logits(rows[0], heads)


def input_samples(path: Path, key: str = "task.input") -> tuple[Path, list[Sample]]:
    """The images to score, keyed by their path relative to the input folder, sorted; `key`: what the
    caller calls the path in its messages."""
    if not path.exists():
        raise DearError(f"{key}={path} does not exist; give an image or a folder of images")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DearError(f"{path} is not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return path.parent, [Sample(path, -1, path.name)]
    files = list_images(path, f"give an image or a folder of images as {key}")
    return path, [Sample(p, -1, p.relative_to(path).as_posix()) for p in files]
