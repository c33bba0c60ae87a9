"""Tables of experiments/fragility/README.md from the study's run folders: fragility by band
(fragility.json), cue drive by band (cues.json) and DEAR against its controls (results.csv), as
mean +- sample standard deviation over the seeds. Usage, from the project root:

    .venv/bin/python experiments/fragility/aggregate.py logs/study
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path


def ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def ms1(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def main(study: Path) -> None:
    frag = [json.loads(p.read_text()) for p in sorted(study.glob("fragility_seed*/fragility.json"))]
    print(f"## fragility by band ({len(frag)} seeds)\n")
    print("| setting | low | middle | high | extremes - middle | low vs mid | high vs mid | Spearman | verdicts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s, first in frag[0]["settings"].items():
        runs = [f["settings"][s] for f in frag]
        cells = [ms([r[b]["mean"] for r in runs]) for b in ("low", "middle", "high", "extremes_minus_middle")]
        sides = ["/".join(r["bands_vs_middle"][b] for r in runs) for b in ("low", "high")]
        verdicts = "/".join(r["verdict"].split(" at ")[0] for r in runs)
        print(
            f"| {s} ({first['compared']}) | "
            + " | ".join(cells + sides)
            + f" | {ms([r['spearman'] for r in runs])} | {verdicts} |"
        )

    cues = [json.loads(p.read_text()) for p in sorted(study.glob("fragility_seed*/cues.json"))]
    if cues:
        print(f"\n## |drive| by band ({len(cues)} seeds, {cues[0]['probes_per_cue']} probes per cue)\n")
        print("| cue | low | middle | high | low vs mid | high vs mid | dominant in low / middle / high (%) |")
        print("|---|---|---|---|---|---|---|")
        for cue in cues[0]["cues"]:
            letter = cues[0]["letters"][cue]
            runs = [c["cues"][cue] for c in cues]
            cells = [ms([r[b]["mean"] for r in runs]) for b in ("low", "middle", "high")]
            sides = ["/".join(r["bands_vs_middle"][b] for r in runs) for b in ("low", "high")]
            share = " / ".join(
                ms1([100 * (r["dominant_share"][b] or 0.0) for r in runs]) for b in ("low", "middle", "high")
            )
            print(f"| {cue} ({letter}) | " + " | ".join(cells + sides) + f" | {share} |")

    rows = []
    for p in sorted(study.glob("dear_seed*/results.csv")):
        with p.open() as f:
            rows += [r for r in csv.DictReader(f) if r["subset"] == "mean"]
    if rows:
        print("\n## DEAR against its controls (means over the generators)\n")
        print("| setting | model | AUC | R.Acc / F.Acc / Acc at logit 0 | Acc, calibrated | Acc, oracle |")
        print("|---|---|---|---|---|---|")
        settings = list(dict.fromkeys(r["postprocess"] for r in rows))
        for s in settings:
            for model in ("base", "refit", "random", "dear"):

                def pick(policy: str, metric: str) -> str:  # called in this iteration only
                    sel = [
                        r
                        for r in rows
                        if (r["model"], r["postprocess"], r["threshold_policy"]) == (model, s, policy)  # noqa: B023
                    ]
                    return ms1([float(r[metric]) for r in sel])

                at0 = " / ".join(pick("logit0", m) for m in ("R.Acc", "F.Acc", "Acc"))
                print(
                    f"| {s} | {model} | {pick('logit0', 'AUC')} | {at0} | {pick('calibrated', 'Acc')} | {pick('oracle', 'Acc')} |"
                )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
