"""`make bench-gpu`: the GPU checks, one script for the day a GPU is lent (under 10 minutes on one).

1. bf16 autocast against fp32, for every detector config (random weights; a seeded batch at 256x256,
   the CLIP detectors at their 224 crop): the relative error ||bf16 - fp32|| / ||fp32|| of the pooled
   features (what RAD and the refit read), and the logits' error in units of their RMS or of 1 logit,
   whichever is larger (a random head's logits nearly cancel: 0.05 for `generic`, where bf16's 0.005
   reads as 10 % of nothing); a detector passes when both are <= TOL.
2. images/s per detector at 256x256 (CLIP: 224), bf16 autocast and fp32, batches of 32, channels_last
   as FeatureExtractor runs them on CUDA.
3. the GPU sweep ratio: `python -m dear_exp.bench --detectors=none trainer=gpu demo.scale=bench
   postprocess=robust` (one run, the 5x5 sweep).
4. fp16 seconds per image of the tiny inpainting pipeline (dear_exp.inpaint.tiny) through
   task=make_inpaint at 512 px and 50 steps: (time of 17 images - time of 1 image) / 16.

Writes logs/bench/gpu-<time>/bench_gpu.json and prints it. `--cpu` runs 1 and 2 on the CPU (bf16
autocast exists there too) with small batches and skips 3 and 4, saying so in the file: what the test
suite runs, since CI has no GPU. `--detectors=npr,corvi` limits 1 and 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOL = 0.05  # bf16 keeps 8 bits of mantissa (~0.4 % a rounding); deep nets accumulate to ~1-3 %
DETECTORS = (
    "npr",
    "npr_demo",
    "cnnspot",
    "cnnspot_p01",
    "corvi",
    "rajan",
    "dear_c",
    "dear_r",
    "generic",
    "ufd",
    "c2p_clip",
)


def _cfg(detector: str) -> Any:
    from dear_exp.api import config
    from dear_exp.bench import EXTRA

    return config(f"detector={detector}", *EXTRA.get(detector, []))


def relative_error(got: Any, want: Any, floor: float = 1e-30) -> float:
    """||got - want|| / max(||want||, floor * sqrt(numel)), in float64: with `floor` an RMS below
    which the error is measured in absolute units."""
    got, want = got.double(), want.double()
    return float((got - want).norm() / want.norm().clamp_min(floor * want.numel() ** 0.5))


def batch_for(cfg: Any, n: int, device: Any) -> Any:
    """A seeded batch of photo-range pixels, normalised as the detector's preprocessing does."""
    import torch

    size = cfg.detector.preprocess.get("center_crop") or 256
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(list(cfg.detector.preprocess.mean)).view(1, 3, 1, 1)
    std = torch.tensor(list(cfg.detector.preprocess.std)).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def outputs(detector: Any, x: Any, bf16: bool) -> tuple[Any, Any]:
    """(pooled features, logits) in float32, under bf16 autocast or not."""
    import contextlib

    import torch

    cast = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), cast:
        features = detector.forward_features(x)
        return detector.pool(features).float(), detector.forward_head(features).float()


def images_per_s(detector: Any, x: Any, bf16: bool, repeats: int) -> float:
    import torch

    outputs(detector, x, bf16)  # warm-up (cuDNN autotuning, lazy init)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        outputs(detector, x, bf16)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(x) / (time.perf_counter() - start)


def check_detector(name: str, device: Any, batch: int, repeats: int) -> dict[str, Any]:
    """One detector, random weights: bf16 against fp32, and images/s in each."""
    import torch

    from dear_exp.bench import random_detector

    cfg = _cfg(name)
    detector = random_detector(cfg).to(device)
    if device.type == "cuda":
        detector = detector.to(memory_format=torch.channels_last)
    x = batch_for(cfg, batch, device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    pooled32, logits32 = outputs(detector, x, bf16=False)
    pooled16, logits16 = outputs(detector, x, bf16=True)
    errors = {"pooled": relative_error(pooled16, pooled32), "logits": relative_error(logits16, logits32, floor=1.0)}
    return {
        "detector": name,
        "input": list(x.shape),
        "bf16_relative_error": errors,
        "bf16_ok": all(e <= TOL for e in errors.values()),
        "images_per_s": {
            "fp32": images_per_s(detector, x, False, repeats),
            "bf16": images_per_s(detector, x, True, repeats),
        },
    }


def sweep_ratio(out: Path) -> dict[str, Any]:
    """`make bench`'s single run and 5x5 sweep on the GPU (trainer=gpu)."""
    from dear_exp.bench import DEFAULT

    cmd = [sys.executable, "-m", "dear_exp.bench", "--detectors=none", "trainer=gpu", *DEFAULT]
    with open(out / "sweep.txt", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    bench = sorted(Path("logs/bench").glob("*/bench.json"))[-1]
    result = json.loads(bench.read_text())
    return {
        "single_s": result["single"]["wall_s"],
        "sweep_s": result["sweep"]["wall_s"],
        "ratio": result["sweep_ratio"],
    }


def inpaint_seconds(
    out: Path, trainer: str = "gpu", counts: tuple[int, int] = (1, 17), extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """fp16 seconds per image of the tiny SD inpainting pipeline through task=make_inpaint on the GPU
    (`trainer`, `counts` of images and `extra` overrides: for the CPU test of this very path)."""
    import numpy as np
    from PIL import Image

    from dear_exp.inpaint.tiny import build_tiny_sd_inpaint

    model = build_tiny_sd_inpaint(out / "tiny_sd_inpaint")
    times = {}
    for n in counts:
        real = out / f"real{n}"
        real.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(real / f"r{i:02d}.png")
        cmd = [
            sys.executable,
            "-m",
            "dear_exp",
            "task=make_inpaint",
            f"trainer={trainer}",
            "logger=none",
            f"inpaint.real_dir={real}",
            f"inpaint.out_dir={out / f'inpainted{n}'}",
            f"inpaint.model={model}",
            "inpaint.local_files_only=true",
            f"hydra.run.dir={out / f'make_inpaint{n}'}",
            *extra,
        ]
        start = time.perf_counter()
        with open(out / f"make_inpaint{n}.txt", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        times[n] = time.perf_counter() - start
    few, many = counts
    return {
        "dtype": "float16" if trainer == "gpu" else "float32",
        "overrides": list(extra),
        "seconds_per_image": (times[many] - times[few]) / (many - few),
    }


def main() -> None:
    import torch

    from dear_exp.bench import parse

    flags, _ = parse(sys.argv[1:])
    cpu = "cpu" in flags
    if not cpu and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; run `python -m dear_exp.bench_gpu --cpu` for the CPU part")
    device = torch.device("cpu" if cpu else "cuda")
    names = flags["detectors"].split(",") if flags.get("detectors") else list(DETECTORS)
    out = Path(flags.get("out") or Path("logs/bench") / f"gpu-{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if not cpu else "cpu",
        "torch": torch.__version__,
        "tolerance": TOL,
        "detectors": [],
    }
    for name in names:
        row = check_detector(name, device, batch=2 if cpu else 32, repeats=1 if cpu else 5)
        print(json.dumps(row), flush=True)
        result["detectors"].append(row)
    skipped = "no GPU (--cpu): run make bench-gpu on a GPU machine"
    result["sweep"] = {"skipped": skipped} if cpu else sweep_ratio(out)
    result["inpaint_fp16"] = {"skipped": skipped} if cpu else inpaint_seconds(out)
    result["all_bf16_ok"] = all(r["bf16_ok"] for r in result["detectors"])
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "detectors"}, indent=2))
    print(f"wrote {out / 'bench_gpu.json'}")


if __name__ == "__main__":
    main()
