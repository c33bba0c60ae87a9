"""Channel fragility against RAD: the measure on hand-built activations, its scale invariance, the
band statistics on a constructed U shape, and task=fragility end to end on the tiny demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dear_exp.fragility import FragilityAccumulator, band_statistics, bands
from tests.helpers import read_csv, run_entry


def test_fragility_is_the_relative_mse_of_a_known_perturbation():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(8, 3, 4, 4, generator=gen)
    moved = clean.clone()
    moved[:, 1] += 0.5  # channel 1 shifted by 0.5 everywhere: MSE 0.25
    moved[:, 2] *= 2.0  # channel 2 doubled: MSE = mean(x^2)
    acc = FragilityAccumulator(3)
    acc.update(clean[:5], moved[:5])
    acc.update(clean[5:], moved[5:])
    frag = acc.compute().double()
    var = clean.double().transpose(0, 1).reshape(3, -1).var(1, unbiased=False)
    expected = torch.stack(
        [torch.tensor(0.0, dtype=torch.float64), 0.25 / var[1], (clean[:, 2].double() ** 2).mean() / var[2]]
    )
    assert torch.allclose(frag, expected, rtol=1e-5) and acc.compared == "spatial"


def test_fragility_does_not_depend_on_a_channels_scale_and_pools_across_sizes():
    gen = torch.Generator().manual_seed(1)
    clean = torch.randn(6, 2, 4, 4, generator=gen)
    noisy = clean + 0.3 * torch.randn(6, 2, 4, 4, generator=gen)
    scale = torch.tensor([1.0, 1000.0]).view(1, 2, 1, 1)
    a, b = FragilityAccumulator(2), FragilityAccumulator(2)
    a.update(clean, noisy)
    b.update(clean * scale, noisy * scale)
    assert torch.allclose(a.compute(), b.compute(), rtol=1e-5)
    small = FragilityAccumulator(2)  # a resize: maps of another size are compared pooled
    small.update(clean, torch.nn.functional.avg_pool2d(noisy, 2))
    assert small.compared == "pooled" and small.pooled == 6
    pooled = FragilityAccumulator(2)
    pooled.update(clean.mean((2, 3)), noisy.mean((2, 3)))
    assert torch.allclose(small.compute(), pooled.compute())


def test_band_statistics_find_a_constructed_u_shape_and_refuse_a_flat_one():
    scores = torch.arange(100, dtype=torch.float32)
    assert bands(scores, 0.2, 0.8).tolist() == [0] * 20 + [1] * 60 + [2] * 20
    gen = torch.Generator().manual_seed(2)
    u_shape = 1.0 + ((scores - 49.5).abs() / 50) ** 2 + 0.01 * torch.rand(100, generator=gen)
    st = band_statistics(scores, u_shape, 0.2, 0.8, 500, 0)
    assert st["verdict"] == "yes" and st["spearman"] > 0.9
    assert st["low"].low <= st["low"].mean <= st["low"].high and st["middle"].high < st["low"].low
    flat = 1.0 + 0.1 * torch.rand(100, generator=gen)
    assert band_statistics(scores, flat, 0.2, 0.8, 500, 0)["verdict"] == "not resolved at this sample size"
    inverted = 3.0 - u_shape
    assert band_statistics(scores, inverted, 0.2, 0.8, 500, 0)["verdict"] == "no"
    assert st["bands_vs_middle"] == {"low": "more", "high": "more"}
    # a monotone trend (fragility rising with RAD) is no U: one band more fragile, the other less
    rising = 1.0 + scores / 100 + 0.01 * torch.rand(100, generator=gen)
    assert band_statistics(scores, rising, 0.2, 0.8, 500, 0)["bands_vs_middle"] == {"low": "less", "high": "more"}


def test_fragility_task_on_the_tiny_demo(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(
        ["task=fragility", "+debug=default", "postprocess=robust", "task.bootstrap=100", "task.cue_probes=20"],
        root,
        monkeypatch,
        capfd,
    )
    assert rc == 0, text[-3000:]
    out = next((root / "logs").rglob("fragility.csv")).parent
    rows = read_csv(out / "fragility.csv")
    settings = {"jpeg75", "webp75", "resize0.5", "jpeg50-95"}
    assert {r["setting"] for r in rows} == settings and len(rows) == 512 * len(settings)
    assert {r["compared"] for r in rows if r["setting"] == "resize0.5"} == {"pooled"}
    assert {r["band"] for r in rows} == {"low", "middle", "high"}
    summary = json.loads((out / "fragility.json").read_text())
    assert summary["images"] == 32 and set(summary["settings"]) == settings
    assert (out / "fragility.png").stat().st_size > 10_000
    verdicts = [line for line in text.splitlines() if "extremes more fragile than the middle:" in line]
    assert len(verdicts) == len(settings)
    # the demo world's cues, attributed per channel (task.cues=auto: the training data is the demo's)
    from dear_exp.demo.cues import CUES

    cue_rows = read_csv(out / "cues.csv")
    assert {r["cue"] for r in cue_rows} == set(CUES) and len(cue_rows) == 512 * len(CUES)
    cues = json.loads((out / "cues.json").read_text())
    assert cues["probes_per_cue"] == 20 and set(cues["cues"]) == set(CUES)
    assert cues["letters"]["real_jpeg"] == "a" and cues["letters"]["shared"] == "c"
    assert (out / "cues.png").stat().st_size > 10_000
    assert len([line for line in text.splitlines() if "|drive| low" in line]) == len(CUES)


def test_cue_attribution_is_refused_where_the_cues_are_unknown(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    elsewhere = ["train_data.root=/nonexistent/train", "task=fragility", "+debug=default", "postprocess=robust"]
    rc, text = run_entry([*elsewhere, "task.cues=always"], root, monkeypatch, capfd)
    assert rc == 2 and "task.cues=always needs a detector trained on the embedded demo" in text
    rc, text = run_entry(
        ["task=fragility", "+debug=default", "postprocess=robust", "task.cues=sometimes"], root, monkeypatch, capfd
    )
    assert rc == 2 and "task.cues='sometimes'" in text and "auto" in text
    assert not list((root / "logs").rglob("cues.csv"))


def test_fragility_needs_a_setting_beyond_clean(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    rc, text = run_entry(["task=fragility", "+debug=default", "postprocess=clean"], root, monkeypatch, capfd)
    assert rc == 2 and "give a postprocess preset with a setting beyond clean" in text
    with pytest.raises(StopIteration):
        next((root / "logs").rglob("fragility.csv"))


def test_the_readme_fragility_commands_compose_and_validate(compose_cfg):
    import re

    from dear_exp.schema import validate

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    commands = re.findall(r"^python -m dear_exp (task=fragility[^#\n]*)", readme, flags=re.M)
    assert len(commands) >= 2
    for command in commands:
        cfg = compose_cfg(*command.split())
        validate(cfg)
        assert cfg.task.name == "fragility"


def test_a_dear_run_can_write_the_fragility_analysis_beside_its_rad(
    tiny_demo: Path, tmp_path: Path, monkeypatch, capfd
):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    args = ["+debug=fdr", "task.fragility.enabled=true", "task.fragility.bootstrap=50", "task.fragility.max_images=8"]
    rc, text = run_entry(args, root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    out = next((root / "logs").rglob("results.csv")).parent
    assert (out / "rad_hist.png").is_file() and (out / "fragility.png").is_file()
    assert {r["setting"] for r in read_csv(out / "fragility.csv")} == {"jpeg75"}  # the demo's preset: clean, jpeg75
    assert json.loads((out / "fragility.json").read_text())["images"] == 8


def test_fragility_goes_to_every_logger(tiny_demo: Path, tmp_path: Path, monkeypatch, capfd):
    """task=fragility with logger=csv: the band means and the correlation of each setting in metrics.csv."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    args = [
        "task=fragility",
        "+debug=default",
        "postprocess=robust",
        "task.bootstrap=50",
        "task.max_images=8",
        "logger=csv",
    ]
    rc, text = run_entry(args, root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    rows = read_csv(next((root / "logs").rglob("metrics.csv")))
    keys = {k for r in rows for k, v in r.items() if v}
    assert {"fragility/jpeg75/middle/mean", "fragility/resize0.5/spearman"} <= keys


def test_fragility_of_vit_patch_tokens_against_a_hand_computation(tmp_path: Path):
    """A CLIP detector's dissected map is its patch-token grid; its fixed input crop keeps the grid's
    size under resizing, so tokens are compared position by position, as a hand computation does."""
    import numpy as np
    from PIL import Image

    from dear_exp.data.folders import Sample
    from dear_exp.data.images import Preprocess, load_image
    from dear_exp.data.postprocess import Chain
    from dear_exp.detectors.clip import UFD
    from dear_exp.fragility import measure
    from tests.test_detectors_clip import TINY, _reference

    ref, fc = _reference()
    torch.save({"weight": fc.weight.detach(), "bias": fc.bias.detach()}, tmp_path / "fc.pth")
    ref.save_pretrained(tmp_path / "hf")
    det = UFD(backbone=str(tmp_path / "hf"), vision=TINY, block=0).eval()
    det.load_checkpoint(tmp_path / "fc.pth")
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        img = (rng.uniform(0, 255, (6, 6, 3)).repeat(8, 0).repeat(8, 1) + rng.normal(0, 8, (48, 48, 3))).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"{i}.png")
        samples.append(Sample(tmp_path / f"{i}.png", i % 2, f"{i}.png"))
    pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize_short=32, center_crop=32)
    settings = {"jpeg75": [{"op": "jpeg", "quality": 75}], "resize0.5": [{"op": "resize", "factor": 0.5}]}
    accs = measure(det, samples, settings, pre, 0, torch.device("cpu"))
    assert {s: a.compared for s, a in accs.items()} == {"jpeg75": "spatial", "resize0.5": "spatial"}
    with torch.no_grad():
        clean = torch.cat([det.forward_features(pre(np.array(load_image(s.path)))[None]) for s in samples])
        chain = Chain("jpeg75", settings["jpeg75"], 0)
        jpeg = torch.cat([det.forward_features(pre(np.array(chain(load_image(s.path), s.key)))[None]) for s in samples])
    a, b = clean.double().transpose(0, 1).reshape(32, -1), jpeg.double().transpose(0, 1).reshape(32, -1)
    expected = ((a - b) ** 2).mean(1) / a.var(1, unbiased=False)
    torch.testing.assert_close(accs["jpeg75"].compute().double(), expected, rtol=1e-5, atol=1e-9)
    assert bool((expected > 0).all())
