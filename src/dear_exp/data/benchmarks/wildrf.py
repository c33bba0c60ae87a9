"""`wildrf`: WildRF, `<split>/<platform>/{0_real,1_fake}`."""

from __future__ import annotations

from dataclasses import dataclass, field

from dear_exp.data.benchmarks.base import Builder, Layout
from dear_exp.data.folders import FAKE, REAL

WILDRF_PLATFORMS = ["reddit", "twitter", "facebook"]


@dataclass(kw_only=True)
class WildRF(Layout):
    """WildRF: `<split>/<platform>/{0_real,1_fake}`, each platform (reddit, twitter, facebook) its
    own pair."""

    name = "wildrf"
    split: str = "test"
    platforms: list[str] = field(default_factory=lambda: list(WILDRF_PLATFORMS))
    real_dir: str = "0_real"
    fake_dir: str = "1_fake"

    def collect(self, b: Builder) -> None:
        for platform in self.platforms:
            folder = b.root / self.split / platform
            real = b.source(f"{platform}/real", folder / self.real_dir, REAL)
            b.add(platform, real, b.source(platform, folder / self.fake_dir, FAKE))
