"""Where a sweep job's time goes: the real CLI's 5 x 5 alpha multirun in this process, with a wall-clock
timer around each stage of a job, and each stage's mean milliseconds over the jobs after the first.

    python experiments/throughput/job_costs.py [--grid=5] [overrides]

Give a `cache.dir` that a run has filled (`python -m dear_exp cache.dir=X` first), so that every job
reads its rows from the cache, as a sweep's later jobs do; a `heads` cache left from an earlier sweep
makes the head fits cache hits too (copy the cache without its `heads/` for jobs that solve). The
stages nest (a job's own time includes the task's, which includes the refit's): a stage's dots say
how deep it lies. Timers are wrappers around the stages' functions, put wherever a module holds one
by name; a job's time is Hydra's `run_job`, from its config files to its return. Wrappers add about a
microsecond a call.
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections import defaultdict
from typing import Any

from dear_exp.bench import HIGHS, LOWS, parse

# (label, module, attribute): the stages of a `task=dear` job, outermost first; indented labels run
# inside the one above them
STAGES = [
    ("Hydra's job (config files, logging, the task)", "hydra.core.utils", "run_job"),
    ("  Hydra: the job's .hydra/ config files", "hydra.core.utils", "_save_config"),
    ("  the task: run_task", "dear_exp.__main__", "run_task"),
    ("    config checks (schema.validate)", "dear_exp.schema", "validate"),
    ("    config.yaml, resolved", "dear_exp.__main__", "write_config"),
    ("    task=dear", "dear_exp.tasks.dear", "run"),
    ("      data index: training and validation folders", "dear_exp.data.folders", "labelled_samples"),
    ("      data index: inpaint pairs", "dear_exp.data.folders", "inpaint_pairs"),
    ("      data index: benchmark", "dear_exp.data.benchmarks.base", "load_index"),
    ("      loggers: the config as hyperparameters", "dear_exp.build", "log_config"),
    ("      Lightning trainer", "dear_exp.build", "make_trainer"),
    ("      cached rows (keys, reads)", "dear_exp.features", "FeatureStore.rows"),
    ("      head fits (cache hits or Newton solves)", "dear_exp.refit", "refit_heads"),
    ("        Newton solves", "dear_exp.refit.newton", "newton_fit"),
    ("          Hessians (formed, float32)", "dear_exp.refit.newton", "_data_hessian"),
    ("          loss and gradient evaluations (float64)", "dear_exp.refit.newton", "_objective"),
    ("      calibration thresholds", "dear_exp.evaluate", "calibration_thresholds"),
    ("      evaluation from cached rows", "dear_exp.evaluate", "evaluate"),
    ("        metrics", "dear_exp.metrics", "evaluate_predictions"),
    ("        scores.csv", "dear_exp.evaluate", "write_scores"),
    ("      results.csv, results.md, the console's tables", "dear_exp.report", "write_report"),
    ("      refit.csv, heads, RAD files", "dear_exp.report", "save_refit"),
]


CALLS = "calls: "  # a job row's key for a stage's number of calls (the stage's label after it)


def install(jobs: list[dict[str, float]]) -> None:
    """A timer on every stage, wherever a module holds the function by name (`from x import f`); each
    `run_job` call starts a new row in `jobs`."""
    importlib.import_module("dear_exp.tasks.dear")  # every stage's module, and those that import them
    for label, module, attribute in STAGES:
        owner: Any = importlib.import_module(module)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
        wrapper = _timer(jobs, label, fn, starts_job=label == STAGES[0][0])
        if path:  # a method: its class
            setattr(owner, name, wrapper)
            continue
        replace(fn, wrapper)


def replace(fn: Any, wrapper: Any) -> None:
    """`fn` by `wrapper` wherever a loaded module holds it by name (its own module, `from x import f`)."""
    for held in list(sys.modules.values()):
        for key, value in list(vars(held).items()):
            if value is fn:
                setattr(held, key, wrapper)


def _timer(jobs: list[dict[str, float]], label: str, fn: Any, starts_job: bool) -> Any:
    """`fn`, its time added to the current job's row (`starts_job`: a new row first)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if starts_job:
            jobs.append(defaultdict(float))
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if jobs:
                jobs[-1][label] += time.perf_counter() - start
                jobs[-1][CALLS + label] += 1

    return wrapper


def table(jobs: list[dict[str, float]]) -> str:
    later = jobs[1:]
    lines = ["| stage | ms per job after the first | calls per job |", "|---|---|---|"]
    for label, _, _ in STAGES:
        ms, calls = (sum(j.get(key, 0.0) for j in later) / max(len(later), 1) for key in (label, CALLS + label))
        name = label.strip()
        depth = (len(label) - len(label.lstrip())) // 2
        lines.append(f"| {'· ' * depth}{name} | {1000 * ms:.1f} | {calls:.1f} |")
    return "\n".join(lines)


def run_grid(n: int, overrides: list[str], logger: str) -> None:
    """The real CLI's multirun over an n x n grid of the bench's alpha values, in this process."""
    sys.argv = [
        "dear_exp",
        "-m",
        f"logger={logger}",
        *overrides,
        f"prune.alpha_low={','.join(LOWS.split(',')[:n])}",
        f"prune.alpha_high={','.join(HIGHS.split(',')[:n])}",
    ]
    from dear_exp.__main__ import entry

    try:
        entry()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def main() -> None:
    flags, overrides = parse(sys.argv[1:])
    jobs: list[dict[str, float]] = []
    install(jobs)
    run_grid(int(flags.get("grid") or 5), overrides, "csv")
    print(f"{len(jobs)} jobs; each stage's mean over the {len(jobs) - 1} after the first:")
    print(table(jobs))


if __name__ == "__main__":
    main()
