"""The real-checkpoint recipes run end to end on tiny data in the reference layout, each detector's
weights saved in its released file format (randomly initialised: the plumbing, not the numbers)."""

import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from dear_exp.__main__ import run_task
from tests.helpers import read_csv
from tests.test_end_to_end import _dear_layout

WILD = ("Chameleon", "WildRF", "loki")
GENERATORS = ("sd", "Midjourney", "kandinsky", "playground", "pixelart", "lcm", "flux", "wuerstchen", "amused")


@pytest.fixture
def user_root(tiny_demo: Path, tmp_path: Path) -> Path:
    """data/ in the DEAR layout with every generator and in-the-wild folder of the full benchmark."""
    root = tmp_path / "user"
    demo = tiny_demo / ".cache/demo/tiny-seed0"
    _dear_layout(demo, root)
    for i, name in enumerate(GENERATORS + WILD):
        src = demo / "test/fake" / ("gen_a", "gen_b", "gen_c")[i % 3]
        dst = root / "data/test/fake" / name
        if not dst.exists():
            shutil.copytree(src, dst)
    return root


def _rows(cfg) -> list[dict[str, str]]:
    return read_csv(Path(cfg.paths.output_dir) / "results.csv")


def _save_released(cfg, fmt: str) -> None:
    torch.manual_seed(0)
    sd = instantiate(cfg.detector.net).state_dict()
    path = Path(cfg.detector.checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dear":  # GatedResNet: backbone.* + gate.gate
        gate = (torch.rand(2048) > 0.3).float()
        sd = {**{f"backbone.{k}": v for k, v in sd.items() if k != "gate"}, "gate.gate": gate}
    torch.save({"model": sd}, path)


FAST = (
    "+debug=limit",
    "postprocess=clean",
    "train_data.batch_size=4",
    "diag_data.batch_size=4",
    "benchmark.batch_size=2",
    "diag_data.dissect_max_batches=2",
)


@pytest.mark.slow
def test_corvi_ldm_dear_c_recipe_on_the_full_dear_layout(compose_cfg, user_root: Path):
    cfg = compose_cfg("+experiment=corvi_ldm", *FAST, root=user_root)
    _save_released(cfg, "model")
    run_task(cfg)
    rows = _rows(cfg)
    assert {r["subset"] for r in rows} == {
        "sd",
        "midjourney",
        "kandinsky",
        "playground",
        "pixart",
        "lcm",
        "flux",
        "wuerstchen",
        "amused",
        "chameleon",
        "wildrf",
        "loki",
        "mean:generators",
        "mean:wild",
    }
    kept = sum(1 for r in read_csv(Path(cfg.paths.output_dir) / "rad_scores.csv") if r["kept"] == "1")
    assert kept == 1230  # DEAR-c: 0.2 / 0.8 of 2048


@pytest.mark.slow
def test_cnnspot_flux_and_evaluating_released_dear_c(compose_cfg, user_root: Path, tmp_path: Path):
    cfg = compose_cfg("+experiment=cnnspot_flux", *FAST, root=user_root)
    _save_released(cfg, "model")
    run_task(cfg)
    assert {r["subset"] for r in _rows(cfg)} == {"flux", "mean"}
    cfg = compose_cfg(
        "task=evaluate", "detector=dear_c", "benchmark=dear_flux", "postprocess=clean", "+debug=default", root=user_root
    )
    cfg.paths.output_dir = str(tmp_path / "eval")
    _save_released(cfg, "dear")
    run_task(cfg)
    rows = _rows(cfg)
    assert {r["model"] for r in rows} == {"base"} and {r["threshold_policy"] for r in rows} == {"logit0", "oracle"}
    assert all(int(r["n_fake"]) == 8 for r in rows if r["subset"] == "flux")


@pytest.mark.slow
def test_ufd_flux_dissects_patch_tokens_of_a_tiny_clip(compose_cfg, user_root: Path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from tests.test_detectors_clip import TINY, TINY_OVERRIDE

    torch.manual_seed(0)
    backbone = user_root / "checkpoints/clip/tiny"
    CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY)).save_pretrained(backbone)
    cfg = compose_cfg(
        "+experiment=ufd_flux",
        *FAST,
        TINY_OVERRIDE,
        f"detector.net.backbone={backbone}",
        "detector.preprocess.center_crop=32",
        "augment.crop=32",
        root=user_root,
    )
    fc = Path(cfg.detector.checkpoint)
    fc.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.randn(1, TINY["projection_dim"]), "bias": torch.zeros(1)}, fc)
    run_task(cfg)
    assert {r["subset"] for r in _rows(cfg)} == {"flux", "mean"}
    kept = sum(1 for r in read_csv(Path(cfg.paths.output_dir) / "rad_scores.csv") if r["kept"] == "1")
    assert kept == 32 - 2 * 6  # hidden size 32: 6 pruned at each end
