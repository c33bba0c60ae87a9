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

Adding a layout is one module here and one yaml in `conf/benchmark/`: the module defines a
`Layout` dataclass with a `name` class attribute and a `collect(b: Builder)` method; this package
imports every module of its folder, so the class is registered in `LAYOUTS` under its name and is
reachable as `dear_exp.data.benchmarks.<ClassName>` (the yaml's `benchmark.layout._target_`).
"""

from __future__ import annotations

import importlib
import pkgutil

from dear_exp.data.benchmarks.base import LAYOUTS, BenchmarkIndex, Builder, Layout, child_dirs, key_of, load_index

__all__ = ["LAYOUTS", "BenchmarkIndex", "Builder", "Layout", "child_dirs", "key_of", "layout_class", "load_index"]

_Builder = Builder  # the name before the split into modules

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base" and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")


def layout_class(name: str) -> type[Layout]:
    """The registered layout of a `name`."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"no benchmark layout {name!r}; registered: {', '.join(sorted(LAYOUTS))}") from None


def __getattr__(attr: str) -> type[Layout]:
    """Every registered layout class by its class name (`dear_exp.data.benchmarks.ForenSynths`)."""
    for cls in LAYOUTS.values():
        if cls.__name__ == attr:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *(cls.__name__ for cls in LAYOUTS.values())})
