"""The tables of experiments/alpha_sweep/README.md from the sweeps' job folders (each job's
results.csv), as mean +- sample standard deviation over the seeds. Usage, from the project root:

    .venv/bin/python experiments/alpha_sweep/aggregate.py logs/grid logs/ablations
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def ms(values: list[float]) -> str:
    if not values:
        return ""
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def main(sweeps: list[Path]) -> None:
    for sweep in sweeps:
        groups: dict[tuple[str, str, str], list[list[dict[str, str]]]] = defaultdict(list)
        for path in sorted(sweep.glob("*/results.csv")):
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if r["subset"] == "mean"]
            groups[(rows[0]["prune_mode"], rows[0]["alpha_low"], rows[0]["alpha_high"])].append(rows)
        print(f"\n## {sweep} ({sum(len(v) for v in groups.values())} jobs)\n")
        print(
            "| prune | model | clean AUC | clean Acc | JPEG75 AUC | JPEG75 R.Acc / F.Acc / Acc | JPEG75 Acc calibrated "
            "| JPEG75 Acc oracle | Random control: JPEG75 AUC / Acc / oracle Acc |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for (mode, lo, hi), jobs in sorted(groups.items()):
            models = {r["model"] for r in jobs[0]}
            main_model = "dear" if "dear" in models else "random" if mode == "random" else "refit"

            def get(model: str, post: str, policy: str, metric: str) -> str:  # called in this iteration only
                return ms(
                    [
                        float(r[metric])
                        for rows in jobs  # noqa: B023
                        for r in rows
                        if (r["model"], r["postprocess"], r["threshold_policy"]) == (model, post, policy)
                    ]
                )

            m = main_model
            accs = " / ".join(get(m, "jpeg75", "logit0", k) for k in ("R.Acc", "F.Acc", "Acc"))
            control = ""
            if main_model == "dear" and "random" in models:
                control = " / ".join(
                    [
                        get("random", "jpeg75", "logit0", "AUC"),
                        get("random", "jpeg75", "logit0", "Acc"),
                        get("random", "jpeg75", "oracle", "Acc"),
                    ]
                )
            name = f"{mode} {lo}/{hi}" if lo else mode
            print(
                f"| {name} | {m} | {get(m, 'clean', 'logit0', 'AUC')} | {get(m, 'clean', 'logit0', 'Acc')} | "
                f"{get(m, 'jpeg75', 'logit0', 'AUC')} | {accs} | {get(m, 'jpeg75', 'calibrated', 'Acc')} | "
                f"{get(m, 'jpeg75', 'oracle', 'Acc')} | {control} |"
            )
        base = [r for rows in next(iter(groups.values())) for r in rows if r["model"] == "base"]
        for post in ("clean", "jpeg75"):
            sel = [r for r in base if r["postprocess"] == post]
            for policy in ("logit0", "calibrated", "oracle"):
                pick = [r for r in sel if r["threshold_policy"] == policy]
                print(
                    f"\nbase {post} {policy}: AUC {ms([float(r['AUC']) for r in pick])}, R.Acc / F.Acc / Acc "
                    + " / ".join(ms([float(r[k]) for r in pick]) for k in ("R.Acc", "F.Acc", "Acc"))
                )


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
