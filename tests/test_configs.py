"""Every experiment composes with every debug option; every option of every group instantiates."""

from pathlib import Path

import pytest
from hydra.utils import get_object, instantiate

from dear_exp.__main__ import CONF_DIR
from dear_exp.detectors.base import Detector

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (Path(CONF_DIR) / "debug").glob("*.yaml"))
DETECTORS = sorted(p.stem for p in (Path(CONF_DIR) / "detector").glob("*.yaml"))
REQUIRED_GROUPS = [
    "detector",
    "train_data",
    "diag_data",
    "benchmark",
    "postprocess",
    "prune",
    "head",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "hydra",
    "launcher",
    "sweep",
    "debug",
    "experiment",
]


def test_required_groups_exist():
    for group in REQUIRED_GROUPS:
        assert list((Path(CONF_DIR) / group).glob("*.yaml")), group
    assert {"demo", "npr_flux"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("debug", [None, *DEBUGS])
def test_experiment_composes_with_debug(compose_cfg, experiment, debug):
    overrides = [f"+experiment={experiment}"] + ([f"+debug={debug}"] if debug else [])
    cfg = compose_cfg(*overrides)
    assert cfg.prune.alpha_low < cfg.prune.alpha_high
    assert cfg.detector.net._target_.startswith("dear_exp.detectors.")
    if debug:
        assert cfg.trainer.accelerator == "cpu" and not cfg.get("logger")
    if debug == "fdr":
        assert cfg.trainer.fast_dev_run is True


def test_default_run_is_the_demo_experiment(compose_cfg):
    plain = compose_cfg()
    demo = compose_cfg("+experiment=demo")
    for key in ("detector", "train_data", "diag_data", "benchmark", "postprocess", "prune", "head"):
        assert plain[key] == demo[key], key


@pytest.mark.parametrize(
    "group",
    [
        "detector",
        "prune",
        "postprocess",
        "trainer",
        "logger",
        "callbacks",
        "benchmark",
        "train_data",
        "diag_data",
        "launcher",
        "sweep",
    ],
)
def test_every_option_composes(compose_cfg, group, tmp_path):
    for option in sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")):
        prefix = "+" if group in ("launcher", "sweep") else ""
        cfg = compose_cfg(f"{prefix}{group}={option}")
        if group == "detector":
            net = instantiate(cfg.detector.net)
            assert net.feature_channels > 0
        if group == "trainer" and cfg.trainer.accelerator == "cpu":
            instantiate(cfg.trainer, logger=False)
        if group in ("callbacks", "logger"):
            for conf in (cfg.get(group) or {}).values():
                instantiate(conf)


def test_npr_flux_points_at_the_released_checkpoint_and_dear_layout(compose_cfg, tmp_path):
    cfg = compose_cfg("+experiment=npr_flux")
    assert cfg.detector.checkpoint == f"{tmp_path}/checkpoints/npr/NPR.pth"
    assert cfg.detector.net.feature_layer == "layer2" and not cfg.detector.train_if_missing
    assert cfg.benchmark.root == f"{tmp_path}/data/test"
    assert dict(cfg.benchmark.layout.subsets) == {"flux": {"fake": "fake/flux", "real": "redcaps"}}
    assert cfg.diag_data.image_dir == "train/fake/lsun_inpaint_sd"


@pytest.mark.parametrize("option", DETECTORS)
def test_every_detector_config_names_a_detector_of_the_package(compose_cfg, option):
    """Adding a detector is a module of dear_exp/detectors/ and a yaml of conf/detector/: build_detector
    reads only the yaml (`detector.net._target_`, its checkpoint and preprocessing), no list of names."""
    det = compose_cfg(f"detector={option}").detector
    cls = get_object(det.net._target_)
    assert isinstance(cls, type) and issubclass(cls, Detector), det.net._target_
    assert cls.__module__.startswith("dear_exp.detectors.") and det.name and det.checkpoint
    assert len(det.preprocess.mean) == len(det.preprocess.std) == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.p_jitter=1.5", "augment.p_jitter=1.5 must be a number >= 0 and <= 1"),
        ("augment.jpeg_quality=[80,20]", "augment.jpeg_quality=[80, 20] must be [low, high] with low <= high"),
        ("augment.jpeg_quality=[30,101]", "augment.jpeg_quality=101 must be a whole number >= 1 and <= 100"),
        ("augment.noise_var=10", "augment.noise_var=10 must be a [low, high] pair"),
        ("augment.name=mixup", "augment.name='mixup' must be one of reference, crop_flip"),
        ("prune.mode=both", "prune.mode='both' must be one of bilateral, high, low, random, none, released"),
        ("prune.alpha_low=0.9", "prune.alpha_low=0.9 and prune.alpha_high=0.8 must satisfy"),
        ("+prune.levels=2", "prune.levels is not a setting of prune"),
        ("base_train.augment.crop=0", "base_train.augment.crop=0 must be a whole number >= 1"),
    ],
)
def test_impossible_values_fail_in_the_schema(compose_cfg, override, message):
    """Probabilities, [low, high] ranges, enums and the typed settings, checked before any work."""
    import re

    from dear_exp.errors import DearError
    from dear_exp.schema import validate

    with pytest.raises(DearError, match=re.escape(message)):
        validate(compose_cfg(override))
    validate(compose_cfg())  # the default config itself passes


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_resolves_the_same_with_each_interpolation_parsed_once(compose_cfg, experiment, monkeypatch):
    """register_resolvers memoises OmegaConf's interpolation parse (cache_interpolation_parses): the
    resolved config is the one OmegaConf's own parse gives, and a bad interpolation still fails."""
    import omegaconf.base
    from omegaconf import OmegaConf, grammar_parser
    from omegaconf.errors import GrammarParseError

    memo = omegaconf.base.parse
    assert memo is not grammar_parser.parse and memo.cache_info().maxsize  # installed, and bounded
    cfg = compose_cfg(f"+experiment={experiment}", "logger=wandb")
    cached = OmegaConf.to_yaml(cfg, resolve=True)
    assert memo.cache_info().hits > 0
    monkeypatch.setattr(omegaconf.base, "parse", grammar_parser.parse)
    assert OmegaConf.to_yaml(cfg, resolve=True) == cached
    monkeypatch.setattr(omegaconf.base, "parse", memo)
    for _ in range(2):  # a failed parse is not kept: it fails again
        with pytest.raises(GrammarParseError):
            memo("${a")
