"""Finding images on disk: sorted, labelled explicitly, with clear errors for missing folders."""

from __future__ import annotations

import os
import time
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


def image_entries(folder: Path) -> tuple[tuple[str, Path], ...]:
    """The one image listing, as (path relative to folder in POSIX form, path) pairs: every visible
    image file below folder (`visible`; symlinked folders are not entered, symlinked files count),
    sorted by relative path so that results never depend on the file system's listing order.
    os.scandir, not Path.rglob: the directory entries already say which are folders. Listed once per
    process while no folder of it changes (`_LISTINGS`): every job of a sweep reads the same folders,
    100,000 files of a real benchmark each time."""
    key = os.path.abspath(folder)
    known = _LISTINGS.get(key)
    if known is not None and all(_mtime(d) == t for d, t in known[1].items()):
        return known[0]
    start = time.time_ns()
    found: list[tuple[str, str]] = []
    dirs: dict[str, int | None] = {}

    def walk(path: str, rel: str) -> None:
        dirs[path] = _mtime(path)  # before its entries are read: a change while listing shows next time
        with os.scandir(path) as entries:
            for e in entries:
                if e.name.startswith(".") or e.name == "__MACOSX":
                    continue
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{rel}{e.name}/")
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file():
                    found.append((rel + e.name, e.path))

    walk(str(folder), "")
    files = tuple((rel, Path(p)) for rel, p in sorted(found))
    # a folder changed within RACY_NS of the listing may change again within the same mtime tick (ext4
    # stamps by the kernel's tick): its listing is not kept (git's "racily clean" rule)
    if all(t is not None and start - t > RACY_NS for t in dirs.values()):
        _LISTINGS[key] = (files, dirs)
    else:
        _LISTINGS.pop(key, None)
    return files


RACY_NS = 2_000_000_000
# folder -> its listing and the modification time of every folder it walked (adding, removing or
# renaming an entry changes its folder's time; a file's contents are the feature cache's business)
_LISTINGS: dict[str, tuple[tuple[tuple[str, Path], ...], dict[str, int | None]]] = {}


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def list_entries(folder: Path, hint: str) -> tuple[tuple[str, Path], ...]:
    """`image_entries` of an existing folder, refusing an empty one."""
    require_dir(folder, hint)
    entries = image_entries(folder)
    if not entries:
        raise DearError(f"no images in {folder}; {hint}")
    return entries


def list_images(folder: Path, hint: str, exclude_suffixes: tuple[str, ...] = ()) -> list[Path]:
    """Every image below an existing folder (`image_entries`), refusing an empty one."""
    files = [p for _, p in list_entries(folder, hint)]
    files = [p for p in files if not p.stem.endswith(exclude_suffixes)] if exclude_suffixes else files
    if not files:
        raise DearError(f"no images in {folder}; {hint}")
    return files


def labelled_samples(root: Path, real: list[str], fake: list[str], hint: str) -> list[Sample]:
    """Samples from folders whose label is given by the config (never by alphabetical order)."""
    samples = []
    for label, folders in ((REAL, real), (FAKE, fake)):
        for sub in folders:
            folder = root / sub
            prefix = folder.relative_to(root).as_posix()  # each key is prefix/rel: the file's path under root
            samples += [Sample(p, label, joined(prefix, rel)) for rel, p in list_entries(folder, hint)]
    return samples


def joined(prefix: str, rel: str) -> str:
    return rel if prefix == "." else f"{prefix}/{rel}"


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
    prefix = (root / image_dir).relative_to(root).as_posix()
    keyed = [(joined(prefix, rel), p) for rel, p in list_entries(root / image_dir, hint) if p.stem.endswith("_inpaint")]
    images = [p for _, p in keyed]
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
    for key, img in keyed:
        stem = img.stem[: -len("_inpaint")]
        mask = masks.get(f"{stem}_mask")
        if mask is None:
            missing.append(img)
        else:
            pairs.append(InpaintPair(img, mask, key, alphas.get(f"{stem}_alpha")))
    if missing:
        raise DearError(
            f"{len(missing)} inpaint image(s) without a mask, e.g. {missing[0]}: every "
            f"{{stem}}_inpaint.png needs {{stem}}_mask.png in {root / mask_dir}"
        )
    return pairs
