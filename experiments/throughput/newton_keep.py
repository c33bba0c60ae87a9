"""How often Newton should form a Hessian: the same head solves under each value of
`refit.newton.KEEP_IF_SHRINKS` (0: plain Newton, a Hessian every step), counting Hessians and loss
evaluations per solve and timing each, on the rows of a sweep's later jobs.

    python experiments/throughput/newton_keep.py [--grid=2] [--solves=3] [overrides]

Runs an n x n grid of the bench's alpha values through the real CLI in this process (give a filled
`cache.dir`, as for job_costs.py, without its `heads/`: the later jobs then solve their heads), keeps
the rows and masks of the first `--solves` Newton solves after the first job, and solves them again
under each setting. Prints per solve: Hessians, loss-and-gradient evaluations, their mean ms, and the
cost they make (Hessians x ms + evaluations x ms, the same per-call ms for every setting).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from job_costs import replace, run_grid  # this folder's: the same CLI sweep and wrappers

from dear_exp.bench import parse

SETTINGS = (0.0, 0.1, 0.25, 0.5, 0.75)


def capture(limit: int) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The arguments of up to `limit` Newton solves made after the sweep's first job."""
    import hydra.core.utils

    import dear_exp.tasks.dear  # noqa: F401  (every module that holds the two functions by name)
    from dear_exp.refit import newton

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    jobs = [0]
    run_job, solve = hydra.core.utils.run_job, newton.newton_fit

    def counting_job(*args: Any, **kwargs: Any) -> Any:
        jobs[0] += 1
        return run_job(*args, **kwargs)

    def keeping(*args: Any, **kwargs: Any) -> Any:
        if jobs[0] > 1 and len(calls) < limit:
            calls.append((args, kwargs))
        return solve(*args, **kwargs)

    replace(run_job, counting_job)
    replace(solve, keeping)
    return calls


def scan(calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> str:
    from dear_exp.refit import newton

    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    originals = {name: getattr(newton, name) for name in ("_data_hessian", "_objective")}

    def timed(name: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                counts[name] += 1
                seconds[name] += time.perf_counter() - start

        return wrapper

    rows = []
    try:
        for name in originals:
            setattr(newton, name, timed(name))
        per_setting = {}
        for keep in SETTINGS:
            newton.KEEP_IF_SHRINKS = keep
            before = Counter(counts)
            for args, kwargs in calls:
                newton.newton_fit(*args, **kwargs)
            per_setting[keep] = {k: (counts[k] - before[k]) / len(calls) for k in originals}
    finally:
        for name, fn in originals.items():
            setattr(newton, name, fn)
    ms = {k: 1000 * seconds[k] / counts[k] for k in originals}
    for keep, n in per_setting.items():
        cost = n["_data_hessian"] * ms["_data_hessian"] + n["_objective"] * ms["_objective"]
        rows.append(f"| {keep:g} | {n['_data_hessian']:.1f} | {n['_objective']:.1f} | {cost:.1f} |")
    head = (
        f"{len(calls)} solves; a Hessian {ms['_data_hessian']:.2f} ms, a loss-and-gradient evaluation "
        f"{ms['_objective']:.2f} ms (means over every setting)\n"
        "| KEEP_IF_SHRINKS | Hessians per solve | evaluations per solve | their cost, ms per solve |\n"
        "|---|---|---|---|"
    )
    return "\n".join([head, *rows])


def main() -> None:
    flags, overrides = parse(sys.argv[1:])
    calls = capture(int(flags.get("solves") or 3))
    run_grid(int(flags.get("grid") or 2), overrides, "none")
    if not calls:
        raise SystemExit("no Newton solve after the first job: give a cache without its heads/ (see the docstring)")
    print(scan(calls))


if __name__ == "__main__":
    main()
