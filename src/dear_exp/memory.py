"""CPU memory of large activations: reused between layers and batches instead of mapped afresh.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with fresh pages from the
kernel and unmaps them when the block is freed. A stride-1 ResNet's feature maps at 256 px are 100 MB
to 1 GB each, so every layer of every batch maps new memory that the kernel faults in and zero-fills
4 KiB at a time: on the 2-core machine of issue 15 a third to a half of task=evaluate's CPU time was
the kernel's. The `memory` group (conf/main.yaml) sets what this module does at start-up:

- `malloc: reuse`: glibc keeps freed blocks below `keep_below_mb` in its heap (`mallopt`: its mmap
  threshold raised to it, or no mmap at all with null; no trim on free), so the next layer and the
  next batch reuse them without the kernel; larger blocks (a batch of 16 at 256 px) still go back
  when freed, since keeping them too let fragmentation grow the heap to 1.7x. After a batch,
  `return_free` (the `ReturnFreeMemory` callback of every trainer) gives the heap's free memory back
  (`malloc_trim`) when the process has grown by more than `return_over_mb` since the last return: the
  peak stays near what one batch uses, where keeping everything doubled it (variable image sizes
  fragment the heap). `system`: glibc's own behaviour.
- `huge_pages: true`: torch's own switch `THP_MEM_ALLOC_ENABLE=1` puts tensors of 2 MiB and more on
  transparent huge pages (where the kernel allows them: `madvise` or `always`), so memory taken again
  after a return costs one fault per 2 MiB instead of one per 4 KiB. torch reads the switch when it is
  imported: the command line sets it first (`set_huge_pages`); a process that imported torch before
  keeps what it had, and the log line says so.

Alternatives measured side by side (experiments/throughput): glibc's environment variables (the same
settings, but unbounded: 2x the peak), jemalloc (its default decay returns memory at once: more system
time than glibc), tcmalloc (as good as `reuse`, but it must be preloaded into the process): a
jemalloc or tcmalloc the user preloads is detected and left alone. Where glibc is not the allocator
(macOS, musl) nothing is changed. No setting here changes a number, only where freed memory waits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from dear_exp.schema import Checked

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
INT_MAX = 2**31 - 1
GLIBC_MMAP_MAX, GLIBC_MMAP_THRESHOLD, GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024, 128 * 1024  # glibc's defaults
THP_SWITCH = "THP_MEM_ALLOC_ENABLE"  # torch (c10/core/alloc_cpu.cpp): huge pages for tensors >= 2 MiB
PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class MemorySettings(Checked):
    """The `memory` group: how freed CPU memory is kept (module docstring)."""

    prefix: ClassVar[str] = "memory"
    malloc: Literal["reuse", "system"]
    return_over_mb: int = field(metadata={"min": 0, "example": 1024})
    keep_below_mb: int | None = field(metadata={"min": 1, "max": 2047, "example": 256})
    huge_pages: bool


@dataclass
class _State:
    libc: Any = None
    return_over: int | None = None  # bytes; None: nothing to return (reuse is off)
    anchor: int = 0  # resident bytes right after the last return
    returns: int = 0


_state = _State()


def set_huge_pages(enabled: bool) -> None:
    """torch's huge-page switch, before torch is imported (it is read once, then); a value already in
    the environment is the user's and is kept."""
    if enabled and "torch" not in sys.modules:
        os.environ.setdefault(THP_SWITCH, "1")


def _glibc() -> Any:
    """The C library when it is glibc with mallopt and malloc_trim, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")) else None


def _preloaded() -> str | None:
    """A replacement allocator mapped into this process (LD_PRELOAD or linked), by name."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = os.environ.get("LD_PRELOAD", "")
    return next((name for name in PRELOADED if f"lib{name}" in maps), None)


def _huge_pages_line(wanted: bool) -> str:
    value = os.environ.get(THP_SWITCH)
    if not wanted:
        if value == "1" and "torch" in sys.modules:  # an earlier job of this process turned them on
            return f"huge pages stay on (torch read {THP_SWITCH}=1 when it was imported)"
        return "huge pages off (memory.huge_pages=false)"
    if value != "1":
        why = f"{THP_SWITCH}={value} in the environment" if value is not None else "torch was imported before"
        return f"huge pages not applied ({why})"
    try:
        kernel = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        mode = kernel[kernel.index("[") + 1 : kernel.index("]")]
    except (OSError, ValueError):
        return "huge pages asked of torch (the kernel's setting is unknown)"
    if mode == "never":
        return "huge pages asked of torch, but the kernel has them off (transparent_hugepage: never)"
    return f"torch's tensors >= 2 MiB on transparent huge pages (kernel: {mode})"


def configure(settings: MemorySettings) -> str:
    """Apply the settings to this process's allocator; returns the one line that says what was done."""
    pages = _huge_pages_line(settings.huge_pages)
    previous, _state.libc, _state.return_over, _state.returns = _state.libc, None, None, 0
    if settings.malloc == "system":
        if previous is not None:  # an earlier job of this process changed glibc's settings: its defaults back
            previous.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
            previous.mallopt(M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD)
            previous.mallopt(M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)
        return f"CPU memory: glibc's own allocation (memory.malloc=system); {pages}"
    other = _preloaded()
    if other is not None:
        return f"CPU memory: {other} is this process's allocator, left as it is; {pages}"
    libc = _glibc()
    if libc is None:
        return f"CPU memory: the C library is not glibc, its allocator is left as it is; {pages}"
    if settings.keep_below_mb is None:  # no block is mapped: every freed block stays
        keep = libc.mallopt(M_MMAP_MAX, 0)
    else:  # blocks from keep_below_mb up are mapped, and unmapped when freed
        keep = libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX) and libc.mallopt(M_MMAP_THRESHOLD, settings.keep_below_mb << 20)
    if not (keep and libc.mallopt(M_TRIM_THRESHOLD, INT_MAX)):
        return f"CPU memory: glibc refused mallopt, its allocator is left as it is; {pages}"
    _state.libc, _state.return_over, _state.anchor = libc, settings.return_over_mb << 20, resident() or 0
    kept = "freed blocks" if settings.keep_below_mb is None else f"freed blocks under {settings.keep_below_mb} MiB"
    return (
        f"CPU memory: {kept} kept for reuse (glibc mallopt), returned to the system after a batch that "
        f"leaves the process over {settings.return_over_mb} MiB larger than after the last return; {pages}"
    )


def resident() -> int | None:
    """This process's resident memory in bytes (/proc/self/statm); None where it cannot be read."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def return_free() -> bool:
    """After a batch: the heap's free memory back to the system (malloc_trim) when the process has
    grown by more than the budget since the last return. glibc counts a returned block as free still,
    so growth of the resident memory, not glibc's free total, is what shows memory held. True when
    memory was returned."""
    if _state.return_over is None:
        return False
    now = resident()
    if now is not None and now - _state.anchor <= _state.return_over:
        return False
    _state.libc.malloc_trim(0)
    _state.anchor = resident() or 0
    _state.returns += 1
    return True


def returns() -> int:
    """How many times memory was returned since `configure`."""
    return _state.returns
