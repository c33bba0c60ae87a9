"""What every layout shares: the index it builds (`BenchmarkIndex`), the `Builder` that scans each
folder once, the `Layout` base class, and `load_index`, which instantiates `benchmark.layout`.

A layout is a `Layout` subclass with a `name` class attribute, in its own module of this package;
the package imports every module and registers each such class (see `dear_exp.data.benchmarks`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dear_exp.data.folders import FAKE, REAL, Sample, image_entries, joined, require_dir, visible
from dear_exp.errors import DearError

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("dear_exp.data.benchmarks")

LAYOUTS: dict[str, type[Layout]] = {}  # registry: Layout.name -> class, filled as layout modules load


@dataclass
class BenchmarkIndex:
    name: str
    root: Path
    sources: dict[str, list[Sample]]
    subsets: dict[str, dict[str, str]]
    groups: dict[str, list[str]]

    @property
    def real_sources(self) -> set[str]:
        return {spec["real"] for spec in self.subsets.values()}

    def is_real(self, source: str) -> bool:
        return source in self.real_sources

    def subsample(self, n: int | None, seed: int) -> BenchmarkIndex:
        """At most n images per source (each fake subset and each real set), for quick looks at large
        benchmarks (SIDBench's and UFD's max_sample): the n whose seeded sha256 of the key is smallest,
        so the choice depends on the seed and the files, never on the listing order; kept in key order."""
        if n is None:
            return self

        def pick(samples: list[Sample]) -> list[Sample]:
            if len(samples) <= n:
                return samples
            ranked = sorted(samples, key=lambda s: hashlib.sha256(f"max_sample/{seed}/{s.key}".encode()).digest())
            chosen = set(ranked[:n])
            return [s for s in samples if s in chosen]

        return dataclasses.replace(self, sources={k: pick(v) for k, v in self.sources.items()})

    def check(self) -> None:
        """Every subset pairs a real source with a fake one, labels agree, groups name subsets."""
        if not self.subsets:
            raise DearError(f"benchmark {self.name}: no subsets found under {self.root}")
        fakes = {spec["fake_source"] for spec in self.subsets.values()}
        for subset, spec in self.subsets.items():
            for role in ("real", "fake_source"):
                if spec[role] not in self.sources:
                    raise DearError(
                        f"benchmark {self.name}: subset {subset!r} names source {spec[role]!r}, "
                        f"which is not one of its sources ({', '.join(self.sources)})"
                    )
        if both := self.real_sources & fakes:
            raise DearError(f"benchmark {self.name}: source(s) {sorted(both)} are both real and fake; rename them")
        for source, samples in self.sources.items():
            label = REAL if source in self.real_sources else FAKE
            if any(s.label != label for s in samples):
                raise DearError(f"benchmark {self.name}: source {source!r} mixes real and fake images")
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in self.subsets]
            if unknown or not members:
                raise DearError(
                    f"benchmark {self.name}: group {group!r} names {unknown or 'no subsets'}; "
                    f"its subsets are {', '.join(self.subsets)}"
                )


def key_of(path: Path, root: Path) -> str:
    """Path relative to the benchmark root, POSIX (`../` when a folder lies beside the root)."""
    return Path(os.path.relpath(path, root)).as_posix()


def child_dirs(folder: Path) -> list[Path]:
    """Sub-folders in name order, hidden ones left out."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p, folder))


class Builder:
    """Collects sources and pairs for one index; scans each folder once."""

    def __init__(self, name: str, root: Path, hint: str, allow_empty: bool) -> None:
        self.name, self.root, self.hint, self.allow_empty = name, root, hint, allow_empty
        self.sources: dict[str, list[Sample]] = {}
        self.labels: dict[str, int] = {}
        self.subsets: dict[str, dict[str, str]] = {}
        self.groups: dict[str, list[str]] | None = None  # a layout's own default grouping

    def scan(self, folders: list[Path], label: int) -> list[Sample]:
        samples = []
        for folder in folders:
            require_dir(folder, self.hint)
            files = image_entries(folder)
            if not files and not self.allow_empty:
                raise DearError(f"no images in {folder}; {self.hint}")
            prefix = key_of(folder, self.root)  # each key is prefix/rel: the file's path from the root
            samples += [Sample(p, label, joined(prefix, rel)) for rel, p in files]
        return sorted(samples, key=lambda s: s.key)

    def source(self, name: str, folders: Path | list[Path], label: int) -> str:
        """Add a source (once: a real set shared by many subsets is scanned once)."""
        if name in self.labels:
            if self.labels[name] != label:
                raise DearError(f"benchmark {self.name}: {name!r} names both a real set and a fake subset; rename one")
            return name
        self.sources[name] = self.scan(folders if isinstance(folders, list) else [folders], label)
        self.labels[name] = label
        return name

    def add(self, subset: str, real: str, fake: str) -> None:
        self.subsets[subset] = {"real": real, "fake_source": fake}

    def build(self, groups: dict[str, list[str]] | None) -> BenchmarkIndex:
        index = BenchmarkIndex(
            self.name,
            self.root,
            self.sources,
            self.subsets,
            {k: list(v) for k, v in groups.items()} if groups else {"all": list(self.subsets)},
        )
        index.check()
        n = sum(len(v) for v in self.sources.values())
        log.info(
            "Benchmark %s: %d subsets (%s), %d sources, %d images",
            self.name,
            len(self.subsets),
            ", ".join(self.subsets),
            len(self.sources),
            n,
        )
        return index


@dataclass(kw_only=True)
class Layout:
    """Base of every layout: `groups` (optional) splits the subsets into separately averaged groups.

    A subclass that sets the class attribute `name` is registered in `LAYOUTS` under it (once: two
    layouts of one name are an error)."""

    name: ClassVar[str]
    groups: dict[str, list[str]] | None = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        known = LAYOUTS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"benchmark layout name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        LAYOUTS[name] = cls

    def index(self, name: str, root: str | Path, hint: str = "", allow_empty: bool = False) -> BenchmarkIndex:
        root = Path(root)
        require_dir(root, hint)
        b = Builder(name, root, hint, allow_empty)
        self.collect(b)
        return b.build(self.groups or b.groups)

    def collect(self, b: Builder) -> None:
        raise NotImplementedError


def load_index(benchmark: DictConfig, allow_empty: bool = False) -> BenchmarkIndex:
    """Instantiate `benchmark.layout` and index `benchmark.root`."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf.errors import MissingMandatoryValue

    if "layout" not in benchmark:
        raise DearError(
            f"benchmark {benchmark.get('name')}: no benchmark.layout; benchmarks now name a layout "
            f"class (see conf/benchmark/demo.yaml)"
        )
    try:
        layout = instantiate(benchmark.layout, _convert_="all")
    except (InstantiationException, MissingMandatoryValue) as exc:
        raise DearError(f"benchmark {benchmark.name}: bad benchmark.layout ({exc})") from None
    if not isinstance(layout, Layout):
        raise DearError(
            f"benchmark.layout._target_={benchmark.layout._target_} is not a layout of dear_exp.data.benchmarks"
        )
    return layout.index(benchmark.name, benchmark.root, benchmark.get("source_hint", ""), allow_empty=allow_empty)
