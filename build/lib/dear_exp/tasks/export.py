"""task=export: write a post-processed copy of a benchmark, for other tools.

`python -m dear_exp task=export postprocess=dear_processed task.src=data/test task.dst=data/test_processed_dear`

Every image below `task.src` is processed by each chosen setting of the postprocess preset and written
to `task.dst/<setting>/<its path relative to src>`. The per-image seeds come from that relative path,
so when `src` is the benchmark root the exported pixels are the ones evaluation scores. A chain ending
in an encoding op (jpeg, webp, dear_processed, corvi_social) writes that op's bytes as they are, with
its extension (.jpg, .webp); other chains write their pixels per `task.format`: `keep` (an empty chain
copies the file byte for byte; otherwise PNG/BMP/TIFF sources keep their format, lossy sources become
PNG, so nothing is lost that evaluation would see), `png`, or `jpeg` (PIL, `task.jpeg_quality`, a
compression evaluation does not apply). Writes are atomic (temporary file + os.replace), existing
outputs are skipped (an interrupted export resumes), and `dst/<setting>/.export.json` records the
chain, seed and format so a rerun with different ones stops instead of mixing outputs.
No detector is loaded.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from PIL import Image

from dear_exp.data.folders import list_images
from dear_exp.data.images import load_image
from dear_exp.data.postprocess import Chain
from dear_exp.errors import DearError
from dear_exp.files import atomic_path, write_atomic

log = logging.getLogger(__name__)

LOSSLESS = frozenset({".png", ".bmp", ".tif", ".tiff"})
FORMATS = ("keep", "png", "jpeg")
MANIFEST = ".export.json"


def output_plan(chain: Chain, fmt: str, suffix: str) -> tuple[str, str]:
    """(output suffix, how): `bytes` of the encoding last op, `copy` the source, `pil` lossless, `jpeg`."""
    if chain.encodes:
        return chain.encodes, "bytes"
    if fmt == "keep":
        if not chain.ops:
            return suffix, "copy"
        return (suffix, "pil") if suffix.lower() in LOSSLESS else (".png", "pil")
    if fmt == "png":
        return ".png", "pil"
    return ".jpg", "jpeg"


def export_one(item: tuple[str, list[dict[str, Any]], int, str, str, str, str, int]) -> None:
    """One image of one setting (a top-level function, so worker processes can run it)."""
    setting, specs, seed, src, key, out, how, quality = item
    path, target = Path(src), Path(out)
    if how == "copy":
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        return
    image, data = Chain(setting, specs, seed).process(load_image(path), key)
    if how == "bytes":
        assert data is not None
    else:
        buf = io.BytesIO()
        if how == "jpeg":
            image.save(buf, format="JPEG", quality=quality)
        else:
            image.save(buf, format=Image.registered_extensions()[target.suffix.lower()])
        data = buf.getvalue()
    write_atomic(target, data)


def _settings(cfg: DictConfig, chosen: Any) -> dict[str, list[dict[str, Any]]]:
    settings = OmegaConf.to_container(cfg.postprocess.settings, resolve=True)
    assert isinstance(settings, dict)
    if chosen is None:
        names = list(settings)
    else:
        names = [chosen] if isinstance(chosen, str) else [str(c) for c in chosen]
        unknown = [n for n in names if n not in settings]
        if unknown:
            raise DearError(
                f"task.setting={unknown[0]} is not a setting of this postprocess preset; choose one of "
                f"{', '.join(map(str, settings))} (or task.setting=null for all)"
            )
    for name in names:
        if "/" in str(name) or str(name) in ("", ".", ".."):
            raise DearError(f"postprocess setting {name!r} cannot name a folder; rename it")
    return {str(n): list(settings[n] or []) for n in names}


def _check_manifest(folder: Path, record: dict[str, Any]) -> None:
    path = folder / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old != record:
            raise DearError(
                f"{folder} was exported with other settings ({path}: {old}); delete it or choose another task.dst"
            )
    else:
        write_atomic(path, (json.dumps(record, indent=1) + "\n").encode())


def run(cfg: DictConfig) -> dict[str, float]:
    task = cfg.task
    for key in ("src", "dst"):
        if OmegaConf.is_missing(task, key) or task.get(key) in (None, ""):
            raise DearError(
                f"task.{key} is required: python -m dear_exp task=export postprocess=<preset> "
                f"task.src=<benchmark root> task.dst=<output folder>"
            )
    fmt = str(task.get("format", "keep"))
    if fmt not in FORMATS:
        raise DearError(f"task.format={fmt} is not one of {', '.join(FORMATS)}")
    quality = int(task.get("jpeg_quality", 95))
    if not 1 <= quality <= 100:
        raise DearError(f"task.jpeg_quality={quality} must be in [1, 100]")
    workers = int(task.get("workers", 1))

    from dear_exp.build import ensure_demo

    ensure_demo(cfg, [str(task.src)])
    src, dst = Path(task.src).resolve(), Path(task.dst).resolve()
    if not src.is_dir():
        raise DearError(f"export source not found: {src}; set task.src to a benchmark root (e.g. data/test)")
    if dst == src or dst.is_relative_to(src):
        raise DearError(
            f"task.dst={dst} lies inside task.src={src}; the export would read its own outputs; "
            f"choose a folder outside it"
        )
    settings = _settings(cfg, task.get("setting"))
    chains = {name: Chain(name, specs, int(cfg.seed)) for name, specs in settings.items()}
    files = list_images(src, "put images below task.src or point it at a benchmark root")

    items, skipped = [], 0
    for name, chain in chains.items():
        folder = dst / name
        outs: dict[Path, str] = {}
        todo = []
        for path in files:
            key = path.relative_to(src).as_posix()
            suffix, how = output_plan(chain, fmt, path.suffix)
            out = folder / Path(key).with_suffix(suffix)
            if out in outs:
                raise DearError(f"{outs[out]} and {key} would both be written to {out} (setting {name}); rename one")
            outs[out] = key
            if out.exists():
                skipped += 1
            else:
                todo.append((name, settings[name], int(cfg.seed), str(path), key, str(out), how, quality))
        record = {"setting": name, "ops": settings[name], "seed": int(cfg.seed), "format": fmt}
        if fmt == "jpeg":
            record["jpeg_quality"] = quality
        _check_manifest(folder, record)
        items.extend(todo)

    from tqdm import tqdm

    log.info(
        "Exporting %d image(s) x %d setting(s) from %s to %s (%d already there)",
        len(files),
        len(chains),
        src,
        dst,
        skipped,
    )
    with tqdm(total=len(items), desc="export", unit="img", disable=None) as bar:
        if workers > 1 and len(items) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for _ in pool.map(export_one, items, chunksize=max(1, min(64, len(items) // (4 * workers)))):
                    bar.update()
        else:
            for item in items:
                export_one(item)
                bar.update()
    log.info(
        "export: wrote %d, skipped %d already there; %d image(s) x %d setting(s) (%s) -> %s",
        len(items),
        skipped,
        len(files),
        len(chains),
        ", ".join(chains),
        dst,
    )
    return {"written": float(len(items)), "skipped": float(skipped), "images": float(len(files))}
