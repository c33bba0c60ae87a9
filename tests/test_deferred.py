"""A job that reads everything from the feature cache does not read the detector's weights."""

import logging
import os
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from dear_exp.cache import FeatureCache, module_fingerprint
from dear_exp.detectors import build_detector
from dear_exp.detectors.deferred import DeferredDetector, class_name, fingerprint, load_detector, real
from dear_exp.detectors.npr import NPR
from dear_exp.errors import DearError
from dear_exp.refit.head import head_identity


def _setup(compose_cfg, tmp_path: Path, seed: int = 0):
    cfg = compose_cfg("+experiment=npr_flux")
    torch.manual_seed(seed)
    path = tmp_path / "npr.pth"
    torch.save(NPR().state_dict(), path)
    with open_dict(cfg):
        cfg.detector.checkpoint = str(path)
    builds = []

    def build(c):
        builds.append(c.checkpoint)
        return build_detector(c)

    return cfg.detector, FeatureCache(tmp_path / "cache"), build, builds


def test_the_second_load_is_deferred_and_answers_like_the_detector(compose_cfg, tmp_path: Path, caplog):
    cfg, cache, build, builds = _setup(compose_cfg, tmp_path)
    first = load_detector(cfg, cache, build)
    assert isinstance(first, NPR) and len(builds) == 1
    with caplog.at_level(logging.INFO, logger="dear_exp.detectors.deferred"):
        second = load_detector(cfg, cache, build)
    assert isinstance(second, DeferredDetector) and len(builds) == 1, "the weights were read again"
    assert "weights are read only if a backbone pass needs them" in caplog.text
    assert fingerprint(second) == module_fingerprint(first) and class_name(second) == "NPR"
    assert second.feature_channels == first.feature_channels and second.feature_layer == first.feature_layer
    assert second.released_mask() is None and second.linear_head() is not None
    own, mine = first.linear_head(), second.linear_head()
    assert torch.equal(own.weight, mine.weight) and torch.equal(own.bias, mine.bias)
    assert head_identity(second) == head_identity(first)
    # a backbone pass loads the weights once, checked against the card, and gives the detector's outputs
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(real(second).eval()(x)[1], first.eval()(x)[1])
    assert len(builds) == 2 and real(second) is real(second)


def test_another_checkpoint_file_is_never_answered_from_an_old_card(compose_cfg, tmp_path: Path):
    cfg, cache, build, builds = _setup(compose_cfg, tmp_path)
    first = load_detector(cfg, cache, build)
    torch.manual_seed(1)
    torch.save(NPR().state_dict(), cfg.checkpoint)  # other weights under the same path, of the same size
    stat = Path(cfg.checkpoint).stat()  # the content hash is remembered per path, size and mtime
    os.utime(cfg.checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a coarse clock's tick
    again = load_detector(cfg, cache, build)
    assert not isinstance(again, DeferredDetector) and len(builds) == 2
    assert module_fingerprint(again) != module_fingerprint(first)


def test_weights_that_differ_from_the_card_are_refused(compose_cfg, tmp_path: Path):
    cfg, cache, build, _ = _setup(compose_cfg, tmp_path)
    load_detector(cfg, cache, build)
    deferred = load_detector(cfg, cache, build)
    torch.manual_seed(2)
    other = NPR()
    with pytest.raises(DearError, match="differ from those the cache recorded"):
        DeferredDetector(cfg, deferred._card, lambda c: other).materialise()


def test_without_the_cache_the_detector_is_always_loaded(compose_cfg, tmp_path: Path):
    cfg, _, build, builds = _setup(compose_cfg, tmp_path)
    off = FeatureCache(tmp_path / "cache", enabled=False)
    assert isinstance(load_detector(cfg, off, build), NPR) and isinstance(load_detector(cfg, off, build), NPR)
    assert len(builds) == 2 and not (tmp_path / "cache").exists()


def test_a_checkpoint_is_hashed_once_per_process_while_it_is_unchanged(tmp_path: Path, monkeypatch):
    from dear_exp.detectors import deferred

    reads = []
    monkeypatch.setattr(deferred, "file_sha256", lambda p: reads.append(p) or f"sha-{len(reads)}")
    path = tmp_path / "w.pth"
    path.write_bytes(b"x" * 10)
    assert deferred.content_hash(path) == deferred.content_hash(path) == "sha-1" and len(reads) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten: read again
    assert deferred.content_hash(path) == "sha-2"
