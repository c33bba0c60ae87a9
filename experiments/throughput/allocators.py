"""Issue 15's workload under each way of handling CPU memory, side by side.

`task=evaluate detector=corvi` (stride-1 ResNet-50, random weights) on 64 PNG images of 224-320 px
(32 real, 32 fake; every size different, so batches of one), cache off, one process per run, measured
by the kernel (wait4: wall, user and system CPU seconds, peak memory of the process and its workers).
The variants run interleaved, `--repeats` times each.

    python experiments/throughput/allocators.py [--repeats=2] [--out=logs/allocators]

Prints a markdown table (mean and sd over the repeats) and writes allocators.json.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from dear_exp.bench import measured, parse

LIBS = Path("/usr/lib/x86_64-linux-gnu")
GLIBC = ["memory.malloc=system", "memory.huge_pages=false"]
ISSUE_ENV = {  # the issue's first finding: glibc told by environment variables to keep freed memory
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
}
# name: (overrides, environment); a preloaded allocator only where the system has it (never required)
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "glibc defaults (memory.malloc=system memory.huge_pages=false)": (GLIBC, {}),
    "glibc environment variables of the issue": (GLIBC, ISSUE_ENV),
    "huge pages only (memory.malloc=system)": (["memory.malloc=system"], {}),
    "reuse only (memory.huge_pages=false)": (["memory.huge_pages=false"], {}),
    "reuse of every block + huge pages (memory.keep_below_mb=null)": (["memory.keep_below_mb=null"], {}),
    "default: reuse below 256 MiB + huge pages": ([], {}),
}
for lib, name in (("libtcmalloc_minimal.so.4", "tcmalloc"), ("libjemalloc.so.2", "jemalloc")):
    if (LIBS / lib).is_file():
        VARIANTS[f"{name} preloaded (LD_PRELOAD; left alone by memory.py)"] = ([], {"LD_PRELOAD": str(LIBS / lib)})


def workload(root: Path) -> tuple[Path, Path]:
    """The 64 images and a random-weight Corvi checkpoint, seeded (built once)."""
    import torch
    from PIL import Image
    from skimage import data as photos

    from dear_exp.detectors.resnet import Resnet50Detector

    data, checkpoint = root / "data", root / "corvi_random.pth"
    if checkpoint.is_file():
        return data, checkpoint
    sources = [photos.astronaut(), photos.coffee(), photos.rocket()]
    rng = np.random.default_rng(0)
    for label, sub in (("real", "real/photos"), ("fake", "fake/gen_a")):
        folder = data / sub
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(32):
            src = sources[i % len(sources)]
            h, w = (int(v) for v in rng.integers(224, 321, 2))
            y, x = int(rng.integers(0, src.shape[0] - h)), int(rng.integers(0, src.shape[1] - w))
            img = src[y : y + h, x : x + w].astype(np.int16)
            if label == "fake":
                img = img + rng.integers(-4, 5, img.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    torch.manual_seed(0)
    torch.save(Resnet50Detector(stem_stride=1).state_dict(), checkpoint)
    return data, checkpoint


def cell(runs: list[dict[str, float]], key: str, scale: float = 1.0) -> str:
    """Mean ± sd over the repeats."""
    values = [scale * r[key] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0f} ± {sd:.0f}"


def command(data: Path, checkpoint: Path) -> list[str]:
    """The overrides every variant shares (composed by tests/test_recipes.py)."""
    return [
        "task=evaluate",
        "detector=corvi",
        f"detector.checkpoint={checkpoint}",
        "benchmark=demo",
        f"benchmark.root={data}",
        "~benchmark.layout.subsets.gen_b",
        "~benchmark.layout.subsets.gen_c",
        "benchmark.batch_size=16",
        "postprocess=clean",
        "cache.enabled=false",
        "logger=csv",
        "task.thresholds=[logit0]",
        "task.plots=never",
    ]


def main() -> None:
    flags, _ = parse(sys.argv[1:])
    repeats, out = int(flags.get("repeats") or 2), Path(flags.get("out") or "logs/allocators")
    out.mkdir(parents=True, exist_ok=True)
    data, checkpoint = workload(out / "workload")
    base = command(data, checkpoint)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for r in range(repeats):
        for i, (name, (overrides, env)) in enumerate(VARIANTS.items()):
            run_dir = out / f"run{r}_{i}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [sys.executable, "-m", "dear_exp", *base, *overrides, f"hydra.run.dir={run_dir}"]
            result = measured(cmd, out / f"run{r}_{i}.txt", env)
            runs[name].append(result)
            print(f"{name} [{r + 1}/{repeats}]: {json.dumps({k: round(v, 2) for k, v in result.items()})}", flush=True)
    (out / "allocators.json").write_text(json.dumps({"when": time.strftime("%F %T"), "runs": runs}, indent=2))
    print("\n| variant | wall s | user s | system s | system share | peak MiB |\n|---|---|---|---|---|---|")
    for name, rs in runs.items():
        cells = [cell(rs, k) for k in ("wall_s", "user_s", "sys_s")] + [
            cell(rs, "sys_share", 100),
            cell(rs, "peak_mib"),
        ]
        print(f"| {name} | {' | '.join(cells[:4])} % | {cells[4]} |")


if __name__ == "__main__":
    main()
