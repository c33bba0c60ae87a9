"""task=make_inpaint: generate the diagnostic inpaint set from real images (method.md step 1).

`python -m dear_exp task=make_inpaint inpaint.real_dir=X inpaint.out_dir=Y [inpaint=sdxl|flux_fill]`
writes `{stem}_inpaint.png` and `{stem}_mask.png` (and `{stem}_alpha.png` with inpaint.save_alpha=true)
in the reference layout, one image per real image, deterministic per image, resumable, sharded over
the trainer's devices.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from dear_exp.errors import DearError
from dear_exp.files import write_atomic
from dear_exp.inpaint.settings import InpaintSettings
from dear_exp.inpaint.writer import Layout, check_manifest, check_not_inside, list_jobs, write_manifest

log = logging.getLogger(__name__)
SUMMARY_FILE = "make_inpaint_summary.json"


def capped_devices(trainer_cfg: DictConfig, n_images: int) -> Any:
    """The trainer's devices, capped at the number of images (the unrepeated sampler needs at least
    one image per rank); None when nothing changes."""
    devices = trainer_cfg.get("devices", "auto")
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if isinstance(devices, (list, ListConfig)):
        ids = list(devices)
        if len(ids) * nodes <= n_images:
            return None
        if nodes > 1:
            raise DearError(f"{len(ids) * nodes} ranks for {n_images} image(s); use fewer nodes or devices")
        return ids[:n_images]
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
        devices = gpus if gpus else (os.cpu_count() or 1) if devices == -1 else 1
    if not isinstance(devices, int) or devices * nodes <= n_images:
        return None
    if nodes > 1:
        raise DearError(f"{devices * nodes} ranks for {n_images} image(s); set trainer.num_nodes=1 or fewer devices")
    return n_images


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


def run(cfg: DictConfig) -> dict[str, Any]:
    if "inpaint" not in cfg:
        raise DearError("no inpaint config; run with task=make_inpaint (it brings inpaint=sd15)")
    ic = cfg.inpaint
    settings = InpaintSettings.from_cfg(ic)
    real_dir = Path(ic.real_dir)
    layout = Layout(Path(ic.out_dir), str(ic.image_dir), str(ic.mask_dir), settings.save_alpha)
    if not real_dir.is_dir():
        raise DearError(f"inpaint.real_dir={real_dir} not found; set inpaint.real_dir to a folder of real images")
    check_not_inside(layout, real_dir)
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if "spawn" in strategy or "notebook" in strategy or "fork" in strategy:
        raise DearError(
            f"trainer.strategy={strategy} is not supported by task=make_inpaint (the spawned ranks' "
            "results do not come back); use trainer=ddp"
        )
    jobs = list_jobs(real_dir, ic.get("max_images"))
    check_manifest(layout, settings.identity())
    pending = [j for j in jobs if not layout.is_done(j.stem)]
    done_before = len(jobs) - len(pending)
    log.info("%d real image(s) in %s: %d already done, %d to inpaint", len(jobs), real_dir, done_before, len(pending))
    removed = layout.remove_stale_temporaries()
    if removed:
        log.info("Removed %d temporary file(s) an interrupted run left in %s", removed, layout.out_dir)

    start = time.perf_counter()
    ranks: list[dict[str, Any]] = []
    if pending:
        from dear_exp.inpaint.pipeline import resolve_model

        source = resolve_model(settings)  # one line, before any file or process, when the model is unusable
        write_manifest(layout, settings.identity())
        log.info(
            "Inpainting with %s (%s) at %d px, %d steps, guidance %s, composite=%s, blur_factor=%s, seed=%d",
            source.name,
            source.class_name,
            settings.resolution,
            settings.steps,
            settings.guidance_scale,
            settings.composite,
            settings.blur_factor,
            settings.seed,
        )
        ranks = _predict(cfg, pending, settings, layout, source)
        if ranks is None:  # not the global-zero rank: rank 0 reports
            return {}
    seconds = time.perf_counter() - start
    return _summarise(cfg, len(jobs), done_before, ranks, seconds, layout, str(settings.model))


def _predict(
    cfg: DictConfig, pending: list[Any], settings: InpaintSettings, layout: Layout, source: Any
) -> list[dict[str, Any]] | None:
    from dear_exp.build import make_trainer
    from dear_exp.distributed import rank_world
    from dear_exp.inpaint.lightning import InpaintWriter, job_loader

    overrides: dict[str, Any] = {}
    devices = capped_devices(cfg.trainer, len(pending))
    if devices is not None:
        log.info("trainer.devices=%s capped at %s: fewer images to inpaint than devices", cfg.trainer.devices, devices)
        overrides["devices"] = devices
    module = InpaintWriter(pending, settings, layout, source)
    trainer = make_trainer(cfg.trainer, [], [], cfg.progress, **overrides)
    loader = job_loader(len(pending), settings.batch_size, *rank_world(trainer))
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    if not trainer.is_global_zero:
        return None
    return module.ranks


def _summarise(
    cfg: DictConfig,
    n_images: int,
    done_before: int,
    ranks: list[dict[str, Any]],
    seconds: float,
    layout: Layout,
    model: str,
) -> dict[str, Any]:
    records = [r for rank in ranks for r in rank["records"]]
    counts = Counter(r["status"] for r in records)
    written = counts["written"]
    skipped = done_before + counts["skipped"]
    failures = sorted((r for r in records if r["status"] == "failed"), key=lambda r: r["stem"])
    step_seconds = sum(rank["step_seconds"] for rank in ranks)
    per_image = step_seconds / written if written else None
    summary_path = Path(cfg.paths.output_dir) / SUMMARY_FILE
    line = (
        f"make_inpaint: {written} written, {skipped} skipped (already done), {len(failures)} failed"
        + (f" (not fatal: reasons below and in {summary_path})" if failures else "")
        + f" of {n_images} image(s) in {seconds:.1f} s"
        + (f", {per_image:.2f} s/image of generation (summed over {len(ranks)} rank(s))" if per_image else "")
        + f"; outputs in {layout.image_root} and {layout.mask_root}"
    )
    write_json(
        summary_path,
        {
            "images": n_images,
            "written": written,
            "skipped": skipped,
            "failed": len(failures),
            "failures": [{"stem": r["stem"], "reason": r["reason"]} for r in failures],
            "seconds": seconds,
            "seconds_per_image": per_image,
            "model": model,
            "settings": OmegaConf.to_container(cfg.inpaint, resolve=True),
            "ranks": [
                {
                    "rank": rank["rank"],
                    "device": rank["device"],
                    "load_seconds": rank["load_seconds"],
                    "step_seconds": rank["step_seconds"],
                    "written": sorted(r["stem"] for r in rank["records"] if r["status"] == "written"),
                }
                for rank in ranks
            ],
        },
    )
    for r in failures[:20]:
        log.warning("failed %s: %s", r["stem"], r["reason"])
    if len(failures) > 20:
        log.warning("... and %d more failures, all in %s", len(failures) - 20, summary_path)
    log.info(line)
    print(line, flush=True)
    log.info(
        "Read the set with diag_data.root=%s diag_data.image_dir=%s diag_data.mask_dir=%s",
        layout.out_dir,
        layout.image_dir,
        layout.mask_dir,
    )
    return {
        "images": n_images,
        "written": written,
        "skipped": skipped,
        "failed": len(failures),
        "seconds_per_image": per_image,
    }
