"""The `head` config group's settings: which solver, on which data, with which values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from dear_exp.errors import DearError
from dear_exp.schema import Checked


@dataclass(frozen=True)
class RefitSettings(Checked):
    """The `head` config group (conf/head/*.yaml holds the values), checked when built, from Hydra or Python.

    l2: strengths tried by newton, strongest first (the validation split picks one); tol and max_iter:
    newton's convergence test and budget; lr, betas, weight_decay, max_epochs: adam's."""

    prefix: ClassVar[str] = "head"
    solver: Literal["newton", "adam"]
    mode: Literal["cached", "online"]
    init: Literal["zeros", "detector"]
    views: int = field(metadata={"min": 1, "example": 4})
    inpaint_weight: float = field(metadata={"min": 0.0, "example": 1.0})
    l2: list[float] = field(metadata={"gt": 0.0, "example": [0.01]})
    tol: float = field(metadata={"gt": 0.0, "example": 1e-9})
    max_iter: int = field(metadata={"min": 1, "example": 100})
    lr: float = field(metadata={"gt": 0.0, "example": 1e-4})
    betas: list[float] = field(metadata={"min": 0.0, "lt": 1.0, "len": 2, "example": [0.9, 0.999]})
    weight_decay: float = field(metadata={"min": 0.0, "example": 0.0})
    max_epochs: int = field(metadata={"min": 1, "example": 30})

    def check(self) -> None:
        """What no single value shows."""
        if self.mode == "online" and self.solver != "adam":
            raise DearError(
                "head.mode=online trains through the backbone at every step, which needs head.solver=adam "
                "(head=reference); head.solver=newton solves on the cached rows (head.mode=cached)"
            )
        if not self.l2:
            raise DearError("head.l2=[] must list at least one L2 strength > 0 (e.g. head.l2=[0.01])")
