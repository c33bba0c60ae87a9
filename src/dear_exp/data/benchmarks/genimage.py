"""`genimage`: GenImage, `<folder>/<split>/{ai,nature}`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dear_exp.data.benchmarks.base import Builder, Layout, child_dirs
from dear_exp.data.folders import FAKE, REAL, require_dir
from dear_exp.errors import DearError


@dataclass(kw_only=True)
class GenImage(Layout):
    """GenImage: `<folder>/<split>/{ai,nature}`, nature = real and ai = fake, assigned here (sorted
    folder order would give ai=0 and flip every label). `generators` maps a subset name to its folder
    below the root; when `<folder>/<split>` is absent, the one sub-folder holding `<split>/` is used,
    so both `VQDM/val/...` and the archives' `VQDM/imagenet_ai_0419_vqdm/val/...` load.
    `generators: null` takes every folder of the root."""

    name = "genimage"
    generators: dict[str, str] | None = None
    split: str = "val"
    real_dir: str = "nature"
    fake_dir: str = "ai"

    def split_dir(self, folder: Path, hint: str) -> Path:
        require_dir(folder, hint)
        if (folder / self.split).is_dir():
            return folder / self.split
        found = [c / self.split for c in child_dirs(folder) if (c / self.split).is_dir()]
        if len(found) != 1:
            where = f"{len(found)} sub-folders ({', '.join(p.parent.name for p in found)})" if found else "none"
            raise DearError(
                f"GenImage: expected {folder}/{self.split}/ or exactly one "
                f"{folder}/<archive>/{self.split}/, found {where}; set benchmark.layout.generators "
                f"to the folder; {hint}"
            )
        return found[0]

    def collect(self, b: Builder) -> None:
        gens = self.generators if self.generators is not None else {p.name: p.name for p in child_dirs(b.root)}
        for gen, folder in gens.items():
            split = self.split_dir(b.root / folder, b.hint)
            real = b.source(f"{gen}/real", split / self.real_dir, REAL)
            b.add(gen, real, b.source(gen, split / self.fake_dir, FAKE))
