"""task=compare: one table from several runs' results.csv, the best value per column marked."""

from __future__ import annotations

import csv
import glob
import io
import logging
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dear_exp.errors import DearError
from dear_exp.metrics import METRICS
from dear_exp.report import compare_rows, write_atomic

log = logging.getLogger(__name__)


# the columns of results.csv that identify a run (report.run_identity), seed aside
IDENTITY = ("task", "detector", "layer", "benchmark", "prune_mode", "alpha_low", "alpha_high", "solver", "threads")


# what makes two runs' base rows the same detector on the same data (the base is not refitted)
BASE = ("detector", "layer", "benchmark", "threads")


def labels(firsts: list[dict[str, str]], folders: list[Path], keys: tuple[str, ...]) -> list[str]:
    """A unique label per run: the identity `keys` whose values differ between the runs, as key=value
    (the run folder's name where nothing differs, or to tell apart runs that share every value)."""
    varied = [k for k in keys if len({row.get(k, "") for row in firsts}) > 1]
    out = [
        " ".join(f"{k}={row.get(k, '')}" for k in varied if row.get(k, "")) or folder.name
        for row, folder in zip(firsts, folders)
    ]
    counts = {label: out.count(label) for label in out}
    return [f"{label} ({folder.name})" if counts[label] > 1 else label for label, folder in zip(out, folders)]


def base_once(
    tables: list[tuple[str, list[dict[str, Any]]]], idents: list[tuple[str, ...]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The base detector's rows kept in the first run of each distinct detector and data (`idents`,
    one per table), not repeated in every run of a sweep that shares them."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for (label, rows), ident in zip(tables, idents):
        out.append((label, [r for r in rows if r["model"] != "base" or ident not in seen]))
        seen.add(ident)
    return out


def over_seeds(tables: list[tuple[Path, list[dict[str, str]]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Runs that differ only in their seed, as one line each: the mean and the sample standard
    deviation over the seeds of every mean row's metrics (`<metric>_sd`), labelled with the seeds and
    the identity keys that differ between the configurations. Base rows once per detector and data."""
    groups: dict[tuple[str, ...], list[tuple[Path, list[dict[str, str]]]]] = {}
    for folder, rows in tables:
        groups.setdefault(tuple(rows[0].get(c, "") for c in IDENTITY), []).append((folder, rows))
    out = []
    names = labels([runs[0][1][0] for runs in groups.values()], [runs[0][0] for runs in groups.values()], IDENTITY)
    for name, runs in zip(names, groups.values()):
        seeds = [rows[0].get("seed", "") for _, rows in runs]
        if len(set(seeds)) < len(seeds):
            raise DearError(
                f"task.over_seeds: {', '.join(str(f) for f, _ in runs)} share a configuration and a seed "
                f"({', '.join(seeds)}); give each seed's run once"
            )
        cells: dict[tuple[str, ...], list[dict[str, str]]] = {}
        for _, rows in runs:
            for r in rows:
                if str(r["subset"]).startswith("mean"):
                    key = (r["model"], r.get("threshold_policy", "logit0"), r["postprocess"], r["subset"])
                    cells.setdefault(key, []).append(r)
        merged = []
        for (model, policy, setting, subset), members in cells.items():
            if len(members) != len(runs):
                raise DearError(
                    f"task.over_seeds: {model} {policy} {setting} {subset} is in {len(members)} of the "
                    f"{len(runs)} runs of seeds {', '.join(seeds)}; give runs of one configuration"
                )
            row: dict[str, Any] = {"model": model, "threshold_policy": policy, "postprocess": setting, "subset": subset}
            for k in METRICS:
                v = [float(m[k]) for m in members]
                row[k] = statistics.fmean(v)
                row[f"{k}_sd"] = statistics.stdev(v) if len(v) > 1 else 0.0
            merged.append(row)
        out.append((f"{name} (seeds {','.join(sorted(seeds, key=_seed_order))})", merged))
    idents = [tuple(runs[0][1][0].get(k, "") for k in BASE) for runs in groups.values()]
    return base_once(out, idents)


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)


def find_runs(patterns: list[str]) -> list[Path]:
    """Run folders holding a results.csv, from paths or globs, in sorted order. A glob may also
    match entries that are not runs (a sweep's multirun.yaml): those are passed over; a path given
    literally must be a run."""
    runs: list[Path] = []
    for pattern in map(str, patterns):
        magic = glob.has_magic(pattern)
        for match in sorted(glob.glob(pattern)) if magic else [pattern]:
            path = Path(match)
            results = path if path.name == "results.csv" else path / "results.csv"
            if results.is_file():
                runs.append(results.parent)
            elif not magic:
                raise DearError(f"no results.csv in {path}; give run folders of task=dear or task=evaluate")
    if not runs:
        raise DearError(f"no results.csv found under {', '.join(map(str, patterns))}; give run folders or globs")
    return list(dict.fromkeys(runs))


def run(cfg: DictConfig) -> dict[str, float]:
    patterns = [cfg.task.runs] if isinstance(cfg.task.runs, str) else list(cfg.task.runs)
    runs = find_runs(patterns)
    read = []
    for folder in runs:
        with open(folder / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"model", "postprocess", "subset", *METRICS} - set(rows[0] if rows else {})
        if missing:
            raise DearError(
                f"{folder / 'results.csv'} lacks the columns {sorted(missing)}; "
                "give results of task=dear or task=evaluate"
            )
        read.append((folder, rows))
    tables: list[tuple[str, list[dict[str, Any]]]]
    if cfg.task.get("over_seeds"):
        tables = over_seeds(read)
    else:
        names = labels([rows[0] for _, rows in read], [folder for folder, _ in read], (*IDENTITY, "seed"))
        idents = [tuple(rows[0].get(k, "") for k in (*BASE, "seed")) for _, rows in read]
        tables = base_once([(name, rows) for name, (_, rows) in zip(names, read)], idents)
    head, lines, best = compare_rows(tables)
    out_dir = Path(cfg.paths.work_dir)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*head, "best"])
    for i, line in enumerate(lines):
        writer.writerow([*line, " ".join(head[j] for (k, j) in sorted(best) if k == i)])
    write_atomic(out_dir / "compare.csv", buf.getvalue())
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, line in enumerate(lines):
        md.append("| " + " | ".join(f"**{c}**" if (i, j) in best else c for j, c in enumerate(line)) + " |")
    write_atomic(out_dir / "compare.md", "\n".join(md) + "\n")
    _print(head, lines, best)
    log.info("Compared %d runs: %s", len(runs), Path(cfg.paths.output_dir) / "compare.md")  # where staging puts it
    return {"runs": float(len(runs))}


def _print(head: list[str], lines: list[list[str]], best: set[tuple[int, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="compare (bold: best among runs with the same policy, setting and subset)")
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i < 5 else "right")
    for i, line in enumerate(lines):
        table.add_row(*(f"[bold green]{c}[/]" if (i, j) in best else c for j, c in enumerate(line)))
    Console(width=max(160, Console().width)).print(table)
