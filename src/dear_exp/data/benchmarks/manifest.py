"""`manifest`: any image list, a CSV or a JSON list of `{path, label[, generator]}` rows."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dear_exp.data.benchmarks.base import Builder, Layout, key_of
from dear_exp.data.folders import FAKE, REAL, Sample
from dear_exp.errors import DearError

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

    name = "manifest"
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

    def collect(self, b: Builder) -> None:
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
            key = key_of(image, b.root)
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
