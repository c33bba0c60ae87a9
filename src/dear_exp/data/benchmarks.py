"""Benchmark layouts: which files are real, which are fake, and which real set each generator's
fakes are scored against.

A layout (`benchmark.layout` in the config, instantiated by Hydra) turns a benchmark's folder tree,
or a manifest, into a `BenchmarkIndex`:

- `sources`: every set of images read once per post-processing setting; a source is all real or
  all fake. A real set shared by many generators (Redcaps, LAION, RAISE) is one source, read once.
- `subsets[name] = {"real": <real source>, "fake_source": <fake source>}`: one generator's fakes
  scored against its paired real set.
- `groups`: named lists of subsets averaged separately (DEAR: the 9 generators and the 3
  in-the-wild sets; a layout with one group uses `{"all": [...]}`).

Naming: a fake source is named after its subset; a real set shared by several subsets keeps its
own name (`redcaps`, `laion`, `raise`); a real set that belongs to one subset only (ForenSynths,
GenImage, WildRF) is `<subset>/real`.

Labels always come from the layout's rules (`0_real`/`1_fake`, `nature`/`ai`, the config), never
from the alphabetical order of folder names. Keys are paths relative to the benchmark root (POSIX),
so post-processing draws the same parameters on any machine and in any listing order; samples are
sorted by key. Hidden files and folders (`.*`, `__MACOSX`: macOS zips leave `._name.jpg` files that
are not images) are skipped. A missing folder is a one-line `DearError` naming the path and the
benchmark's `source_hint`; an empty source is an error too, except for the census, which reports it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dear_exp.data.folders import FAKE, IMAGE_EXTENSIONS, REAL, Sample, require_dir, visible
from dear_exp.errors import DearError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from dear_exp.data.datamodules import BenchmarkDataModule
    from dear_exp.data.images import Preprocess

log = logging.getLogger(__name__)

UFD_GENERATORS = ["dalle", "glide_100_10", "glide_100_27", "glide_50_27", "ldm_100", "ldm_200", "ldm_200_cfg", "guided"]
WILDRF_PLATFORMS = ["reddit", "twitter", "facebook"]


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


def _key(path: Path, root: Path) -> str:
    """Path relative to the benchmark root, POSIX (`../` when a folder lies beside the root)."""
    return Path(os.path.relpath(path, root)).as_posix()


def child_dirs(folder: Path) -> list[Path]:
    """Sub-folders in name order, hidden ones left out."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p, folder))


class _Builder:
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
            files = [
                p
                for p in folder.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and visible(p, folder) and p.is_file()
            ]
            if not files and not self.allow_empty:
                raise DearError(f"no images in {folder}; {self.hint}")
            samples += [Sample(p, label, _key(p, self.root)) for p in files]
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
    """Base of every layout: `groups` (optional) splits the subsets into separately averaged groups."""

    groups: dict[str, list[str]] | None = None

    def index(self, name: str, root: str | Path, hint: str = "", allow_empty: bool = False) -> BenchmarkIndex:
        root = Path(root)
        require_dir(root, hint)
        b = _Builder(name, root, hint, allow_empty)
        self.collect(b)
        return b.build(self.groups or b.groups)

    def collect(self, b: _Builder) -> None:
        raise NotImplementedError


@dataclass(kw_only=True)
class FolderPairs(Layout):
    """Explicit folders: `reals: {name: relpath}` and `subsets: {name: {fake: relpath, real: name}}`
    (the DEAR / LDMFakeDetect layout and the demo). Only real sets some subset pairs with are read."""

    reals: dict[str, str]
    subsets: dict[str, dict[str, str]]

    def collect(self, b: _Builder) -> None:
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


def forensynths_pairs(b: _Builder, base: Path, subsets: list[str] | None, real_dir: str, fake_dir: str) -> None:
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

    subsets: list[str] | None = None
    real_dir: str = "0_real"
    fake_dir: str = "1_fake"

    def collect(self, b: _Builder) -> None:
        forensynths_pairs(b, b.root, self.subsets, self.real_dir, self.fake_dir)


@dataclass(kw_only=True)
class GenImage(Layout):
    """GenImage: `<folder>/<split>/{ai,nature}`, nature = real and ai = fake, assigned here (sorted
    folder order would give ai=0 and flip every label). `generators` maps a subset name to its folder
    below the root; when `<folder>/<split>` is absent, the one sub-folder holding `<split>/` is used,
    so both `VQDM/val/...` and the archives' `VQDM/imagenet_ai_0419_vqdm/val/...` load.
    `generators: null` takes every folder of the root."""

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

    def collect(self, b: _Builder) -> None:
        gens = self.generators if self.generators is not None else {p.name: p.name for p in child_dirs(b.root)}
        for gen, folder in gens.items():
            split = self.split_dir(b.root / folder, b.hint)
            real = b.source(f"{gen}/real", split / self.real_dir, REAL)
            b.add(gen, real, b.source(gen, split / self.fake_dir, FAKE))


@dataclass(kw_only=True)
class UFDDiffusion(Layout):
    """UniversalFakeDetect's `diffusion_datasets/`: reals in `{laion,imagenet}/0_real`, fakes in
    `<gen>/1_fake`; `reals` pairs a generator with a real set (guided -> imagenet), every other
    generator pairs with `default_real` (laion). `forensynths` (a folder below the root, e.g.
    `datasets/test`) adds UFD's ForenSynths part as a second group."""

    folder: str = "diffusion_datasets"
    generators: list[str] = field(default_factory=lambda: list(UFD_GENERATORS))
    reals: dict[str, str] = field(default_factory=lambda: {"guided": "imagenet"})
    default_real: str = "laion"
    real_dir: str = "0_real"
    fake_dir: str = "1_fake"
    forensynths: str | None = None
    forensynths_subsets: list[str] | None = None

    def collect(self, b: _Builder) -> None:
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


@dataclass(kw_only=True)
class Synthbuster(Layout):
    """Synthbuster: one folder of fakes per generator, every one scored against the RAISE-1k reals
    (`real`, a folder below the root or beside it, `../real_RAISE_1k`). `generators: null` takes every
    folder of the root except the real one."""

    generators: list[str] | None = None
    real: str = "real_RAISE_1k"
    real_name: str = "raise"

    def collect(self, b: _Builder) -> None:
        real_folder = (b.root / self.real).resolve()
        gens = (
            self.generators
            if self.generators is not None
            else [p.name for p in child_dirs(b.root) if p.resolve() != real_folder]
        )
        for gen in gens:
            real = b.source(self.real_name, b.root / self.real, REAL)
            b.add(gen, real, b.source(gen, b.root / gen, FAKE))


@dataclass(kw_only=True)
class WildRF(Layout):
    """WildRF: `<split>/<platform>/{0_real,1_fake}`, each platform (reddit, twitter, facebook) its
    own pair."""

    split: str = "test"
    platforms: list[str] = field(default_factory=lambda: list(WILDRF_PLATFORMS))
    real_dir: str = "0_real"
    fake_dir: str = "1_fake"

    def collect(self, b: _Builder) -> None:
        for platform in self.platforms:
            folder = b.root / self.split / platform
            real = b.source(f"{platform}/real", folder / self.real_dir, REAL)
            b.add(platform, real, b.source(platform, folder / self.fake_dir, FAKE))


LABELS = {"0": REAL, "real": REAL, "0_real": REAL, "1": FAKE, "fake": FAKE, "1_fake": FAKE}


@dataclass(kw_only=True)
class Manifest(Layout):
    """A CSV (header `path,label[,generator]`; `filename` is read as `path`) or a JSON list of
    `{"path", "label"[, "generator"]}` objects. Labels: 0/1 or real/fake (any case).

    `file` is relative to the benchmark root or absolute; relative image paths are resolved against
    the manifest's folder (`relative_to: manifest`) or the benchmark root (`relative_to: root`).

    Rule for sets and pairs: a fake row belongs to the subset its `generator` names (`fake` when the
    column is empty or absent). A real row belongs to the real set its `generator` names, or to the
    real set `real` when the column is empty. Subset G is scored against `pairs[G]` when given, else
    against real set G when real rows name G (per-generator reals, as in ForenSynths), else against
    `real`; a subset with none of these, or a real set no subset uses, is an error.
    """

    file: str
    relative_to: Literal["manifest", "root"] = "manifest"
    pairs: dict[str, str] = field(default_factory=dict)

    def rows(self, path: Path, hint: str) -> list[dict[str, Any]]:
        if not path.is_file():
            raise DearError(f"manifest not found: {path}; {hint}")
        try:
            if path.suffix.lower() == ".json":
                rows = json.loads(path.read_text())
            else:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
        except (ValueError, csv.Error, UnicodeDecodeError) as exc:
            raise DearError(
                f"cannot read manifest {path} ({exc}); give a CSV with path,label[,generator] or a JSON list of objects"
            ) from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DearError(f"manifest {path}: expected a list of {{path, label[, generator]}} rows")
        return rows

    def collect(self, b: _Builder) -> None:
        if self.relative_to not in ("manifest", "root"):
            raise DearError(f"benchmark.layout.relative_to={self.relative_to}: choose manifest or root")
        path = b.root / self.file
        base = path.parent if self.relative_to == "manifest" else b.root
        by_set: dict[tuple[int, str], list[Sample]] = {}
        seen: set[str] = set()
        missing = []
        for i, row in enumerate(self.rows(path, b.hint), start=1):
            name = row.get("path", row.get("filename"))
            raw = str(row.get("label", "")).strip().lower()
            if name is None or raw not in LABELS:
                raise DearError(f"manifest {path} row {i}: needs a path and a label 0/1 or real/fake, got {row}")
            label = LABELS[raw]
            image = base / str(name)
            key = _key(image, b.root)
            if key in seen:
                raise DearError(f"manifest {path} row {i}: {name} is listed twice")
            seen.add(key)
            if not image.is_file():
                missing.append(image)
            group = str(row.get("generator") or "").strip() or ("real" if label == REAL else "fake")
            by_set.setdefault((label, group), []).append(Sample(image, label, key))
        if missing:
            raise DearError(f"manifest {path}: {len(missing)} listed file(s) not found, e.g. {missing[0]}; {b.hint}")
        reals = {g: s for (label, g), s in by_set.items() if label == REAL}
        fakes = {g: s for (label, g), s in by_set.items() if label == FAKE}
        used = set()
        for gen, samples in sorted(fakes.items()):
            real_set = self.pairs.get(gen, gen if gen in reals else "real")
            if real_set not in reals:
                raise DearError(
                    f"manifest {path}: generator {gen!r} has no real set {real_set!r} to pair with "
                    f"(real sets: {', '.join(sorted(reals)) or 'none'}); set benchmark.layout.pairs"
                )
            used.add(real_set)
            real_name = f"{real_set}/real" if real_set in fakes else real_set
            b.sources.setdefault(real_name, sorted(reals[real_set], key=lambda s: s.key))
            b.sources[gen] = sorted(samples, key=lambda s: s.key)
            b.add(gen, real_name, gen)
        if unused := sorted(set(reals) - used):
            raise DearError(
                f"manifest {path}: real set(s) {unused} pair with no generator; "
                f"set benchmark.layout.pairs={{<generator>: <real set>}}"
            )


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


def benchmark_datamodule(cfg: DictConfig, preprocess: Preprocess) -> BenchmarkDataModule:
    """The benchmark of `cfg.benchmark` under every setting of `cfg.postprocess`."""
    from omegaconf import OmegaConf

    from dear_exp.data.datamodules import BenchmarkDataModule

    return BenchmarkDataModule(
        index=load_index(cfg.benchmark),
        postprocess=OmegaConf.to_container(cfg.postprocess.settings),  # type: ignore[arg-type]
        preprocess=preprocess,
        batch_size=cfg.benchmark.batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
    )
