"""A content-addressed cache of what one backbone pass gives: RAD scores and pooled features.

The frozen backbone and the linear head make `head(pool(m*F)) = (w*m) . pool(F) + b`, so every
prune setting and every refit of a sweep reuses one pass. An entry's key hashes only what changes
its numbers (detector weights, layer, preprocessing, the data files, post-processing, augmentation
seed and view count, precision and device type), never batch size, workers or logging.

Entries are single safetensors files written atomically; a per-entry file lock (filelock) makes
concurrent sweep jobs wait for one another instead of computing the same entry twice. Under DDP
rank 0 alone decides and writes; the other ranks follow its broadcast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import load_file, save

from dear_exp import distributed
from dear_exp.errors import DearError
from dear_exp.files import write_atomic

log = logging.getLogger(__name__)

# bump when the meaning of a cached tensor changes (feature code, pooling, view seeding)
FORMAT = 2
Tensors = dict[str, torch.Tensor]


def digest(obj: Any) -> str:
    """sha256 of a JSON-able object, keys sorted: the same settings give the same key anywhere."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes): the weights, whatever
    file or format they came from."""
    state = sorted(module.state_dict().items())
    return digest([[name for name, _ in state], tensors_fingerprint(t for _, t in state)])


def tensors_fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 of tensors' dtypes, shapes and bytes: rows identified by their content."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the bytes, read in place (not copied)
    return h.hexdigest()


def files_fingerprint(paths: Iterable[Path]) -> str:
    """sha256 of (path, size, mtime) per file, in the given (sorted, listing-independent) order:
    an edited, added, removed or rebuilt file changes the key, without reading every image."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def touch(path: Path) -> None:
    """Record the last use (task=cache prunes by it); an entry owned by another user of a shared
    cache stays readable, its date just does not move."""
    try:
        os.utime(path)
    except OSError:
        pass


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str
    key: str
    size: int
    created: float
    last_used: float
    describe: str


class FeatureCache:
    """`fetch(kind, parts, compute)`: the cached tensors for `parts`, computing them once."""

    def __init__(self, root: str | Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.kept: dict[Path, Tensors] | None = None

    def keep(self) -> None:
        """From now on, every entry fetched is also kept in memory for this object's life and served
        from there (also with the cache disabled): task=dear_grid reads the same rows for every pair."""
        self.kept = {} if self.kept is None else self.kept

    def path(self, kind: str, parts: dict[str, Any]) -> Path:
        return self.root / kind / f"{digest({'format': FORMAT, 'kind': kind, **parts})[:40]}.safetensors"

    def fetch(
        self,
        kind: str,
        parts: dict[str, Any],
        compute: Callable[[], Tensors],
        describe: str = "",
        collective: bool = True,
    ) -> Tensors:
        """`compute` runs on every rank when `collective` (it gathers itself), else on rank 0 only
        and the result is broadcast. Every rank returns the same tensors."""
        return self.fetch_many(kind, [(parts, describe)], lambda missing: [compute()], collective)[0]

    def fetch_many(
        self,
        kind: str,
        requests: list[tuple[dict[str, Any], str]],
        compute: Callable[[list[int]], list[Tensors]],
        collective: bool = True,
    ) -> list[Tensors]:
        """Several entries at once: `compute(missing)` gets the positions of the misses and computes
        them together (one backbone pass over all of them). Locks are taken in path order, so two
        jobs that need overlapping entries cannot deadlock."""
        if self.kept is None:
            return self._fetch_many(kind, requests, compute, collective)
        paths = [self.path(kind, parts) for parts, _ in requests]
        if not all(p in self.kept for p in paths):
            self.kept.update(zip(paths, self._fetch_many(kind, requests, compute, collective)))
        return [self.kept[p] for p in paths]

    def _fetch_many(
        self,
        kind: str,
        requests: list[tuple[dict[str, Any], str]],
        compute: Callable[[list[int]], list[Tensors]],
        collective: bool,
    ) -> list[Tensors]:
        if not self.enabled:
            return self._compute(compute, list(range(len(requests))), collective)
        paths = [self.path(kind, parts) for parts, _ in requests]
        locks = [FileLock(str(p.with_suffix(".lock"))) for p in sorted(set(paths))] if distributed.rank() == 0 else []
        for lock in locks:
            Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("Waiting for another job computing the cache entry %s", lock.lock_file)
                lock.acquire()
        try:
            hits = distributed.broadcast([p.is_file() for p in paths])
            missing = [i for i, hit in enumerate(hits) if not hit]
            out: list[Tensors | None] = [None] * len(requests)
            for i, hit in enumerate(hits):
                if hit:
                    self.hits += 1
                    if distributed.rank() == 0:
                        log.info("Cache hit  %s %s", kind, requests[i][1])
                    out[i] = self._load(paths[i])
                    if distributed.rank() == 0:
                        touch(paths[i])
            if missing:
                self.misses += len(missing)
                if distributed.rank() == 0:
                    log.info("Cache miss %s: computing %s", kind, ", ".join(requests[i][1] for i in missing))
                for i, tensors in zip(missing, self._compute(compute, missing, collective)):
                    out[i] = tensors
                    if distributed.rank() == 0:
                        parts, describe = requests[i]
                        meta = {
                            "kind": kind,
                            "describe": describe,
                            "created": str(time.time()),
                            "parts": json.dumps(parts, sort_keys=True, default=str),
                        }
                        write_atomic(paths[i], save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
            return out  # type: ignore[return-value]
        finally:
            for lock in reversed(locks):
                lock.release()

    @staticmethod
    def _compute(compute: Callable[[list[int]], list[Tensors]], missing: list[int], collective: bool) -> list[Tensors]:
        if collective:
            return compute(missing)
        return distributed.from_rank_zero(lambda: compute(missing))

    @staticmethod
    def _load(path: Path) -> Tensors:
        try:
            return load_file(str(path))
        except Exception as exc:
            raise DearError(
                f"cache entry {path} is unreadable ({exc}); delete it, or run "
                "task=cache task.action=prune, and run again"
            ) from None

    def entries(self) -> list[Entry]:
        """Every entry under the root, sorted by kind then key (never by listing order)."""
        out = []
        for path in sorted(self.root.glob("*/*.safetensors")):
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
            except Exception:
                meta = {"describe": "unreadable"}
            st = path.stat()
            out.append(
                Entry(
                    path,
                    path.parent.name,
                    path.stem,
                    st.st_size,
                    float(meta.get("created", st.st_mtime)),
                    st.st_mtime,
                    meta.get("describe", ""),
                )
            )
        return out
