"""What to generate and where it goes: the job list, stem collisions, atomic writes, resume."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dear_exp.data.folders import list_images
from dear_exp.errors import DearError
from dear_exp.files import atomic_path, write_atomic

_TEMPORARY = re.compile(r"\..+_(inpaint|mask|alpha)\.png\.[a-z0-9_]+\.tmp")  # what save_png_atomic leaves


@dataclass(frozen=True)
class Job:
    path: Path
    stem: str


@dataclass(frozen=True)
class Layout:
    """The reference layout: `{out_dir}/{image_dir}/{stem}_inpaint.png`, `{out_dir}/{mask_dir}/{stem}_mask.png`
    (and `{stem}_alpha.png` beside the mask when the blurred alpha is saved)."""

    out_dir: Path
    image_dir: str
    mask_dir: str
    save_alpha: bool = False

    @property
    def image_root(self) -> Path:
        return self.out_dir / self.image_dir

    @property
    def mask_root(self) -> Path:
        return self.out_dir / self.mask_dir

    def inpaint_path(self, stem: str) -> Path:
        return self.image_root / f"{stem}_inpaint.png"

    def mask_path(self, stem: str) -> Path:
        return self.mask_root / f"{stem}_mask.png"

    def alpha_path(self, stem: str) -> Path:
        return self.mask_root / f"{stem}_alpha.png"

    def outputs(self, stem: str) -> list[Path]:
        """In write order: the inpaint image last, so a pair is never visible without its mask."""
        paths = [self.mask_path(stem)] + ([self.alpha_path(stem)] if self.save_alpha else [])
        return paths + [self.inpaint_path(stem)]

    def is_done(self, stem: str) -> bool:
        return all(p.is_file() for p in self.outputs(stem))

    def make_dirs(self) -> None:
        self.image_root.mkdir(parents=True, exist_ok=True)
        self.mask_root.mkdir(parents=True, exist_ok=True)

    def remove_stale_temporaries(self, older_than_s: float = 60.0) -> int:
        """Temporary files a killed run left behind (never read: hidden, not an image suffix). Only
        old ones: a PNG is written in milliseconds, so a younger one may belong to a live run."""
        removed = 0
        now = time.time()
        for root in {self.image_root, self.mask_root}:
            if root.is_dir():
                for tmp in root.glob(".*.png.*.tmp"):
                    try:
                        stale = _TEMPORARY.fullmatch(tmp.name) and now - tmp.stat().st_mtime > older_than_s
                    except FileNotFoundError:
                        continue
                    if stale:
                        tmp.unlink(missing_ok=True)
                        removed += 1
        return removed


MANIFEST = "make_inpaint.json"


def check_manifest(layout: Layout, identity: dict[str, Any]) -> None:
    """A folder holds one set: resuming with other settings (model, resolution, seed, ...) would mix
    two sets silently (or report old images as done), so it is refused."""
    path = layout.image_root / MANIFEST
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = {}
        changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in identity.items() if before.get(k) != v]
        if changed:
            raise DearError(
                f"{layout.image_root} holds a set made with other settings ({'; '.join(changed[:4])}); "
                f"set another inpaint.out_dir, or delete the folder to start again"
            )


def write_manifest(layout: Layout, identity: dict[str, Any]) -> None:
    """The settings that made the set, beside its images (not an image: readers ignore it)."""
    path = layout.image_root / MANIFEST
    if path.is_file():
        return
    write_atomic(path, json.dumps(identity, indent=2, sort_keys=True) + "\n")


def list_jobs(real_dir: Path, max_images: int | None = None) -> list[Job]:
    """Every image below real_dir, sorted by relative path; stems must be unique."""
    hint = "set inpaint.real_dir to a folder of real images"
    files = list_images(real_dir, hint)
    check_collisions(files, real_dir)
    jobs = [Job(p, p.stem) for p in files]
    return jobs[:max_images] if max_images is not None else jobs


def check_collisions(files: list[Path], root: Path) -> None:
    """`a/x.png` and `b/x.jpg` would both write `x_inpaint.png`: refuse up front, naming a few."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        by_stem[p.stem].append(p)
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        examples = "; ".join(
            f"{stem}: " + ", ".join(p.relative_to(root).as_posix() for p in paths[:3])
            for stem, paths in sorted(clashes.items())[:3]
        )
        raise DearError(
            f"{len(clashes)} image stem(s) in {root} are used by more than one file and would write the same "
            f"{{stem}}_inpaint.png ({examples}); rename them or point inpaint.real_dir at one folder"
        )


def check_not_inside(layout: Layout, real_dir: Path) -> None:
    """Outputs inside real_dir would be read back as real images on the next run."""
    real = real_dir.resolve()
    for root in (layout.image_root, layout.mask_root):
        if root.resolve().is_relative_to(real):
            raise DearError(
                f"output folder {root} lies inside inpaint.real_dir={real_dir}, so a rerun would read "
                "the outputs as real images; set inpaint.out_dir outside it"
            )


def save_png_atomic(image: Image.Image, path: Path) -> None:
    """Write to a hidden temporary in the same folder and rename: a file is complete or absent."""
    with atomic_path(path, suffix=".tmp") as tmp:
        image.save(tmp, format="PNG")


def write_outputs(
    layout: Layout, stem: str, inpaint: Image.Image, mask: Image.Image, alpha: Image.Image | None
) -> None:
    """Mask (and alpha) first, the inpaint image last, each atomically."""
    save_png_atomic(mask, layout.mask_path(stem))
    if layout.save_alpha:
        assert alpha is not None
        save_png_atomic(alpha, layout.alpha_path(stem))
    save_png_atomic(inpaint, layout.inpaint_path(stem))
