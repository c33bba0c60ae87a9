"""dear-exp: DEAR (Dissect and Prune) experiments with Hydra and Lightning.

The Python API (dear_exp.api, imported on first use so that `import dear_exp` stays light):
`load_detector`, `dissect_folder`, `prune_channels`, `refit_head`, `score_folder`, `config`."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["config", "dissect_folder", "load_detector", "prune_channels", "refit_head", "score_folder"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dear_exp import api

        return getattr(api, name)
    raise AttributeError(f"module 'dear_exp' has no attribute {name!r}")
