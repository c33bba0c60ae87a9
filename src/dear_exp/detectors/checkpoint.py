"""Loading released checkpoints without unpickling code, strictly, with messages a user can act on."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import torch
from torch import nn

from dear_exp.errors import DearError
from dear_exp.files import atomic_path, file_sha256
from dear_exp.hub import hub_offline, hub_unreachable

WRAPPERS = ("model", "state_dict", "net")


def check_sha256(path: Path, sha256: str | None) -> None:
    """Refuse a file whose sha256 is not the expected one (nothing to check when none is given)."""
    if sha256 and file_sha256(path) != sha256.lower():
        raise DearError(f"checkpoint {path} has sha256 {file_sha256(path)}, expected {sha256}; re-download it")


def read_state_dict(path: Path, hint: str = "", sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a `.pth` (weights_only=True) or `.safetensors` file, unwrapped from
    `{'model'|'state_dict'|'net': ...}` and stripped of DataParallel's `module.` prefix."""
    path = Path(path)
    if path.is_dir():
        raise DearError(
            f"checkpoint {path} is a folder, not a file; point detector.checkpoint at the weights file in it"
        )
    if not path.is_file():
        raise DearError(f"checkpoint not found: {path}; {hint or 'check the path'}")
    if path.stat().st_size == 0:
        raise DearError(f"checkpoint {path} is an empty file (an interrupted download?); re-download it")
    check_sha256(path, sha256)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DearError(_unpickling_message(path, exc)) from None
    except Exception as exc:  # corrupt zip, truncated file, not a checkpoint at all
        raise DearError(f"cannot read checkpoint {path}: {_not_a_checkpoint(path, exc)}; re-download it") from None
    while isinstance(obj, dict) and any(k in obj and isinstance(obj[k], dict) for k in WRAPPERS):
        obj = next(obj[k] for k in WRAPPERS if k in obj and isinstance(obj[k], dict))
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DearError(f"checkpoint {path} is not a state dict of tensors; re-download it")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _unpickling_message(path: Path, exc: pickle.UnpicklingError) -> str:
    """weights_only=True refused a global: code (refused for safety) or a class it does not allow-list."""
    text = str(exc)
    # torch names the global it refused ("Unsupported global: GLOBAL x.Y" for a class, "unsupported
    # GLOBAL posix.system ... is blocked" for a function); bytes that are no pickle at all give
    # "Unsupported operand", under the same "Weights only load failed" heading
    refused = [line.strip() for line in text.splitlines() if "unsupported global" in line.lower()]
    if refused:
        what = refused[0]
        return (
            f"refusing to load {path} for safety: it pickles code or objects that weights_only=True will not run "
            f"({what[:200]}); re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or .safetensors"
        )
    return f"cannot read checkpoint {path}: {_not_a_checkpoint(path, exc)}; re-download it"


def _not_a_checkpoint(path: Path, exc: BaseException) -> str:
    """What the file is, when torch.load cannot read it: text, a truncated archive, something else."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK"):
        return f"a truncated or damaged torch archive ({type(exc).__name__}: {exc})"
    if head.startswith(b"<") and b"html" in head.lower():
        return "an HTML page, not weights (a download that saved a web page)"
    try:
        head.decode("utf-8")
        return "a text file, not a torch checkpoint"
    except UnicodeDecodeError:
        return f"not a torch checkpoint ({type(exc).__name__}: {exc})"


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that tolerates only missing or extra BatchNorm `num_batches_tracked`."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")}
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{label}: {', '.join(items[:8])}{more}")
        raise DearError(f"checkpoint {source} does not fit {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def save_atomic(obj: dict[str, object], path: Path) -> None:
    """torch.save, written atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def fetch_from_hub(target: Path, repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Download `repo_id/filename` to `target` (atomically), when the network allows it."""
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    if hub_offline():
        raise DearError(
            f"checkpoint not found: {target}; HF_HUB_OFFLINE is set, so download {where} "
            f"from the Hugging Face Hub elsewhere and place it at {target}"
        )
    reason = hub_unreachable()
    if reason:
        raise DearError(
            f"checkpoint not found: {target}; cannot fetch {where} ({reason}): download it "
            f"elsewhere and place it at {target}"
        )
    from huggingface_hub import hf_hub_download

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        cached = Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except Exception as exc:
        raise DearError(f"cannot fetch {where} from the Hugging Face Hub ({type(exc).__name__}: {exc})") from None
    with atomic_path(target) as tmp:
        shutil.copyfile(cached, tmp)
    return target
