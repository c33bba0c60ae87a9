"""`synthbuster`: one folder of fakes per generator, all against the RAISE-1k reals."""

from __future__ import annotations

from dataclasses import dataclass

from dear_exp.data.benchmarks.base import Builder, Layout, child_dirs
from dear_exp.data.folders import FAKE, REAL


@dataclass(kw_only=True)
class Synthbuster(Layout):
    """Synthbuster: one folder of fakes per generator, every one scored against the RAISE-1k reals
    (`real`, a folder below the root or beside it, `../real_RAISE_1k`). `generators: null` takes every
    folder of the root except the real one."""

    name = "synthbuster"
    generators: list[str] | None = None
    real: str = "real_RAISE_1k"
    real_name: str = "raise"

    def collect(self, b: Builder) -> None:
        real_folder = (b.root / self.real).resolve()
        gens = (
            self.generators
            if self.generators is not None
            else [p.name for p in child_dirs(b.root) if p.resolve() != real_folder]
        )
        for gen in gens:
            real = b.source(self.real_name, b.root / self.real, REAL)
            b.add(gen, real, b.source(gen, b.root / gen, FAKE))
