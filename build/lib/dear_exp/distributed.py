"""The few collectives dear-exp needs outside Lightning's loops (no-ops in a single process).

Lightning's `ddp` launcher starts the other ranks at the first `trainer.fit`/`predict`; until then
each process runs alone. `rendezvous` makes that first call up front, so that every later decision
(a cache hit or miss) is taken once, by rank 0, and broadcast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

T = TypeVar("T")


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank_world(owner: Any) -> tuple[int, int]:
    """This process's rank and the number of ranks as its trainer sees them: `owner` is a Trainer, or a
    LightningModule / LightningDataModule attached to one (1 process if none). Unlike `rank()` and
    `world()`, right even before Lightning has started the other ranks."""
    if isinstance(owner, L.Trainer):
        trainer = owner
    elif isinstance(owner, L.LightningModule):
        trainer = owner._trainer  # the `trainer` property raises when none is attached
    else:
        trainer = getattr(owner, "trainer", None)
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_rank_zero(compute: Callable[[], T]) -> T:
    """`compute()` run by rank 0 alone, its result broadcast to every rank."""
    return broadcast(compute() if rank() == 0 else None)  # type: ignore[arg-type]


def all_gather(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


class _Rendezvous(L.LightningModule):
    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        return None


def rendezvous(trainer: L.Trainer) -> None:
    """Start every rank now (one trivial predict call), when the trainer spans several processes."""
    if rank_world(trainer)[1] > 1 and not active():
        trainer.predict(_Rendezvous(), dataloaders=DataLoader(torch.zeros(1, 1)), return_predictions=False)
