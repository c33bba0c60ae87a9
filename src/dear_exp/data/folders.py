"""Finding images on disk: sorted, labelled explicitly, with clear errors for missing folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dear_exp.errors import DearError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
REAL, FAKE = 0, 1


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 = real, 1 = fake
    key: str  # path relative to the data root: stable across machines, seeds per-item randomness


def require_dir(path: Path, hint: str) -> Path:
    if not path.is_dir():
        raise DearError(f"data folder not found: {path}; {hint}")
    return path


def visible(path: Path, folder: Path) -> bool:
    """Not a hidden file or folder (macOS zips leave `._x.jpg` files that are not images) nor in
    `__MACOSX`: the same rule as the benchmark layouts."""
    return not any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(folder).parts)


def image_files(folder: Path) -> list[Path]:
    """The one image listing: every visible image file below folder (`visible`; symlinked folders are
    not entered, symlinked files count), sorted by relative path so that results never depend on the
    file system's listing order. os.scandir, not Path.rglob: a listing of 100,000 files is read at
    the start of every sweep job, and the directory entries already say which are folders."""
    found: list[tuple[str, str]] = []

    def walk(path: str, rel: str) -> None:
        with os.scandir(path) as entries:
            for e in entries:
                if e.name.startswith(".") or e.name == "__MACOSX":
                    continue
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{rel}{e.name}/")
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file():
                    found.append((rel + e.name, e.path))

    walk(str(folder), "")
    return [Path(p) for _, p in sorted(found)]


def list_images(folder: Path, hint: str, exclude_suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Every image below an existing folder (`image_files`), refusing an empty one."""
    require_dir(folder, hint)
    files = image_files(folder)
    files = [p for p in files if not p.stem.endswith(exclude_suffixes)] if exclude_suffixes else files
    if not files:
        raise DearError(f"no images in {folder}; {hint}")
    return files


def labelled_samples(root: Path, real: list[str], fake: list[str], hint: str) -> list[Sample]:
    """Samples from folders whose label is given by the config (never by alphabetical order)."""
    samples = []
    for label, folders in ((REAL, real), (FAKE, fake)):
        for sub in folders:
            for p in list_images(root / sub, hint):
                samples.append(Sample(p, label, p.relative_to(root).as_posix()))
    return samples


@dataclass(frozen=True)
class InpaintPair:
    image: Path
    mask: Path
    key: str
    alpha: Path | None = None  # {stem}_alpha.png beside the mask: the compositing weight (make_inpaint save_alpha)


def pair_files(pairs: list[InpaintPair]) -> list[Path]:
    """Every file the pairs read (image, mask, alpha when present), in pair order."""
    return [f for p in pairs for f in (p.image, p.mask, p.alpha) if f is not None]


def inpaint_pairs(root: Path, image_dir: str, mask_dir: str, hint: str) -> list[InpaintPair]:
    """`{stem}_inpaint.*` images with their `{stem}_mask.*`; a missing mask is an error."""
    images = [p for p in list_images(root / image_dir, hint) if p.stem.endswith("_inpaint")]
    if not images:
        raise DearError(f"no *_inpaint images in {root / image_dir}; {hint}")
    beside = list_images(root / mask_dir, hint)
    for kind, files in (("image", images), ("mask", [p for p in beside if p.stem.endswith(("_mask", "_alpha"))])):
        seen: dict[str, Path] = {}
        for p in files:  # pairs match by stem, so a stem in two sub-folders would pair ambiguously
            if p.stem in seen:
                raise DearError(
                    f"two inpaint {kind} files share the stem {p.stem!r}: {seen[p.stem]} and {p}; "
                    "rename one so every stem is unique"
                )
            seen[p.stem] = p
    masks = {p.stem: p for p in beside if p.stem.endswith("_mask")}
    alphas = {p.stem: p for p in beside if p.stem.endswith("_alpha")}
    pairs, missing = [], []
    for img in images:
        stem = img.stem[: -len("_inpaint")]
        mask = masks.get(f"{stem}_mask")
        if mask is None:
            missing.append(img)
        else:
            pairs.append(InpaintPair(img, mask, img.relative_to(root).as_posix(), alphas.get(f"{stem}_alpha")))
    if missing:
        raise DearError(
            f"{len(missing)} inpaint image(s) without a mask, e.g. {missing[0]}: every "
            f"{{stem}}_inpaint.png needs {{stem}}_mask.png in {root / mask_dir}"
        )
    return pairs
