"""`make bench`: what a user feels, measured end to end through the real CLI.

1. one DEAR run (with its controls), cold cache, and 2. a 5x5 alpha_low x alpha_high multirun, cold
cache (Hydra's basic launcher: the jobs one after another in one process): the sweep's cost against
one run, and, free of the drift between two processes, against itself less its 24 later jobs; each
job's seconds and its seconds solving heads, from its log; then the same 25 pairs as one
task=dear_grid run, cold cache, against the one run and against itself less its 24 later pairs.
Each as its own process, timed with its CPU seconds (user, system) and peak memory.
3. per detector, with random weights (no download): images/s of evaluation (data loading,
post-processing, forward) against the bare model on the same batch shapes, images/s of task=dear's
feature extraction (augmented training views), the CPU seconds of each (user, system: the share the
kernel takes) and the process's peak memory; one detector also with glibc's own allocation
(`memory.malloc=system memory.huge_pages=false`), for the difference memory.py makes.
4. with `--online`: one online-mode run, the reference's way (`head=reference head.mode=online`).

Arguments: Hydra overrides for every run; the default, `demo.scale=bench postprocess=robust`, is the
demo with test images at 224/256 px under the five robustness settings (overrides given replace it
whole: `make bench ARGS="demo.scale=bench postprocess=robust threads=1"`; the per-detector passes
always use `postprocess=clean`); `python -m dear_exp.bench
demo.scale=demo` measures the miniature demo. Flags: `--detectors=npr,corvi` (default: one of each
architecture; `none` for the sweep alone), `--images=N` (per benchmark source and detector, default
16: 64 test images on the demo; the training views: a probe of as many, then a pass of about 10 s),
`--online`, `--no-sweep`. Writes bench.json and bench.md under logs/bench/<time>/ and prints the table.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LOWS, HIGHS = "0.0,0.1,0.2,0.3,0.4", "0.6,0.7,0.8,0.9,1.0"
# one detector per architecture (rajan is corvi's, dear_r dear_c's, cnnspot_p01 cnnspot's); those that
# centre-crop to 224 px (CLIP, CNNSpot's protocol) take 224 px training views too
DETECTORS = ("npr", "cnnspot", "corvi", "dear_c", "generic", "ufd", "c2p_clip")
EXTRA = {name: ["augment=crop224"] for name in ("ufd", "c2p_clip", "cnnspot", "cnnspot_p01")}
GLIBC_DEFAULTS = ["memory.malloc=system", "memory.huge_pages=false"]
# the robustness protocol DEAR is about (clean, JPEG 75, WebP 75, half-size resize, JPEG 50-95)
DEFAULT = ["demo.scale=bench", "postprocess=robust"]


def measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a command (its output to `log`; `env` added to this environment): wall seconds, user and
    system CPU seconds and peak memory (MiB) of it and the processes it waited for (DataLoader
    workers), from the kernel (wait4)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: bench step failed (exit {proc.returncode}): {' '.join(cmd)}; see {log}")
    return {
        "wall_s": seconds,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "sys_share": usage.ru_stime / max(usage.ru_utime + usage.ru_stime, 1e-9),
        "peak_mib": usage.ru_maxrss / 1024,
    }


def timed(args: list[str], out: Path, name: str) -> dict[str, float]:
    """`python -m dear_exp *args`, measured; its output goes to <out>/<name>.txt."""
    result = measured([sys.executable, "-m", "dear_exp", *args], out / f"{name}.txt")
    print(f"{name}: {result['wall_s']:.1f} s", flush=True)
    return result


def _stamp(line: str) -> float:
    from datetime import datetime

    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _job_lines(sweep: Path) -> list[list[str]]:
    """Each multirun job's timestamped log lines, in job order."""
    logs = sorted(sweep.glob("*/*.log"), key=lambda p: int(p.parent.name))
    return [[x for x in p.read_text().splitlines() if x.startswith("[20")] for p in logs]


def job_seconds(sweep: Path) -> list[float]:
    """Each multirun job's seconds, from its log's timestamps: the next job's first line less this
    job's first line (the last job: to its own last line), in job order."""
    lines = _job_lines(sweep)
    starts = [_stamp(ls[0]) for ls in lines] + [_stamp(lines[-1][-1])]
    return [b - a for a, b in itertools.pairwise(starts)]


def fit_seconds(sweep: Path) -> list[float]:
    """Each multirun job's seconds of solving heads (a `heads` cache miss: from its line to the next),
    in job order: what a job after the first cannot avoid."""
    out = []
    for lines in _job_lines(sweep):
        out.append(sum(_stamp(b) - _stamp(a) for a, b in itertools.pairwise(lines) if "Cache miss heads" in a))
    return out


PAIR_LINE = re.compile(r"\] - pair \d+/\d+ \(")


def pair_seconds(run: Path) -> list[float]:
    """Each alpha pair's seconds in a task=dear_grid run, from its log's `pair i/n` lines: the first
    from the log's first line (it holds the dissection and the extraction: one run's work), each later
    one from the pair line before it."""
    (log,) = run.glob("*.log")
    lines = [x for x in log.read_text().splitlines() if x.startswith("[20")]
    stamps = [_stamp(lines[0])] + [_stamp(x) for x in lines if PAIR_LINE.search(x)]
    return [b - a for a, b in itertools.pairwise(stamps)]


def against(result: dict[str, Any], name: str, parts: list[float]) -> tuple[float, float, float]:
    """A sweep's (`name`'s) wall time against the one run; against itself less its later `parts` (jobs
    or pairs after the first: what is left is start-up, composition and one run's work), free of this
    machine's drift between two processes (tens of per cent between runs); and a later part's mean
    seconds."""
    wall, later = result[name]["wall_s"], sum(parts[1:])
    return wall / result["single"]["wall_s"], wall / (wall - later), later / len(parts[1:])


def random_detector(cfg: Any) -> Any:
    """`detector.net` with random weights (a CLIP tower initialised, not zeros): speed, not scores."""
    import inspect

    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    net = OmegaConf.to_container(cfg.detector.net, resolve=True)
    assert isinstance(net, dict)
    if "init_weights" in inspect.signature(get_class(net["_target_"])).parameters:
        net["init_weights"] = True
    return instantiate(net).eval()


def _cpu() -> tuple[float, float]:
    """User and system CPU seconds of this process and its reaped children (the DataLoader workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime


def _pass(trainer: Any, extractor: Any, datasets: list[Any], batch_size: int, workers: int) -> dict[str, float]:
    """One extraction pass, timed: images/s and its CPU seconds."""
    from dear_exp.features import extract

    n = sum(len(d) for d in datasets)
    user, system = _cpu()
    start = time.perf_counter()
    extract(trainer, extractor, datasets, batch_size, workers)
    seconds = time.perf_counter() - start
    user2, system2 = _cpu()
    return {
        "images_per_s": n / seconds,
        "user_s": user2 - user,
        "sys_s": system2 - system,
        "sys_share": (system2 - system) / max(user2 - user + system2 - system, 1e-9),
    }


def throughput(overrides: list[str], images: int) -> dict[str, Any]:
    """One detector (random weights) on the overrides' data: evaluation, bare model and training-view
    extraction, in this process (started for it alone: its memory settings apply from the start)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dear_exp.__main__ import CONF_DIR, register_resolvers
    from dear_exp.memory import set_huge_pages

    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("main", overrides=[*overrides, "postprocess=clean", f"benchmark.max_sample={images}"])
    OmegaConf.update(cfg, "paths.output_dir", str(Path("logs/bench/throughput").resolve()), force_add=True)
    set_huge_pages(cfg.memory.huge_pages is True)  # before torch is imported, as the command line does
    import lightning as L
    import torch
    from torch.utils.data import Subset

    from dear_exp import memory, schema
    from dear_exp.__main__ import quiet_libraries, set_threads
    from dear_exp.build import benchmark as benchmark_datamodule
    from dear_exp.build import ensure_demo, train_data
    from dear_exp.data.datamodules import resolve_workers
    from dear_exp.data.datasets import EvalImages
    from dear_exp.data.samplers import SizeBucketBatchSampler
    from dear_exp.detectors import preprocess_of
    from dear_exp.features import FeatureExtractor, sizes_of
    from dear_exp.progress import ReturnFreeMemory
    from dear_exp.refit.rows import Views

    quiet_libraries()
    schema.validate(cfg)
    set_threads(cfg.threads)
    allocator = memory.configure(schema.build(cfg.memory, "memory"))
    ensure_demo(cfg, [cfg.benchmark.root, cfg.train_data.root])
    detector = random_detector(cfg)
    preprocess = preprocess_of(cfg.detector)
    benchmark = benchmark_datamodule(cfg, preprocess)
    benchmark.setup("predict")
    train = train_data(cfg, preprocess, cfg.augment)
    train.setup("fit")
    assert train.train_set is not None
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ReturnFreeMemory()],
    )
    extractor = FeatureExtractor(detector)
    workers, batch = resolve_workers(cfg.num_workers), cfg.benchmark.batch_size
    datasets = benchmark.datasets
    views = Views(train.train_set, 1, cfg.seed)
    first = datasets[0]
    _pass(trainer, extractor, [EvalImages(first.samples[:2], first.chain, first.preprocess)], batch, workers)  # warm-up
    evaluation = _pass(trainer, extractor, datasets, batch, workers)
    # training views: a probe sizes the timed pass to about 10 s (at least the probe's count), so the
    # workers' start, which a real extraction of thousands of views amortises, does not dominate it
    probe_n = min(images * len(datasets), len(views))
    probe = _pass(trainer, extractor, [Subset(views, range(probe_n))], cfg.train_data.batch_size, workers)
    training_views = Subset(views, range(min(len(views), max(probe_n, int(10 * probe["images_per_s"])))))
    extraction = _pass(trainer, extractor, [training_views], cfg.train_data.batch_size, workers)
    device = trainer.strategy.root_device
    extractor.to(device)
    shapes = [
        (len(b), sizes_of(ds)[b[0]]) for ds in datasets for b in SizeBucketBatchSampler(sizes_of(ds), batch).batches
    ]
    with torch.inference_mode():
        start = time.perf_counter()
        for k, (w, h) in shapes:
            extractor.predict_step((torch.randn(k, 3, h, w, device=device),) + (torch.zeros(k),) * 3, 0)
            memory.return_free()
        if device.type == "cuda":
            torch.cuda.synchronize()
        model_only = sum(k for k, _ in shapes) / (time.perf_counter() - start)
    import resource

    return {
        "detector": cfg.detector.name,
        "images": sum(len(d) for d in datasets),
        "training_views": len(training_views),
        "training_views_probe": probe_n,
        "evaluation": evaluation,
        "model_only_images_per_s": model_only,
        "evaluation_vs_model": evaluation["images_per_s"] / model_only,
        "extraction": extraction,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "memory_returns": memory.returns(),
        "allocator": allocator,
        "workers": workers,
        "device": str(device),
    }


def detector_rows(overrides: list[str], detectors: list[str], images: int, out: Path) -> list[dict[str, Any]]:
    """Each detector's throughput in its own process (`python -m dear_exp.bench --throughput ...`),
    with that process's whole CPU seconds and peak memory; corvi again with glibc's own allocation."""
    runs: list[tuple[str, list[str]]] = [(d, []) for d in detectors] + (
        [("corvi", GLIBC_DEFAULTS)] if "corvi" in detectors else []
    )
    rows = []
    for name, extra in runs:
        tag = name + ("-glibc" if extra else "")
        result = out / f"throughput_{tag}.json"
        args = [f"detector={name}", *overrides, *EXTRA.get(name, []), *extra]
        cmd = [sys.executable, "-m", "dear_exp.bench", "--throughput", f"--images={images}", f"--json={result}", *args]
        process = measured(cmd, out / f"throughput_{tag}.txt")
        row = json.loads(result.read_text()) | {"setting": tag, "process": process}
        print(
            f"{tag}: evaluation {row['evaluation']['images_per_s']:.1f} images/s "
            f"({100 * row['evaluation']['sys_share']:.0f} % system), extraction "
            f"{row['extraction']['images_per_s']:.1f} images/s, peak {process['peak_mib']:.0f} MiB",
            flush=True,
        )
        rows.append(row)
    return rows


def mean_rows(run_dir: Path) -> dict[str, dict[str, float]]:
    """The mean rows at logit 0 and the calibrated threshold of a run's results.csv."""
    import csv

    out = {}
    with open(run_dir / "results.csv") as f:
        for r in csv.DictReader(f):
            if r["subset"] == "mean" and r["threshold_policy"] in ("logit0", "calibrated"):
                out[f"{r['model']} {r['threshold_policy']} {r['postprocess']}"] = {
                    k: round(float(r[k]), 1) for k in ("AUC", "R.Acc", "F.Acc", "Acc")
                }
    return out


def table(result: dict[str, Any]) -> str:
    """bench.md: the sweep's cost, then a line per detector."""
    lines = ["| measure | value |", "|---|---|"]
    single = result["single"]
    lines.append(
        f"| one DEAR run, cold cache | {single['wall_s']:.1f} s (user {single['user_s']:.0f} s, system "
        f"{single['sys_s']:.0f} s, peak {single['peak_mib']:.0f} MiB) |"
    )
    if "sweep" in result:
        sweep = result["sweep"]
        lines += [
            f"| 5x5 alpha sweep, cold cache | {sweep['wall_s']:.1f} s ({result['sweep_ratio']:.2f}x one run; "
            f"{result['sweep_ratio_in_process']:.2f}x itself less its later jobs) |",
            f"| each sweep job after the first (its log) | {result['sweep_later_job_s']:.2f} s, of which solving "
            f"heads {result['sweep_later_fit_s']:.2f} s |",
            f"| the same 5x5 pairs in one run (task=dear_grid), cold cache | {result['grid']['wall_s']:.1f} s "
            f"({result['grid_ratio']:.2f}x one run; {result['grid_ratio_in_process']:.2f}x itself less its later pairs) |",
            f"| each pair after the first (its log) | {result['grid_later_pair_s']:.2f} s |",
        ]
    if "online" in result:
        lines.append(f"| one online-mode run | {result['online']['wall_s']:.1f} s |")
    lines += [
        "",
        "| detector (random weights) | evaluation images/s | bare model images/s | evaluation/model | "
        "extraction images/s | system share (evaluation / extraction) | process user / system s | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["detectors"]:
        ev, ex, p = r["evaluation"], r["extraction"], r["process"]
        lines.append(
            f"| {r['setting']} | {ev['images_per_s']:.1f} | {r['model_only_images_per_s']:.1f} | "
            f"{100 * r['evaluation_vs_model']:.0f} % | {ex['images_per_s']:.1f} | {100 * ev['sys_share']:.0f} % / "
            f"{100 * ex['sys_share']:.0f} % | {p['user_s']:.0f} / {p['sys_s']:.0f} | {p['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    flags = dict((a[2:].split("=", 1) + [""])[:2] for a in argv if a.startswith("--"))
    return flags, [a for a in argv if not a.startswith("--")]


def main() -> None:
    flags, overrides = parse(sys.argv[1:])
    images = int(flags.get("images") or 16)
    if "throughput" in flags:  # the child process of detector_rows
        Path(flags["json"]).write_text(json.dumps(throughput(overrides, images), indent=2))
        return
    overrides = overrides or DEFAULT
    detectors = flags["detectors"].split(",") if flags.get("detectors") else list(DETECTORS)
    detectors = [] if detectors == ["none"] else detectors
    out = Path("logs/bench") / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    common = ["logger=csv", *overrides]
    # the demo's base detector (trained once, cached in .cache/demo) must exist before timing
    warm = [*common, "task=evaluate", "task.thresholds=[logit0]", "postprocess=clean", "cache.enabled=false"]
    timed([*warm, f"hydra.run.dir={out}/warmup"], out, "warmup")
    result: dict[str, Any] = {"overrides": overrides, "cpus": os.cpu_count()}
    result["single"] = timed([*common, f"cache.dir={out}/cache_single", f"hydra.run.dir={out}/single"], out, "single")
    if "no-sweep" not in flags:
        sweep_args = [f"prune.alpha_low={LOWS}", f"prune.alpha_high={HIGHS}", f"cache.dir={out}/cache_sweep"]
        result["sweep"] = timed(["-m", *common, *sweep_args, f"hydra.sweep.dir={out}/sweep"], out, "sweep_5x5")
        result["sweep_job_s"] = (result["sweep"]["wall_s"] - result["single"]["wall_s"]) / 24
        jobs, fits = job_seconds(out / "sweep"), fit_seconds(out / "sweep")
        result["sweep_jobs_s"], result["sweep_fits_s"] = jobs, fits
        result["sweep_ratio"], result["sweep_ratio_in_process"], result["sweep_later_job_s"] = against(
            result, "sweep", jobs
        )
        result["sweep_later_fit_s"] = sum(fits[1:]) / len(jobs[1:])
        # the same 25 pairs in one process (task=dear_grid), against the one run and against itself
        # less its 24 later pairs
        grid_args = ["task=dear_grid", f"prune.alpha_low=[{LOWS}]", f"prune.alpha_high=[{HIGHS}]"]
        grid = [*common, *grid_args, f"cache.dir={out}/cache_grid", f"hydra.run.dir={out}/grid"]
        result["grid"] = timed(grid, out, "grid_5x5")
        result["grid_pairs_s"] = pairs = pair_seconds(out / "grid")
        result["grid_ratio"], result["grid_ratio_in_process"], result["grid_later_pair_s"] = against(
            result, "grid", pairs
        )
    if "online" in flags:
        online = ["head=reference", "head.mode=online", "task.controls=false", f"cache.dir={out}/cache_online"]
        result["online"] = timed([*common, *online, f"hydra.run.dir={out}/online"], out, "single_online")
        result["results_online"] = mean_rows(out / "online")
    result["results_cached"] = mean_rows(out / "single")
    result["detectors"] = detector_rows(overrides, detectors, images, out)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    text = table(result)
    (out / "bench.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out / 'bench.json'}")


if __name__ == "__main__":
    main()
