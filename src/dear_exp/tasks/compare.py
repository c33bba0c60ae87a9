"""task=compare: one table from several runs' results.csv, the best value per column marked."""

from __future__ import annotations

import csv
import glob
import io
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dear_exp.errors import DearError
from dear_exp.metrics import METRICS
from dear_exp.report import compare_rows, write_atomic

log = logging.getLogger(__name__)


# the columns of results.csv that identify a run (report.run_identity), seed aside
IDENTITY = (
    "task",
    "detector",
    "layer",
    "benchmark",
    "prune_mode",
    "alpha_low",
    "alpha_high",
    "solver",
    "threads",
    "metrics",
)


# what makes two runs' base rows the same detector on the same data (the base is not refitted)
BASE = ("detector", "layer", "benchmark", "threads")


def labels(
    firsts: list[dict[str, str]], folders: list[Path], keys: tuple[str, ...], by_folder: bool = True
) -> list[str]:
    """A unique label per run: the identity `keys` whose values differ between the runs, as key=value
    (the run folder's name where nothing differs, or to tell apart runs that share every value;
    `by_folder=False`: empty where nothing differs, for a label that names its runs otherwise)."""
    varied = [k for k in keys if len({row.get(k, "") for row in firsts}) > 1]
    keyed = [" ".join(f"{k}={row.get(k, '')}" for k in varied if row.get(k, "")) for row in firsts]
    named = list(keyed)
    for label in set(keyed):
        same = [i for i, other in enumerate(keyed) if other == label]
        if len(same) == 1 and (label or not by_folder):
            continue
        # named, or told apart, by their folders' shortest distinct tails (two sweeps' job 0: a/0, b/0)
        for i, tail in zip(same, _distinct_tails([folders[i] for i in same])):
            named[i] = f"{label} ({tail})" if label else tail
    return named


def _distinct_tails(folders: list[Path]) -> list[str]:
    """The fewest last parts of each folder's path that tell them all apart."""
    for n in range(1, max(len(f.parts) for f in folders) + 1):
        tails = ["/".join(f.parts[-n:]) for f in folders]
        if len(set(tails)) == len(tails):
            return tails
    return [str(f) for f in folders]


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
    firsts, folders = [runs[0][1][0] for runs in groups.values()], [runs[0][0] for runs in groups.values()]
    names = labels(firsts, folders, IDENTITY, by_folder=False)  # one configuration: its seeds name it
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
        listed = f"seeds {','.join(sorted(seeds, key=_seed_order))}"
        out.append((f"{name} ({listed})" if name else listed, merged))
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
                if (path / "pairs").is_dir():  # a task=dear_grid run: its pairs are the runs
                    raise DearError(f"no results.csv in {path}, a task=dear_grid run: give its pairs, {path}/pairs/*")
                raise DearError(f"no results.csv in {path}; give run folders of task=dear or task=evaluate")
    if not runs:
        raise DearError(f"no results.csv found under {', '.join(map(str, patterns))}; give run folders or globs")
    return list(dict.fromkeys(runs))


def read_runs(runs: list[Path]) -> list[tuple[Path, list[dict[str, str]]]]:
    """Each run folder's results.csv rows, checked for the columns a comparison reads."""
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
    return read


def run(cfg: DictConfig) -> dict[str, float]:
    patterns = [cfg.task.runs] if isinstance(cfg.task.runs, str) else list(cfg.task.runs)
    runs = find_runs(patterns)
    out_dir, read = Path(cfg.paths.work_dir), read_runs(runs)
    head, lines, best = summarise(read, out_dir, bool(cfg.task.get("over_seeds")))
    _print(head, lines, best)
    drawn = heatmaps([rows for _, rows in read], out_dir)
    if drawn:
        log.info("alpha_low x alpha_high heatmaps: %s", ", ".join(drawn))
    log.info("Compared %d runs: %s", len(runs), Path(cfg.paths.output_dir) / "compare.md")  # where staging puts it
    return {"runs": float(len(runs))}


def summarise(
    read: list[tuple[Path, list[dict[str, str]]]], out_dir: Path, seeds: bool = False
) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """compare.csv and compare.md of the runs' rows (`read_runs`), their lines and best cells;
    `seeds`: runs that differ only in their seed as one line (`over_seeds`)."""
    tables: list[tuple[str, list[dict[str, Any]]]]
    if seeds:
        tables = over_seeds(read)
    else:
        names = labels([rows[0] for _, rows in read], [folder for folder, _ in read], (*IDENTITY, "seed"))
        idents = [tuple(rows[0].get(k, "") for k in (*BASE, "seed")) for _, rows in read]
        tables = base_once([(name, rows) for name, (_, rows) in zip(names, read)], idents)
    head, lines, best = compare_rows(tables)
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
    return head, lines, best


HEATMAP_METRICS = ("AUC", "F.Acc", "Acc")


def heatmap_cells(
    tables: list[list[dict[str, str]]],
) -> dict[tuple[str, str, str], dict[tuple[float, float], list[float]]]:
    """DEAR's mean rows of bilateral runs by (policy, setting, metric), then by (alpha_low, alpha_high):
    the values of every run (seed) in that cell. The first mean row (the first group's mean) per run."""
    cells: dict[tuple[str, str, str], dict[tuple[float, float], list[float]]] = {}
    for rows in tables:
        seen: set[tuple[str, str]] = set()
        for r in rows:
            if (
                r.get("model") != "dear"
                or r.get("prune_mode") != "bilateral"
                or not str(r["subset"]).startswith("mean")
            ):
                continue
            policy, setting = r.get("threshold_policy", "logit0"), r["postprocess"]
            if (policy, setting) in seen:
                continue
            seen.add((policy, setting))
            alphas = (float(r["alpha_low"]), float(r["alpha_high"]))
            for k in HEATMAP_METRICS:
                cells.setdefault((policy, setting, k), {}).setdefault(alphas, []).append(float(r[k]))
    return cells


MIN_SPAN = 1.0  # percentage points: cells that all read 99.8 must not look far apart


def colour_range(z: list[list[float]]) -> tuple[float, float]:
    """The colour scale of one heatmap of percentages: its values' range, widened about its middle to
    at least MIN_SPAN points (kept within 0-100), so that differences below the printed 0.1 do not span
    the whole colour map."""
    values = [v for row in z for v in row if not math.isnan(v)]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if high - low >= MIN_SPAN:
        return low, high
    low = min(max((low + high) / 2 - MIN_SPAN / 2, 0.0), 100.0 - MIN_SPAN)
    return low, low + MIN_SPAN


def heatmaps(
    tables: list[list[dict[str, str]]], out_dir: Path, draw: bool = True, only: str | None = None
) -> list[str]:
    """For a sweep over alpha_low x alpha_high (at least two values of one): heatmaps.csv (the mean over
    runs of each cell) and, when `draw`, one heatmaps_<policy>.png per threshold policy (`only`: that
    policy's), a row per setting and a column per metric (AUC, F.Acc, Acc of DEAR's mean row). Returns
    the files written."""
    cells = heatmap_cells(tables)
    grid = {a for per in cells.values() for a in per}
    lows, highs = sorted({a for a, _ in grid}), sorted({b for _, b in grid})
    if len(lows) < 2 and len(highs) < 2:
        return []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["policy", "postprocess", "metric", "alpha_low", "alpha_high", "mean", "runs"])
    for (policy, setting, metric), per in cells.items():
        for (lo, hi), values in sorted(per.items()):
            w.writerow([policy, setting, metric, lo, hi, f"{statistics.fmean(values):.4f}", len(values)])
    write_atomic(out_dir / "heatmaps.csv", buf.getvalue())
    written = ["heatmaps.csv"]
    if not draw:
        return written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for policy in dict.fromkeys(p for p, _, _ in cells if only in (None, p)):
        settings = list(dict.fromkeys(s for p, s, _ in cells if p == policy))
        fig, axes = plt.subplots(len(settings), 3, figsize=(9.6, 2.8 * len(settings)), squeeze=False)
        for i, setting in enumerate(settings):
            for j, metric in enumerate(HEATMAP_METRICS):
                per = cells[(policy, setting, metric)]
                z = [[statistics.fmean(per[(lo, hi)]) if (lo, hi) in per else math.nan for hi in highs] for lo in lows]
                ax = axes[i][j]
                vmin, vmax = colour_range(z)
                im = ax.imshow(z, origin="lower", cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
                for a, row in enumerate(z):
                    for b, v in enumerate(row):
                        if not math.isnan(v):
                            dark = float(im.norm(v)) < 0.6  # light text on the dark end of viridis
                            ax.text(b, a, f"{v:.1f}", ha="center", va="center", fontsize=8, color="w" if dark else "k")
                ax.set_xticks(range(len(highs)), [f"{h:g}" for h in highs])
                ax.set_yticks(range(len(lows)), [f"{lo:g}" for lo in lows])
                ax.set_xlabel("alpha_high")
                ax.set_ylabel("alpha_low")
                ax.set_title(f"DEAR {metric}, {setting}", fontsize=9)
                fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle(f"threshold policy {policy} (mean over the runs of each cell)", fontsize=10)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
        plt.close(fig)
        write_atomic(out_dir / f"heatmaps_{policy}.png", png.getvalue())
        written.append(f"heatmaps_{policy}.png")
    return written


def _print(head: list[str], lines: list[list[str]], best: set[tuple[int, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="compare (bold: best among runs with the same policy, setting and subset)")
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i < 5 else "right")
    for i, line in enumerate(lines):
        table.add_row(*(f"[bold green]{c}[/]" if (i, j) in best else c for j, c in enumerate(line)))
    Console(width=max(160, Console().width)).print(table)
