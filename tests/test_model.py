"""The refit keeps the detector frozen, and prune.mode=none reproduces the detector's logits."""

from pathlib import Path

import lightning as L
import torch

from dear_exp import build, schema
from dear_exp.detectors import build_detector, preprocess_of
from dear_exp.dissect import rad_scores
from dear_exp.prune import PruneSettings, channel_mask
from dear_exp.refit import DEARModule, RefitDataModule


def _setup(compose_cfg, tiny_demo: Path, *overrides: str):
    cfg = compose_cfg("+debug=default", *overrides, root=tiny_demo)
    detector = build_detector(cfg.detector, load_weights=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for m in detector.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
    pre = preprocess_of(cfg.detector)
    data = RefitDataModule(build.train_data(cfg, pre, cfg.augment, 8), build.diag_data(cfg, pre))
    return cfg, detector, pre, data


def _head(cfg, *overrides: str):
    """The head settings of `cfg` with overrides (as on the command line)."""
    from omegaconf import OmegaConf

    return schema.build(OmegaConf.merge(cfg.head, OmegaConf.from_dotlist(list(overrides))), "head")


def _trainer(tmp_path: Path, callbacks, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **kw,
    )


def test_mode_none_gives_the_detectors_own_logits_before_refit(compose_cfg, tiny_demo, tmp_path):
    cfg, detector, pre, data = _setup(compose_cfg, tiny_demo, "prune=none", "head.init=detector")
    model = DEARModule(detector, _head(cfg))
    model.head.set_mask(channel_mask(PruneSettings("none", 0.2, 0.8, 0), None, 512))
    assert model.head.mask.sum() == model.head.mask.numel()
    bench = build.benchmark(cfg, pre)
    bench.setup("predict")
    out = _trainer(tmp_path, []).predict(model, dataloaders=bench.predict_dataloader()[0])
    base = torch.cat([o["base"] for o in out])
    dear = torch.cat([o["dear"] for o in out])
    assert torch.equal(base, dear)
    # and a pruned mask really changes them
    model.head.set_mask((torch.arange(512) % 2).float())
    out = _trainer(tmp_path, []).predict(model, dataloaders=bench.predict_dataloader()[0])
    assert not torch.equal(base, torch.cat([o["dear"] for o in out]))


def test_only_the_head_trains_and_batchnorm_statistics_stay(compose_cfg, tiny_demo, tmp_path):
    cfg, detector, _, data = _setup(compose_cfg, tiny_demo)
    model = DEARModule(detector, _head(cfg, "lr=1e-2"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.linear.weight", "head.linear.bias"}
    before = {k: v.clone() for k, v in model.detector.state_dict().items()}
    head_before = model.head.linear.weight.clone()
    data.setup("fit")
    scores, stats = rad_scores(data.diagnostic, model.detector, torch.device("cpu"))
    model.head.set_mask(channel_mask(PruneSettings("bilateral", 0.2, 0.8, 0), scores, 512))
    _trainer(tmp_path, [], max_steps=3, limit_val_batches=1).fit(model, datamodule=data)
    after = model.detector.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen detector changed"
    assert not torch.equal(head_before, model.head.linear.weight), "the head did not train"
    assert int(model.head.mask.sum()) == 512 - 2 * 102
    assert stats["images"] > 0


def test_released_gate_becomes_the_mask_and_reproduces_the_release(compose_cfg, tmp_path):
    import pytest

    from dear_exp.detectors.npr import NPR
    from dear_exp.detectors.resnet import GatedResnet50Detector
    from dear_exp.errors import DearError

    torch.manual_seed(0)
    detector = GatedResnet50Detector().eval()
    gate = (torch.rand(2048) > 0.4).float()
    detector.gate.copy_(gate)
    with torch.no_grad():
        detector.fc.weight.normal_()
    model = DEARModule(detector, _head(compose_cfg(), "init=detector"))
    model.head.set_mask(channel_mask(PruneSettings("released", 0.2, 0.8, 0), None, 2048, detector.released_mask()))
    assert torch.equal(model.head.mask, gate)
    x = torch.randn(2, 3, 32, 32)
    out = model.predict_step((x, torch.zeros(2), torch.arange(2)), 0)
    assert torch.allclose(out["dear"], out["base"], atol=1e-5)
    with pytest.raises(DearError, match="prune.mode=released needs a detector whose checkpoint ships a channel mask"):
        channel_mask(PruneSettings("released", 0.2, 0.8, 0), None, 512, NPR().released_mask())


def test_dissection_without_augmentation_reads_native_sizes(compose_cfg, tiny_demo):
    """diag_data.dissect_augment=false: whole images, one per batch, masks at the image's size."""
    cfg = compose_cfg("+debug=default", "diag_data.dissect_augment=false", root=tiny_demo)
    diag = build.diag_data(cfg, preprocess_of(cfg.detector))
    diag.setup("fit")
    x, mask, target = next(iter(diag.dissect_dataloader()))
    assert x.shape[0] == 1 and tuple(x.shape[-2:]) == tuple(mask.shape[-2:]) == (96, 96)
    assert target.item() == 1.0 and 0.02 <= float((mask > 0.5).float().mean()) <= 0.2
