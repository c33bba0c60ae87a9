"""`folder_pairs`: explicit real and fake folders (DEAR / LDMFakeDetect, the demo)."""

from __future__ import annotations

from dataclasses import dataclass

from dear_exp.data.benchmarks.base import Builder, Layout
from dear_exp.data.folders import FAKE, REAL
from dear_exp.errors import DearError


@dataclass(kw_only=True)
class FolderPairs(Layout):
    """Explicit folders: `reals: {name: relpath}` and `subsets: {name: {fake: relpath, real: name}}`
    (the DEAR / LDMFakeDetect layout and the demo). Only real sets some subset pairs with are read."""

    name = "folder_pairs"
    reals: dict[str, str]
    subsets: dict[str, dict[str, str]]

    def collect(self, b: Builder) -> None:
        for subset, spec in self.subsets.items():
            if set(spec) != {"fake", "real"}:
                raise DearError(
                    f"benchmark {b.name}: subset {subset!r} needs exactly the keys fake and real, got {sorted(spec)}"
                )
            if spec["real"] not in self.reals:
                raise DearError(
                    f"benchmark {b.name}: subset {subset!r} pairs with real set {spec['real']!r}, "
                    f"which is not one of layout.reals ({', '.join(self.reals)})"
                )
            real = b.source(spec["real"], b.root / self.reals[spec["real"]], REAL)
            b.add(subset, real, b.source(subset, b.root / spec["fake"], FAKE))
