"""`make bench`: what the feature cache buys, measured end to end through the real CLI.

1. one DEAR run (with its controls), cold cache;  2. a 5x5 alpha_low x alpha_high multirun, cold
cache (Hydra's basic launcher: the jobs run one after another in one process);  3. one online-mode
run, the reference's way (`head=reference head.mode=online`: Adam with a backbone pass at every
training step; `task.controls=false`, DEAR's head alone);  4. evaluation throughput against the
bare model at the same batches and sizes. Arguments are Hydra overrides for every run; the
default, `demo.scale=bench postprocess=robust`, is the demo with test images at 224/256 px
(benchmark-like sizes, where the backbone dominates a run's cost) under the five robustness
settings; `python -m dear_exp.bench demo.scale=demo` measures the miniature demo itself. Writes bench.json and bench.md under
logs/bench/<time>/ and prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

LOWS, HIGHS = "0.0,0.1,0.2,0.3,0.4", "0.6,0.7,0.8,0.9,1.0"


def timed(args: list[str], out: Path, name: str) -> float:
    """Wall seconds of `python -m dear_exp *args`; its output goes to <out>/<name>.txt."""
    start = time.perf_counter()
    with open(out / f"{name}.txt", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "dear_exp", *args], stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: bench step {name} failed (exit {proc.returncode}); see {out / f'{name}.txt'}")
    print(f"{name}: {seconds:.1f} s", flush=True)
    return seconds


def throughput(overrides: list[str]) -> dict[str, float]:
    """Images/s of evaluation extraction (data loading, post-processing, forward) and of the bare
    forward on the same batch shapes, with the cache off."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir

    from dear_exp.__main__ import CONF_DIR, quiet_libraries, register_resolvers
    from dear_exp.build import benchmark as benchmark_datamodule
    from dear_exp.build import ensure_demo
    from dear_exp.data.datamodules import resolve_workers
    from dear_exp.detectors import build_detector, preprocess_of
    from dear_exp.features import FeatureExtractor, extract, sizes_of

    register_resolvers()
    quiet_libraries()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("main", overrides=overrides)
    ensure_demo(cfg, [cfg.benchmark.root])
    detector = build_detector(cfg.detector).eval()
    benchmark = benchmark_datamodule(cfg, preprocess_of(cfg.detector))
    benchmark.setup("predict")
    datasets = benchmark.datasets
    n = sum(len(d) for d in datasets)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    extractor = FeatureExtractor(detector)
    workers = resolve_workers(cfg.num_workers)
    extract(trainer, extractor, datasets[:1], cfg.benchmark.batch_size, workers)  # warm-up
    start = time.perf_counter()
    extract(trainer, extractor, datasets, cfg.benchmark.batch_size, workers)
    pipeline = n / (time.perf_counter() - start)
    device = trainer.strategy.root_device
    extractor.to(device)
    shapes = []
    for ds in datasets:
        from dear_exp.data.samplers import SizeBucketBatchSampler

        sizes = sizes_of(ds)
        shapes += [(len(b), sizes[b[0]]) for b in SizeBucketBatchSampler(sizes, cfg.benchmark.batch_size).batches]
    batches = [
        (torch.randn(k, 3, h, w, device=device), torch.zeros(k), torch.arange(k), torch.zeros(k))
        for k, (w, h) in shapes
    ]
    import contextlib

    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if "bf16" in str(cfg.trainer.precision)
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        extractor.predict_step(batches[0], 0)
        start = time.perf_counter()
        for b in batches:
            extractor.predict_step(b, 0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        model_only = n / (time.perf_counter() - start)
    return {
        "images": n,
        "pipeline_images_per_s": pipeline,
        "model_only_images_per_s": model_only,
        "ratio": pipeline / model_only,
        "workers": workers,
        "device": str(device),
    }


def mean_rows(run_dir: Path) -> dict[str, dict[str, float]]:
    """The mean rows at logit 0 of a run's results.csv: {'<model> <setting>': {metric: value}}."""
    import csv

    out = {}
    for r in csv.DictReader(open(run_dir / "results.csv")):
        if r["subset"] == "mean" and r["threshold_policy"] in ("logit0", "calibrated"):
            out[f"{r['model']} {r['threshold_policy']} {r['postprocess']}"] = {
                k: round(float(r[k]), 1) for k in ("AUC", "R.Acc", "F.Acc", "Acc")
            }
    return out


# the robustness protocol DEAR is about (clean, JPEG 75, WebP 75, half-size resize, JPEG 50-95)
DEFAULT = ["demo.scale=bench", "postprocess=robust"]


def main() -> None:
    overrides = sys.argv[1:] or DEFAULT
    out = Path("logs/bench") / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    common = ["logger=csv", *overrides]
    # the demo's base detector (trained once, cached in .cache/demo) must exist before timing
    timed(
        [
            *common,
            "task=evaluate",
            "task.thresholds=[logit0]",
            "postprocess=clean",
            "cache.enabled=false",
            f"hydra.run.dir={out}/warmup",
        ],
        out,
        "warmup",
    )
    single = timed([*common, f"cache.dir={out}/cache_single", f"hydra.run.dir={out}/single"], out, "single")
    sweep = timed(
        [
            "-m",
            *common,
            f"prune.alpha_low={LOWS}",
            f"prune.alpha_high={HIGHS}",
            f"cache.dir={out}/cache_sweep",
            f"hydra.sweep.dir={out}/sweep",
        ],
        out,
        "sweep_5x5",
    )
    online = timed(
        [
            *common,
            "head=reference",
            "head.mode=online",
            "task.controls=false",
            f"cache.dir={out}/cache_online",
            f"hydra.run.dir={out}/online",
        ],
        out,
        "single_online",
    )
    rate = throughput([f"paths.root_dir={os.getcwd()}", *overrides])
    result = {
        "overrides": overrides,
        "single_s": single,
        "sweep_5x5_s": sweep,
        "sweep_ratio": sweep / single,
        "sweep_job_s": (sweep - single) / 24,
        "single_online_s": online,
        "online_sweep_estimate_ratio": 25 * online / single,
        **rate,
        "results_cached": mean_rows(out / "single"),
        "results_online": mean_rows(out / "online"),
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    table = "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            f"| one DEAR run, cold cache | {single:.1f} s |",
            f"| 5x5 alpha sweep, cold cache | {sweep:.1f} s ({sweep / single:.2f}x one run; goal <= 1.3x) |",
            f"| each sweep job after the first (from the cache) | {(sweep - single) / 24:.2f} s |",
            f"| one online-mode run | {online:.1f} s (a 25-job online sweep: ~{25 * online / single:.0f}x one cached run) |",
            f"| evaluation images/s (data path + model) | {rate['pipeline_images_per_s']:.0f} |",
            f"| bare model images/s, same batches | {rate['model_only_images_per_s']:.0f} "
            f"({100 * rate['ratio']:.0f} % reached; goal >= 90 %) |",
            f"| images, workers, device | {rate['images']}, {rate['workers']}, {rate['device']} |",
        ]
    )
    quality = [
        "",
        "| mean over subsets | newton, cached: AUC / R.Acc / F.Acc / Acc | adam, online (reference): "
        "AUC / R.Acc / F.Acc / Acc |",
        "|---|---|---|",
    ]
    for key, cached in result["results_cached"].items():
        online_row = result["results_online"].get(key, {})
        quality.append(
            f"| {key} | {' / '.join(str(v) for v in cached.values())} | "
            f"{' / '.join(str(v) for v in online_row.values())} |"
        )
    table += "\n\n" + "\n".join(quality[1:])
    (out / "bench.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
