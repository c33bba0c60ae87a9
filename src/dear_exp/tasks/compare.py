"""task=compare: one table from several runs' results.csv, the best value per column marked."""

from __future__ import annotations

import csv
import glob
import io
import logging
from pathlib import Path

from omegaconf import DictConfig

from dear_exp.errors import DearError
from dear_exp.metrics import METRICS
from dear_exp.report import compare_rows, write_atomic

log = logging.getLogger(__name__)


def _label(row: dict[str, str], run: Path) -> str:
    parts = [row.get("task", ""), row.get("detector", ""), row.get("benchmark", "")]
    if row.get("task", "dear") == "dear":
        parts.append(f"{row.get('prune_mode', '')} {row.get('alpha_low', '')}/{row.get('alpha_high', '')}")
    return " ".join(p for p in parts if p) or run.name


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
    tables = []
    labels: dict[str, int] = {}
    for folder in runs:
        with open(folder / "results.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"model", "postprocess", "subset", *METRICS} - set(rows[0] if rows else {})
        if missing:
            raise DearError(f"{folder / 'results.csv'} lacks the columns {sorted(missing)}; "
                            "give results of task=dear or task=evaluate")
        label = _label(rows[0], folder) if rows else folder.name
        labels[label] = labels.get(label, 0) + 1
        tables.append((label if labels[label] == 1 else f"{label} ({folder.name})", rows))
    head, lines, best = compare_rows(tables)
    out_dir = Path(cfg.paths.output_dir)
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
    log.info("Compared %d runs: %s", len(runs), out_dir / "compare.md")
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
