"""Writing files so that no reader ever sees half of one, and hashing them."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary sibling of `path` to write to; renamed over `path` when the block ends, removed
    when it raises: no reader sees a half-written file. Its name (`.{name}.XXXXXXXX{suffix}`) is
    hidden, so the image listings skip it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a shared cache or log must stay readable
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """`atomic_path` for a folder: a hidden temporary sibling to fill, renamed to `path` when the block
    ends (`path` must not exist then), removed with its contents when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def staged(work: Path, final: Path, owner: bool = True) -> Iterator[Path]:
    """A run's artefacts are written below `work` (a hidden folder inside `final`); when the block ends
    each is moved to the same place below `final`, and `work` removed; when it raises, `work` is
    removed with everything in it. `owner`: this process (rank 0) moves and removes; the others write
    nothing there. A killed run leaves only the hidden folder."""
    if owner and work.exists():
        shutil.rmtree(work)  # a killed earlier attempt in the same run folder
    try:
        yield work
    except BaseException:
        if owner:
            shutil.rmtree(work, ignore_errors=True)
        raise
    if owner and work.is_dir():
        _merge(work, final)
        shutil.rmtree(work)


def _merge(src: Path, dst: Path) -> None:
    """Move every file below src to the same relative place below dst (replacing what is there)."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        target = dst / item.name
        if item.is_dir() and not item.is_symlink():
            if target.exists() and not target.is_dir():
                target.unlink()
            _merge(item, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)


def require_writable(path: Path | str, key: str, folder: bool = True) -> None:
    """Refuse, before any work, a destination the run could not write at its end: below a regular file,
    in a folder without write permission, or (`folder`) itself a file. Nothing is created here."""
    from dear_exp.errors import DearError

    path = Path(path).expanduser().absolute()
    if path.exists():
        if folder and not path.is_dir():
            raise DearError(f"{key}={path} is a file, not a folder; choose a folder path")
        if not folder and path.is_dir():
            raise DearError(f"{key}={path} is a folder; give the path of a file to write")
    parent = path if path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DearError(f"{key}={path} lies below {parent}, which is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DearError(f"{key}={path}: {parent} is not writable; choose a location you can write to")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary sibling, then rename: no reader sees a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in blocks, never whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
