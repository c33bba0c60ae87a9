"""`forensynths`: ForenSynths (CNNDetection) and AIGCDetectBenchmark, `<gen>/[<category>/]{0_real,1_fake}`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dear_exp.data.benchmarks.base import Builder, Layout, child_dirs
from dear_exp.data.folders import FAKE, REAL, require_dir
from dear_exp.errors import DearError


def forensynths_pairs(b: Builder, base: Path, subsets: list[str] | None, real_dir: str, fake_dir: str) -> None:
    """`<base>/<gen>/{0_real,1_fake}` or `<base>/<gen>/<category>/{0_real,1_fake}`, detected per
    generator (flat when `0_real` or `1_fake` is right there); categories are pooled per generator."""
    require_dir(base, b.hint)
    names = subsets if subsets is not None else [p.name for p in child_dirs(base)]
    for gen in names:
        folder = require_dir(base / gen, b.hint)
        if (folder / real_dir).is_dir() or (folder / fake_dir).is_dir():
            parts = [folder]
        else:
            parts = [c for c in child_dirs(folder) if (c / real_dir).is_dir() or (c / fake_dir).is_dir()]
            if not parts:
                raise DearError(
                    f"{folder} has neither {real_dir}/ and {fake_dir}/ nor <category>/{real_dir}, "
                    f"<category>/{fake_dir}; {b.hint}"
                )
        real = b.source(f"{gen}/real", [p / real_dir for p in parts], REAL)
        b.add(gen, real, b.source(gen, [p / fake_dir for p in parts], FAKE))


@dataclass(kw_only=True)
class ForenSynths(Layout):
    """ForenSynths (CNNDetection) and AIGCDetectBenchmark test sets: `<root>/<gen>/[<category>/]
    {0_real,1_fake}`, each generator against its own reals. `subsets: null` takes every generator
    folder found (name order)."""

    name = "forensynths"
    subsets: list[str] | None = None
    real_dir: str = "0_real"
    fake_dir: str = "1_fake"

    def collect(self, b: Builder) -> None:
        forensynths_pairs(b, b.root, self.subsets, self.real_dir, self.fake_dir)
