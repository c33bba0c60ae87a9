"""DEAR from Python, without Hydra: the stages of `task=dear` as functions on folders.

    det = load_detector("npr", "checkpoints/npr/NPR.pth")
    scores = dissect_folder(det, "data/inpaint")               # RAD per channel
    mask = prune_channels(scores, alpha_low=0.2, alpha_high=0.8)  # 0/1 per channel
    fit = refit_head(det, mask, real=["data/train/real"], fake=["data/train/fake"],
                     val_real=["data/val/real"], val_fake=["data/val/fake"], inpaint="data/inpaint")
    logits = score_folder(det, "data/test", head=fit.head)     # {image: {"base": logit, "dear": logit}}

Every setting not given is the packaged config's (`config()`: what `python -m dear_exp` would run),
checked by the same schema; features go through the same cache, so a notebook and the CLI share it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from dear_exp import memory, schema
from dear_exp.__main__ import quiet_notes
from dear_exp.cache import FeatureCache
from dear_exp.data.datamodules import DiagnosticDataModule, TrainDataModule
from dear_exp.data.images import Preprocess
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.detectors.base import Detector
from dear_exp.errors import DearError
from dear_exp.features import FeatureStore
from dear_exp.progress import ReturnFreeMemory
from dear_exp.prune import PruneSettings, channel_mask
from dear_exp.refit import HeadFit, RefitSettings, refit_heads, view_rows
from dear_exp.refit.head import MaskedLinearHead

log = logging.getLogger(__name__)
quiet_notes()  # Lightning's tips and the warnings about what dear-exp does on purpose; nothing else


def config(*overrides: str, root: str | Path = ".") -> DictConfig:
    """The packaged config with CLI-style overrides (e.g. "detector=ufd", "head.l2=[0.01]"), its paths
    below `root`, checked by the schema."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dear_exp import schema
    from dear_exp.__main__ import CONF_DIR, register_resolvers

    register_resolvers()
    root = Path(root).resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("main", overrides=[f"paths.root_dir={root}", "logger=none", *overrides])
    OmegaConf.update(cfg, "paths.output_dir", str(root / "logs" / "python"), force_add=True)
    GlobalHydra.instance().clear()
    schema.validate(cfg)
    return cfg


@dataclass
class LoadedDetector:
    """A frozen detector with its preprocessing and the config it was built from."""

    net: Detector
    preprocess: Preprocess
    cfg: DictConfig
    cache_dir: Path | None

    def store(self) -> FeatureStore:
        """The feature store of this detector (a CPU/GPU trainer of one device; the cache when enabled)."""
        trainer = L.Trainer(
            accelerator="auto",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            precision="32-true",
            callbacks=[ReturnFreeMemory()],
        )
        cache = FeatureCache(str(self.cache_dir or ""), enabled=self.cache_dir is not None)
        return FeatureStore(cache, trainer, self.net, 0)


def load_detector(
    detector: str = "npr",
    checkpoint: str | Path | None = None,
    *overrides: str,
    cache_dir: str | Path | None = ".cache/features",
) -> LoadedDetector:
    """A detector of conf/detector/<detector>.yaml with its weights from `checkpoint` (loaded strictly,
    weights only); cache_dir=None extracts features without caching them."""
    extra = [f"detector.checkpoint={Path(checkpoint).resolve()}"] if checkpoint else []
    cfg = config(f"detector={detector}", *extra, *overrides)
    log.info("%s", memory.configure(schema.build(cfg.memory, "memory")))  # as the command line does
    net = build_detector(cfg.detector).eval()
    return LoadedDetector(net, preprocess_of(cfg.detector), cfg, Path(cache_dir) if cache_dir else None)


def _augment(det: LoadedDetector) -> dict[str, Any]:
    return {str(k): v for k, v in dict(OmegaConf.to_container(det.cfg.augment, resolve=True)).items()}  # type: ignore[arg-type]


def _inpaint(det: LoadedDetector, folder: str | Path, masks: str | Path | None) -> DiagnosticDataModule:
    d = det.cfg.diag_data
    folder = Path(folder).resolve()
    return DiagnosticDataModule(
        root=str(folder),
        image_dir=".",
        mask_dir=str(Path(masks).resolve()) if masks else ".",
        augment=_augment(det),
        preprocess=det.preprocess,
        batch_size=d.batch_size,
        num_workers=0,
        seed=det.cfg.seed,
        dissect_max_batches=d.dissect_max_batches,
        dissect_augment=d.dissect_augment,
        source_hint="give a folder of {stem}_inpaint.* images with their {stem}_mask.* masks",
    )


def dissect_folder(det: LoadedDetector, inpaint: str | Path, masks: str | Path | None = None) -> torch.Tensor:
    """Mean RAD per channel over a folder of `{stem}_inpaint.*` images and their `{stem}_mask.*`
    (in `masks`, default the same folder), augmented as the refit's training images."""
    from dear_exp.dissect import rad_scores

    store = det.store()
    return rad_scores(_inpaint(det, inpaint, masks), det.net, store.trainer.strategy.root_device, store)[0]


def prune_channels(
    scores: torch.Tensor, alpha_low: float = 0.2, alpha_high: float = 0.8, mode: str = "bilateral", seed: int = 0
) -> torch.Tensor:
    """The channel mask (1 = kept) of a prune mode: bilateral keeps the channels between the RAD quantiles."""
    p = PruneSettings(mode=mode, alpha_low=alpha_low, alpha_high=alpha_high, seed=seed)  # type: ignore[arg-type]
    return channel_mask(p, scores, scores.numel())


def refit_head(
    det: LoadedDetector,
    mask: torch.Tensor,
    real: list[str],
    fake: list[str],
    val_real: list[str],
    val_fake: list[str],
    inpaint: str | Path,
    masks: str | Path | None = None,
    name: str = "dear",
    **head: Any,
) -> HeadFit:
    """A head refitted on the kept channels of `mask` from `views` augmented crops of the training
    folders and the inpaint set, solved to convergence (head.solver=newton, the L2 chosen on the
    validation folders). `head`: RefitSettings fields to change (e.g. l2=[0.01])."""
    from dear_exp import schema

    settings = schema.settings(RefitSettings, OmegaConf.merge(det.cfg.head, head), "head")  # type: ignore[arg-type]
    if settings.solver != "newton" or settings.mode != "cached":
        raise DearError("the Python API refits with head.solver=newton on cached rows; use the CLI for head=reference")
    train = TrainDataModule(
        root=str(Path.cwd()),
        train={"real": real, "fake": fake},
        val={"real": val_real, "fake": val_fake},
        augment=_augment(det),
        preprocess=det.preprocess,
        batch_size=det.cfg.train_data.batch_size,
        num_workers=0,
        seed=det.cfg.seed,
    )
    train.setup("fit")
    diag = _inpaint(det, inpaint, masks)
    diag.setup("fit")
    assert train.train_set is not None and train.val_set is not None and diag.dataset is not None
    store = det.store()
    rows = view_rows(
        store, train.train_set, diag.dataset, train.val_set, settings.views, det.cfg.seed, det.cfg.train_data.batch_size
    )
    return refit_heads({name: mask}, settings, det.net, store.trainer.strategy.root_device, rows, store)[0]


def score_folder(
    det: LoadedDetector, images: str | Path, head: MaskedLinearHead | None = None, batch_size: int = 32
) -> dict[str, dict[str, float]]:
    """Logits of one image or a folder of images (keys: paths relative to the folder, sorted): the
    detector's own (`base`) and, with a head, `dear`; > 0 means fake. The extraction path of
    task=evaluate and task=predict."""
    from dear_exp.evaluate import input_samples, score_images

    root, samples = input_samples(Path(images), key="images")
    logits = score_images(
        det.store(),
        samples,
        det.preprocess,
        {"dear": head} if head is not None else {},
        f"images {root}",
        batch_size,
        det.cfg.seed,
    )
    logits.pop("label", None)
    return {s.key: {m: float(v[i]) for m, v in logits.items()} for i, s in enumerate(samples)}


__all__ = [
    "LoadedDetector",
    "config",
    "dissect_folder",
    "load_detector",
    "prune_channels",
    "refit_head",
    "score_folder",
]
