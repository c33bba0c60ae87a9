"""NPR loads from both published formats, strictly; bad files fail with one actionable line."""

from pathlib import Path

import pytest
import torch

from dear_exp.detectors.checkpoint import load_strict, read_state_dict
from dear_exp.detectors.npr import NPR
from dear_exp.errors import DearError
from dear_exp.files import file_sha256


def _reference_logits(model: NPR) -> torch.Tensor:
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)[1]


def _randomised() -> NPR:
    torch.manual_seed(0)
    model = NPR()
    with torch.no_grad():  # move BN statistics away from their init so a missed buffer shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_npr_layout_matches_the_released_keys():
    sd = NPR().state_dict()
    assert len(sd) == 146 and len([k for k in sd if not k.endswith("num_batches_tracked")]) == 122
    assert sd["conv1.weight"].shape == (64, 3, 3, 3) and sd["fc1.weight"].shape == (1, 512)
    assert sd["layer2.3.conv3.weight"].shape == (512, 128, 1, 1)
    assert sum(v.numel() for v in sd.values()) == 1_447_897  # the element count of NPR.pth


@pytest.mark.parametrize("layout", ["plain", "model_module", "state_dict", "no_nbt", "safetensors"])
def test_every_published_layout_loads_strictly_with_identical_logits(tmp_path: Path, layout: str):
    source = _randomised()
    sd = source.state_dict()
    if layout == "plain":  # model_epoch_last_3090.pth
        obj, path = sd, tmp_path / "m.pth"
    elif layout == "model_module":  # NPR.pth: {'model': ...} with DataParallel prefixes
        obj, path = (
            {"model": {f"module.{k}": v for k, v in sd.items()}, "total_steps": torch.tensor(3)},
            tmp_path / "m.pth",
        )
    elif layout == "state_dict":
        obj, path = {"state_dict": sd}, tmp_path / "m.pth"
    elif layout == "no_nbt":
        obj, path = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, tmp_path / "m.pth"
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "m.safetensors")
        obj, path = None, tmp_path / "m.safetensors"
    if obj is not None:
        torch.save(obj, path)
    target = NPR()
    load_strict(target, read_state_dict(path), str(path))
    assert torch.equal(_reference_logits(target), _reference_logits(source))


def test_wrong_keys_are_listed(tmp_path: Path):
    sd = _randomised().state_dict()
    sd["fc.weight"] = sd.pop("fc1.weight")
    sd["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(DearError) as err:
        load_strict(NPR(), read_state_dict(path), str(path))
    msg = str(err.value)
    assert "missing keys: fc1.weight" in msg and "unexpected keys: fc.weight" in msg
    assert "shape mismatches: layer2.0.conv1.weight (3, 3) vs (128, 256, 1, 1)" in msg
    assert "\n" not in msg


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PWNED",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path):
    marker = Path(__file__).parent / "PWNED"
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(DearError, match="refusing to load"):
        read_state_dict(path)
    assert not marker.exists()


def test_missing_corrupt_and_checksum(tmp_path: Path):
    with pytest.raises(DearError, match="checkpoint not found: .*nope.pth; get it here"):
        read_state_dict(tmp_path / "nope.pth", hint="get it here")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DearError, match="cannot read checkpoint"):
        read_state_dict(junk)
    good = tmp_path / "good.pth"
    torch.save(NPR().state_dict(), good)
    assert read_state_dict(good, sha256=file_sha256(good))
    with pytest.raises(DearError, match="sha256"):
        read_state_dict(good, sha256="0" * 64)
    pickle_only = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], pickle_only)
    with pytest.raises(DearError, match="not a state dict"):
        read_state_dict(pickle_only)


def test_hub_download_offline_fails_at_once_in_one_line(compose_cfg, tmp_path: Path, monkeypatch):
    import time

    from dear_exp.detectors import build_detector

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_cfg("+experiment=npr_flux", "+detector.hub={repo_id: someone/npr, filename: NPR.pth}")
    start = time.perf_counter()
    with pytest.raises(DearError) as err:
        build_detector(cfg.detector)
    assert time.perf_counter() - start < 2.0
    assert str(err.value) == (
        f"checkpoint not found: {tmp_path}/checkpoints/npr/NPR.pth; HF_HUB_OFFLINE is set, so "
        f"download someone/npr/NPR.pth from the Hugging Face Hub elsewhere and place it at "
        f"{tmp_path}/checkpoints/npr/NPR.pth"
    )


def test_hub_download_lands_atomically_and_is_checked(compose_cfg, tmp_path: Path, monkeypatch):
    """The network itself is replaced (no test reaches the Hub); the wiring around it is real."""
    import huggingface_hub

    from dear_exp.detectors import build_detector
    from dear_exp.detectors import checkpoint as ck

    source = _randomised()
    served = tmp_path / "hub_cache" / "NPR.pth"
    served.parent.mkdir()
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, served)
    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(ck, "hub_unreachable", lambda timeout=3.0: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(served))
    cfg = compose_cfg(
        "+experiment=npr_flux",
        "+detector.hub={repo_id: someone/npr, filename: NPR.pth}",
        f"detector.sha256={file_sha256(served)}",
    )
    detector = build_detector(cfg.detector)
    assert calls == [{"repo_id": "someone/npr", "filename": "NPR.pth", "revision": None}]
    assert torch.equal(_reference_logits(detector), _reference_logits(source))
    assert sorted(p.name for p in (tmp_path / "checkpoints/npr").iterdir()) == ["NPR.pth"]  # no temp file left


class SystemCall:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_each_kind_of_bad_checkpoint_gets_its_own_message(tmp_path: Path):
    """Code in a pickle is refused for safety (whatever torch's wording: 'Unsupported global' for an
    unknown class, 'blocked' for os.system); text, empty files, folders and HTML pages say what they are."""
    cases = {
        "code.pth": (lambda p: torch.save({"model": SystemCall()}, p), "refusing to load .* for safety"),
        "module.pth": (lambda p: torch.save({"fc": torch.nn.Linear(2, 2)}, p), "refusing to load .* for safety"),
        "text.pth": (lambda p: p.write_text("weights go here\n"), "a text file, not a torch checkpoint"),
        "page.pth": (lambda p: p.write_text("<!DOCTYPE html><html>login</html>"), "an HTML page, not weights"),
        "empty.pth": (lambda p: p.write_bytes(b""), "is an empty file"),
        "folder.pth": (lambda p: p.mkdir(), "is a folder, not a file"),
        "cut.pth": (lambda p: (torch.save(NPR().state_dict(), p), p.write_bytes(p.read_bytes()[:5000])), "truncated"),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(DearError, match=message) as err:
            read_state_dict(path)
        assert "\n" not in str(err.value), (name, str(err.value))
