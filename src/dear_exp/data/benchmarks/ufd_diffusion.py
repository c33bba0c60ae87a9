"""`ufd_diffusion`: UniversalFakeDetect's `diffusion_datasets/` (and optionally its ForenSynths part)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dear_exp.data.benchmarks.base import Builder, Layout
from dear_exp.data.benchmarks.forensynths import forensynths_pairs
from dear_exp.data.folders import FAKE, REAL

UFD_GENERATORS = ["dalle", "glide_100_10", "glide_100_27", "glide_50_27", "ldm_100", "ldm_200", "ldm_200_cfg", "guided"]


@dataclass(kw_only=True)
class UFDDiffusion(Layout):
    """UniversalFakeDetect's `diffusion_datasets/`: reals in `{laion,imagenet}/0_real`, fakes in
    `<gen>/1_fake`; `reals` pairs a generator with a real set (guided -> imagenet), every other
    generator pairs with `default_real` (laion). `forensynths` (a folder below the root, e.g.
    `datasets/test`) adds UFD's ForenSynths part as a second group."""

    name = "ufd_diffusion"
    folder: str = "diffusion_datasets"
    generators: list[str] = field(default_factory=lambda: list(UFD_GENERATORS))
    reals: dict[str, str] = field(default_factory=lambda: {"guided": "imagenet"})
    default_real: str = "laion"
    real_dir: str = "0_real"
    fake_dir: str = "1_fake"
    forensynths: str | None = None
    forensynths_subsets: list[str] | None = None

    def collect(self, b: Builder) -> None:
        base = b.root / self.folder
        for gen in self.generators:
            real_set = self.reals.get(gen, self.default_real)
            real = b.source(real_set, base / real_set / self.real_dir, REAL)
            b.add(gen, real, b.source(gen, base / gen / self.fake_dir, FAKE))
        if self.forensynths is not None:
            forensynths_pairs(b, b.root / self.forensynths, self.forensynths_subsets, self.real_dir, self.fake_dir)
            b.groups = {
                "diffusion": list(self.generators),
                "forensynths": [s for s in b.subsets if s not in self.generators],
            }
