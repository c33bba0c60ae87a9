"""task=census: what a benchmark holds, before any detector sees it.

Per source and per subset: image counts, file formats (from each file's header, not its extension),
the share of JPEGs, unreadable files (each decoded in full, as a run decodes it), and resolution buckets on the shorter side. Warnings: an empty subset, real and
fake counts out of balance, identical files (sha256) within or across sources, and a format bias
(reals JPEG, fakes PNG: a detector can separate them by the file format alone, benchmarks.md
lesson 4). Writes `census.csv` and `census.json` to the run's output folder. Needs no detector.

    python -m dear_exp task=census benchmark=genimage benchmark.root=/data/GenImage
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dear_exp.build import ensure_demo
from dear_exp.data.benchmarks import BenchmarkIndex, load_index
from dear_exp.data.folders import Sample
from dear_exp.data.images import image_header, load_image
from dear_exp.errors import DearError
from dear_exp.files import file_sha256, write_atomic

log = logging.getLogger(__name__)

JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # PIL names multi-picture camera JPEGs MPO
EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
CSV_FIELDS = [
    "kind",
    "name",
    "role",
    "real",
    "fake_source",
    "groups",
    "n",
    "n_real",
    "n_fake",
    "ratio",
    "formats",
    "jpeg_share",
    "real_jpeg_share",
    "fake_jpeg_share",
    "buckets",
    "ext_mismatch",
    "unreadable",
]


def bucket_labels(edges: list[int]) -> list[str]:
    """[256, 512, 1024] -> <256, 256-511, 512-1023, >=1024 (shorter side, px)."""
    return [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]}"]


def bucket_of(short: int, edges: list[int], labels: list[str]) -> str:
    return labels[sum(short >= e for e in edges)]


def probe(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(format, (width, height)) from the header, and the whole file decoded as a run would decode it
    (`load_image`): a truncated file, whose header alone is intact, counts as unreadable, (None, None)."""
    try:
        header = image_header(path)
        load_image(path)
        return header
    except DearError:
        return None, None


def _share(formats: Counter, n: int) -> float | None:
    return sum(formats[f] for f in JPEG_FORMATS) / n if n else None


def source_stats(samples: list[Sample], edges: list[int]) -> dict[str, Any]:
    labels = bucket_labels(edges)
    formats: Counter = Counter()
    buckets = dict.fromkeys(labels, 0)
    unreadable, mismatch = [], []
    for s in samples:
        fmt, size = probe(s.path)
        if fmt is None or size is None:
            unreadable.append(s.key)
            continue
        formats[fmt] += 1
        buckets[bucket_of(min(size), edges, labels)] += 1
        expected = EXTENSION_FORMATS.get(s.path.suffix.lower())
        if expected and not (fmt == expected or (fmt in JPEG_FORMATS and expected == "JPEG")):
            mismatch.append(f"{s.key} is {fmt}")
    return {
        "n": len(samples),
        "formats": dict(formats.most_common()),
        "jpeg_share": _share(formats, len(samples)),
        "buckets": buckets,
        "ext_mismatch": mismatch,
        "unreadable": unreadable,
    }


def duplicates(index: BenchmarkIndex) -> list[list[dict[str, str]]]:
    """Groups of identical files (same sha256), within or across sources; only files that share
    their byte size with another are hashed."""
    by_size: dict[int, list[tuple[str, Sample]]] = defaultdict(list)
    for source, samples in index.sources.items():
        for s in samples:
            by_size[s.path.stat().st_size].append((source, s))
    digests: dict[Path, str] = {}
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for entries in by_size.values():
        if len(entries) < 2:
            continue
        for source, s in entries:
            if s.path not in digests:
                digests[s.path] = file_sha256(s.path)
            groups[digests[s.path]].append({"source": source, "key": s.key})
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0]["key"])


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def take_census(
    index: BenchmarkIndex,
    buckets: list[int],
    imbalance_ratio: float = 2.0,
    format_bias: float = 0.5,
    find_duplicates: bool = True,
) -> dict[str, Any]:
    edges = sorted(int(b) for b in buckets)
    reals = index.real_sources
    member_of = defaultdict(list)
    for group, members in index.groups.items():
        for m in members:
            member_of[m].append(group)
    warnings: list[str] = []
    sources = []
    stats = {}
    for name, samples in index.sources.items():
        st = stats[name] = source_stats(samples, edges)
        used_by = [s for s, spec in index.subsets.items() if name in (spec["real"], spec["fake_source"])]
        sources.append(
            {"kind": "source", "name": name, "role": "real" if name in reals else "fake", "subsets": used_by, **st}
        )
        if st["unreadable"]:
            warnings.append(f"source {name}: {len(st['unreadable'])} unreadable file(s), e.g. {st['unreadable'][0]}")
        if st["ext_mismatch"]:
            warnings.append(
                f"source {name}: {len(st['ext_mismatch'])} file(s) whose content is not what the "
                f"extension says, e.g. {st['ext_mismatch'][0]}"
            )
    subsets = []
    for subset, spec in index.subsets.items():
        r, f = stats[spec["real"]], stats[spec["fake_source"]]
        n_r, n_f = r["n"], f["n"]
        ratio = max(n_r, n_f) / min(n_r, n_f) if n_r and n_f else None
        subsets.append(
            {
                "kind": "subset",
                "name": subset,
                "real": spec["real"],
                "fake_source": spec["fake_source"],
                "groups": member_of[subset],
                "n_real": n_r,
                "n_fake": n_f,
                "ratio": ratio,
                "real_jpeg_share": r["jpeg_share"],
                "fake_jpeg_share": f["jpeg_share"],
            }
        )
        if not n_r or not n_f:
            which = " and ".join(w for w, n in (("real", n_r), ("fake", n_f)) if not n)
            warnings.append(f"subset {subset}: empty: no {which} images ({n_r} real, {n_f} fake)")
            continue
        if ratio is not None and ratio > imbalance_ratio:
            warnings.append(
                f"subset {subset}: unbalanced: {n_r} real vs {n_f} fake (ratio {ratio:.1f} > "
                f"{imbalance_ratio:g}); AP and Acc depend on the ratio"
            )
        pr, pf = r["jpeg_share"], f["jpeg_share"]
        if abs(pr - pf) >= format_bias:
            jpeg_side, other_side, other = ("reals", "fakes", f) if pr > pf else ("fakes", "reals", r)
            others = ", ".join(k for k in other["formats"] if k not in JPEG_FORMATS) or "other formats"
            warnings.append(
                f"subset {subset}: format bias: {jpeg_side} are {_pct(max(pr, pf))} JPEG, "
                f"{other_side} {_pct(min(pr, pf))} ({others}); a detector can separate them by "
                f"the file format alone (JPEG's 8x8 blocks): compare under post-processing (postprocess=robust)"
            )
    dups = duplicates(index) if find_duplicates else []
    if dups:
        n_files = sum(len(g) for g in dups)
        mixed = sum(len({e["source"] in reals for e in g}) > 1 for g in dups)
        shown = "; ".join(" == ".join(f"{e['source']}:{e['key']}" for e in g) for g in dups[:5])
        more = f"; and {len(dups) - 5} more group(s) in census.json" if len(dups) > 5 else ""
        warnings.append(
            f"duplicates: {len(dups)} group(s) of identical files ({n_files} files, {mixed} group(s) "
            f"both real and fake): {shown}{more}"
        )
    return {
        "benchmark": index.name,
        "root": str(index.root),
        "buckets": bucket_labels(edges),
        "groups": index.groups,
        "sources": sources,
        "subsets": subsets,
        "duplicates": dups,
        "warnings": warnings,
    }


def census_csv(census: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in census["sources"] + census["subsets"]:
        flat = {}
        for k, v in row.items():
            if isinstance(v, dict):
                v = ";".join(f"{a}:{b}" for a, b in v.items())
            elif isinstance(v, list):
                v = len(v) if k in ("ext_mismatch", "unreadable") else ";".join(v)
            elif isinstance(v, float):
                v = f"{v:.4f}"
            flat[k] = "" if v is None else v
        writer.writerow(flat)
    return buf.getvalue()


def print_census(census: dict[str, Any]) -> None:
    """The two tables; the warnings go to the log (console and the run's log file)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    table = Table(title=f"{census['benchmark']}: sources ({census['root']})")
    for name in ("source", "role", "images", "formats", "JPEG", *census["buckets"]):
        table.add_column(name, justify="left" if name in ("source", "role", "formats") else "right")
    for s in census["sources"]:
        formats = " ".join(f"{k} {v}" for k, v in s["formats"].items()) + (
            f" unreadable {len(s['unreadable'])}" if s["unreadable"] else ""
        )
        table.add_row(
            s["name"],
            s["role"],
            str(s["n"]),
            formats,
            _pct(s["jpeg_share"]),
            *(str(s["buckets"][b]) for b in census["buckets"]),
        )
    console.print(table)
    table = Table(title=f"{census['benchmark']}: subsets (each fake source against its real source)")
    for name in ("subset", "groups", "real", "n real", "n fake", "ratio", "JPEG real", "JPEG fake"):
        table.add_column(name, justify="left" if name in ("subset", "groups", "real") else "right")
    for s in census["subsets"]:
        table.add_row(
            s["name"],
            ", ".join(s["groups"]),
            s["real"],
            str(s["n_real"]),
            str(s["n_fake"]),
            "-" if s["ratio"] is None else f"{s['ratio']:.2f}",
            _pct(s["real_jpeg_share"]),
            _pct(s["fake_jpeg_share"]),
        )
    console.print(table)


def run(cfg: DictConfig) -> dict[str, Any]:
    ensure_demo(cfg, [cfg.benchmark.root])
    index = load_index(cfg.benchmark, allow_empty=True)
    t = cfg.task
    census = take_census(
        index,
        list(t.get("buckets", [256, 512, 1024])),
        float(t.get("imbalance_ratio", 2.0)),
        float(t.get("format_bias", 0.5)),
        bool(t.get("duplicates", True)),
    )
    out = Path(cfg.paths.work_dir)
    write_atomic(out / "census.json", json.dumps(census, indent=1))
    write_atomic(out / "census.csv", census_csv(census))
    print_census(census)
    for w in census["warnings"]:
        log.warning(w)
    log.info(
        "Census of %s: %d sources, %d images, %d warning(s); census.csv and census.json in %s",
        index.name,
        len(index.sources),
        sum(s["n"] for s in census["sources"]),
        len(census["warnings"]),
        cfg.paths.output_dir,
    )
    return census
