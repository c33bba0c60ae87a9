"""task=cache: list the feature cache's entries, or prune them by kind and last use."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from dear_exp.cache import Entry, FeatureCache
from dear_exp.errors import DearError

log = logging.getLogger(__name__)
ACTIONS = ("list", "prune")
DAY = 86400.0


def selected(entries: list[Entry], kind: str | None, older_than_days: float | None, now: float) -> list[Entry]:
    out = entries
    if kind is not None:
        out = [e for e in out if e.kind == kind]
    if older_than_days is not None:
        out = [e for e in out if now - e.last_used > older_than_days * DAY]
    return out


def table(entries: list[Entry], now: float) -> str:
    lines = [f"{'kind':<7} {'key':<12} {'MB':>9} {'created':<16} {'last used':>10}  what"]
    for e in entries:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created))
        lines.append(
            f"{e.kind:<7} {e.key[:12]:<12} {e.size / 2**20:>9.2f} {created:<16} "
            f"{(now - e.last_used) / DAY:>8.1f} d  {e.describe}"
        )
    total = sum(e.size for e in entries)
    lines.append(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 2**20:.1f} MB")
    return "\n".join(lines)


def leftovers(root: Path, older_than: float, now: float) -> list[Path]:
    """Lock files, and temporary files of writers killed mid-write (older than a day)."""
    out = list(root.glob("*/*.lock"))
    out += [p for p in root.glob("*/.*.safetensors.*") if now - p.stat().st_mtime > older_than]
    return sorted(out)


def run(cfg: DictConfig) -> dict[str, float]:
    t = cfg.task
    if t.action not in ACTIONS:
        raise DearError(f"task.action={t.action} is not one of {', '.join(ACTIONS)}")
    if t.older_than_days is not None and t.older_than_days < 0:
        raise DearError(f"task.older_than_days={t.older_than_days} must be 0 or more")
    cache = FeatureCache(cfg.cache.dir)
    now = time.time()
    entries = selected(cache.entries(), t.kind, t.older_than_days, now)
    if t.action == "list":
        print(table(entries, now))
        return {"entries": float(len(entries)), "megabytes": sum(e.size for e in entries) / 2**20}
    if t.kind is None and t.older_than_days is None and not t.all:
        raise DearError(
            "task.action=prune needs a filter (task.kind=..., task.older_than_days=...) "
            "or task.all=true to delete every entry"
        )
    freed = 0
    for e in entries:
        freed += e.size
        e.path.unlink(missing_ok=True)
    # lock files are only removed with everything: a running job may hold one
    stale = leftovers(cache.root, DAY, now) if (t.all and t.kind is None) else []
    for p in stale:
        p.unlink(missing_ok=True)
    print(f"pruned {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({freed / 2**20:.1f} MB) from {cache.root}")
    return {"pruned": float(len(entries)), "megabytes": freed / 2**20}
