"""task=dear_grid: task=dear over every prune.alpha_low x prune.alpha_high pair, in one process.

A multirun (`-m prune.alpha_low=0.0,0.1 ...`) runs a Hydra job per pair: its own folder, log, config
files, loggers and W&B run, which cost a cached job about as much again as its head fits. Here the
detector, the data, the dissection and the cached rows are set up once and each pair costs its head
fits and its evaluation from the cache. Each pair's files are those its multirun job writes, with
the same values (pairs/<index>_<alpha_low>_<alpha_high>/: results.csv, results.md, refit.csv, the heads, the
dissection; scores.csv with task.scores=csv), and the grid's own are task=compare's over them
(compare.csv, compare.md, heatmaps.csv and heatmaps_<policy>.png), a table on the console, and to the
loggers the comparison as a table and each pair's mean rows as one step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dear_exp import schema
from dear_exp.features import describe_cache
from dear_exp.prune import PruneSettings, needs_rad
from dear_exp.refit import RefitSettings
from dear_exp.refit.head import head_identity
from dear_exp.report import (
    MODEL_NAMES,
    cell,
    draw_figures,
    is_missing,
    job_line,
    lead_policy,
    plots_wanted,
    refit_metrics,
    run_identity,
    run_title,
    save_loggers,
    save_refit,
    write_results,
)
from dear_exp.tasks.compare import heatmaps, read_runs, summarise
from dear_exp.tasks.dear import fit_pair, prepare

log = logging.getLogger(__name__)


def folder_name(i: int, count: int, prune: PruneSettings) -> str:
    """`<index>_<alpha_low>_<alpha_high>`: the index zero-padded, so that a listing (`pairs/*`) is the
    grid's order; each level as Python writes the float, so that no two pairs share a folder."""
    return f"{i:0{len(str(count - 1))}d}_{prune.alpha_low!r}_{prune.alpha_high!r}"


def run(cfg: DictConfig) -> dict[str, float]:
    head: RefitSettings = schema.build(cfg.head, "head")
    p = cfg.prune
    pairs = [
        PruneSettings(mode=p.mode, alpha_low=float(lo), alpha_high=float(hi), seed=p.seed)
        for lo, hi in schema.alpha_pairs(OmegaConf.to_container(p, resolve=True))  # type: ignore[arg-type]
    ]
    draw = plots_wanted(cfg.task.plots)
    every = cfg.task.plots == "always"  # each pair's figures too, as a multirun job's with task.plots=always
    prepared = prepare(cfg, head, needs_rad(p.mode))
    prepared.store.cache.keep()  # every pair reads the same rows: from the disk once
    masks = [prepared.masks(pair) for pair in pairs]  # an impossible pair fails before the rows are extracted
    prepared.read_rows()
    out_dir = Path(cfg.paths.work_dir)
    folders: list[Path] = []
    refits: list[dict[str, float]] = []
    identity = head_identity(prepared.detector)  # hashes the weights of a loaded detector: once for the grid
    for i, (pair, mask) in enumerate(zip(pairs, masks)):
        folder = out_dir / "pairs" / folder_name(i, len(pairs), pair)
        folder.mkdir(parents=True, exist_ok=True)  # every rank: an Adam fit's checkpoints go there
        fits, results = fit_pair(prepared, pair, mask, [], folder)
        if prepared.trainer.is_global_zero:
            save_refit(
                cfg,
                folder,
                fits,
                prepared.scores,
                prepared.detector,
                [],
                draw=every,
                quiet=True,
                prune=pair,
                identity=identity,
            )
            write_results(folder, results.rows, run_identity(cfg, "dear", pair))
            if every:  # titled with the pair's levels (a multirun job's figures name the detector and data only)
                draw_figures(folder, results, f"{run_title(cfg)}, alpha {pair.alpha_low}/{pair.alpha_high}")
            log.info("pair %d/%d (%s): %s", i + 1, len(pairs), folder.name, job_line(results.rows))
            folders.append(folder)
            refits.append(refit_metrics(fits))
    log.info("Feature cache: %s", describe_cache(prepared.store.cache))
    if not prepared.trainer.is_global_zero:
        return {}
    read = read_runs(folders)
    head_row, lines, _ = summarise(read, out_dir)
    tables = [rows for _, rows in read]
    # the lead policy's figure (each costs a second or more; task.plots=always or task=compare on
    # pairs/*: every policy's)
    only = None if every else lead_policy([r for rows in tables for r in rows])
    drawn = heatmaps(tables, out_dir, draw, only)
    if not drawn:
        log.info(
            "No heatmaps: they show DEAR's bilateral grids with at least two values of alpha_low or "
            "alpha_high (here prune.mode=%s, %d pair(s))",
            p.mode,
            len(pairs),
        )
    print_grid(tables, [int(list(m.values())[-1].sum()) for m in masks])
    images = [out_dir / f for f in drawn if f.endswith(".png")]
    metrics = log_grid(prepared.loggers, read, refits, head_row, lines, images)
    log.info(
        "Wrote pairs/<index>_<alpha_low>_<alpha_high>/ for %d pair(s), %s (into %s when the run ends)",
        len(pairs),
        ", ".join(["compare.csv", "compare.md", *drawn]),
        cfg.paths.output_dir,
    )
    return metrics


def _means(rows: list[dict[str, str]], policy: str) -> list[dict[str, str]]:
    return [r for r in rows if r.get("threshold_policy", "logit0") == policy and r["subset"].startswith("mean")]


def print_grid(tables: list[list[dict[str, str]]], kept: list[int]) -> None:
    """The lead policy's mean R.Acc / F.Acc per setting: the base detector and the refit control once
    (the same in every pair), then DEAR and its random control per pair (`kept`: its channels)."""
    from rich.console import Console
    from rich.table import Table

    policy = lead_policy([r for rows in tables for r in rows])
    columns = list(dict.fromkeys((r["postprocess"], r["subset"]) for r in _means(tables[0], policy)))
    table = Table(title=f"alpha grid: mean R.Acc / F.Acc, threshold {policy}")
    for name in ("model", "alpha_low", "alpha_high", "kept"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for setting, subset in columns:
        table.add_column(setting if subset == "mean" else f"{setting} {subset.removeprefix('mean:')}", justify="right")

    def line(rows: list[dict[str, str]], model: str, first: list[str]) -> None:
        by = {(r["postprocess"], r["subset"]): r for r in _means(rows, policy) if r["model"] == model}
        if by:
            table.add_row(
                MODEL_NAMES.get(model, model),
                *first,
                *(f"{cell(by[c]['R.Acc'])} / {cell(by[c]['F.Acc'])}" if c in by else "" for c in columns),
            )

    line(tables[0], "base", ["", "", ""])
    line(tables[0], "refit", ["", "", ""])
    for rows, n in zip(tables, kept):
        for model in ("dear", "random"):
            line(rows, model, [rows[0]["alpha_low"], rows[0]["alpha_high"], str(n)])
    Console(width=max(120, Console().width)).print(table)


def log_grid(
    loggers: list[Any],
    read: list[tuple[Path, list[dict[str, str]]]],
    refits: list[dict[str, float]],
    head: list[str],
    lines: list[list[str]],
    images: list[Path],
) -> dict[str, float]:
    """To every logger: the comparison as a table (`grid`), the heatmaps, and per pair (a step each) its
    alphas, DEAR's and the random control's mean rows and each head's fit summary (`refits`, as a
    task=dear run logs them). Returns the pairs' logit-0 mean rows."""
    returned: dict[str, float] = {}
    for lg in loggers:
        if hasattr(lg, "log_table"):
            lg.log_table(key="grid", columns=head, data=lines)
        if hasattr(lg, "log_image"):
            for path in images:
                lg.log_image(key=path.stem, images=[str(path)])
    for step, ((folder, rows), refit) in enumerate(zip(read, refits)):
        values = {"grid/alpha_low": float(rows[0]["alpha_low"]), "grid/alpha_high": float(rows[0]["alpha_high"])}
        values |= {f"grid/{k}": v for k, v in refit.items()}
        for r in rows:
            if r["model"] in ("dear", "random") and r["subset"].startswith("mean"):
                policy = r.get("threshold_policy", "logit0")
                for k in ("AUC", "R.Acc", "F.Acc", "Acc"):
                    if not is_missing(r[k]):
                        values[f"grid/{r['model']}/{policy}/{r['postprocess']}/{r['subset']}/{k}"] = float(r[k])
                        if policy == "logit0":
                            returned[f"{folder.name}/{r['model']}/{r['postprocess']}/{r['subset']}/{k}"] = float(r[k])
        for lg in loggers:
            lg.log_metrics(values, step=step)
    save_loggers(loggers)
    return returned
