"""Bad input: one line that says what is wrong and how to fix it, exit code 2, no traceback."""

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from dear_exp.data.folders import inpaint_pairs
from dear_exp.detectors.npr import NPR
from dear_exp.errors import DearError, one_line
from tests.helpers import assert_one_line_error, run_cli, wandb_exit_codes

pytestmark = pytest.mark.xdist_group("cli")


def test_missing_checkpoint_names_the_path_and_where_to_get_it(tmp_path: Path):
    proc = run_cli("+experiment=npr_flux", cwd=tmp_path)
    assert_one_line_error(
        proc,
        f"checkpoint not found: {tmp_path}/checkpoints/npr/NPR.pth",
        "github.com/chuangchuangtan/NPR-DeepfakeDetection",
    )


def test_missing_data_folder_and_wrong_keys(tmp_path: Path):
    ckpt = tmp_path / "checkpoints" / "npr" / "NPR.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": {f"module.{k}": v for k, v in NPR().state_dict().items()}}, ckpt)
    proc = run_cli("+experiment=npr_flux", cwd=tmp_path)
    assert_one_line_error(proc, f"data folder not found: {tmp_path}/data/train/real/coco", "k-aisi-anti-deepfake")
    bad = tmp_path / "bad.pth"
    state = NPR().state_dict()
    state["fc.weight"] = state.pop("fc1.weight")
    torch.save(state, bad)
    proc = run_cli("+experiment=npr_flux", f"detector.checkpoint={bad}", cwd=tmp_path)
    assert_one_line_error(proc, "missing keys: fc1.weight", "unexpected keys: fc.weight")


def test_impossible_alpha_fails_before_any_work(tmp_path: Path):
    proc = run_cli("prune.alpha_low=0.8", "prune.alpha_high=0.2", cwd=tmp_path)
    assert_one_line_error(proc, "prune.alpha_low=0.8", "0 <= alpha_low < alpha_high <= 1")
    assert not (tmp_path / ".cache").exists(), "work started before validation"


def test_corrupt_image_through_the_cli(tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_demo, root)
    victim = sorted((root / ".cache/demo/tiny-seed0/test/fake/gen_b").glob("*.png"))[2]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated PNG
    proc = run_cli("+debug=fdr", "num_workers=1", "logger=wandb", cwd=root, env={"WANDB_MODE": "offline"})
    assert_one_line_error(proc, f"corrupt or unreadable image {victim}", "replace or remove the file")
    assert wandb_exit_codes(root / "logs") == [1]  # `wandb sync` would not upload it as a finished run
    assert "wandb: WARNING" not in proc.stderr, proc.stderr  # Lightning's anonymous=None, dropped


def test_inpaint_image_without_its_mask(tiny_demo: Path, tmp_path: Path):
    src = tiny_demo / ".cache/demo/tiny-seed0/inpaint"
    dst = tmp_path / "inpaint"
    shutil.copytree(src, dst)
    orphan = sorted(dst.glob("*_mask.png"))[0]
    orphan.unlink()
    with pytest.raises(DearError) as err:
        inpaint_pairs(tmp_path, "inpaint", "inpaint", "hint")
    msg = str(err.value)
    assert "1 inpaint image(s) without a mask" in msg and orphan.name.replace("_mask", "_inpaint") in msg
    assert "\n" not in msg


def test_worker_errors_keep_their_one_line(tmp_path: Path):
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise DearError(f"corrupt or unreadable image /x/{i}.png (bad); replace or remove the file")

    with pytest.raises(DearError) as err:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(err.value)  # what torch does to the message
    assert one_line(err.value) == "corrupt or unreadable image /x/0.png (bad); replace or remove the file"


def test_train_base_refuses_a_released_dear_model(compose_cfg, tmp_path: Path):
    from dear_exp.__main__ import run_task

    cfg = compose_cfg("task=train_base", "detector=dear_c", "train_data=corvi")
    with pytest.raises(DearError, match="train its base architecture instead"):
        run_task(cfg)


def test_config_mistakes_are_one_line_before_any_work(tmp_path: Path):
    proc = run_cli("task=predict", cwd=tmp_path)
    assert_one_line_error(proc, "task.input must be set")
    proc = run_cli("+experiment=npr_flux", "detector.net.feature_layer=layer9", cwd=tmp_path)
    assert_one_line_error(proc, "detector.net.feature_layer='layer9' must be one of layer1, layer2")
    proc = run_cli("task.thresholds=[logit0,oracel]", cwd=tmp_path)
    assert_one_line_error(proc, "task.thresholds has ['oracel']")
    proc = run_cli("+experiment=cnnspot_flux", "augment=reference", cwd=tmp_path)
    assert_one_line_error(proc, "augment.crop=96 is smaller than detector.preprocess.center_crop=224")
    assert not (tmp_path / ".cache").exists(), "work started before validation"
