"""The `inpaint.*` config as a validated, picklable value (what every rank needs to regenerate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dear_exp.errors import DearError

DTYPES = ("float32", "float16", "bfloat16")
COMPOSITES = ("reference", "original")
PIPELINE_MASKS = ("blurred", "hard")


@dataclass(frozen=True)
class InpaintSettings:
    model: str
    resolution: int = 512
    steps: int = 50
    guidance_scale: float = 1.0
    strength: float | None = 1.0
    prompt: str = ""
    dtype: dict[str, str] = field(default_factory=lambda: {"cuda": "float16", "cpu": "float32"})
    revision: str | None = None
    variant: str | None = None
    local_files_only: bool = False
    blur_factor: float = 33.0
    pipeline_mask: Literal["blurred", "hard"] = "blurred"
    composite: Literal["reference", "original"] = "reference"
    save_alpha: bool = False
    area: tuple[float, float] = (0.02, 0.2)
    aspect: tuple[float, float] = (0.5, 2.0)
    batch_size: int = 1
    seed: int = 0
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(key: str, value: object, why: str) -> DearError:
            return DearError(f"inpaint.{key}={value} {why}")

        if self.composite not in COMPOSITES:
            raise bad("composite", self.composite, f"is not one of {', '.join(COMPOSITES)}")
        if self.pipeline_mask not in PIPELINE_MASKS:
            raise bad("pipeline_mask", self.pipeline_mask, f"is not one of {', '.join(PIPELINE_MASKS)}")
        if self.resolution <= 0 or self.resolution % 8:
            raise bad("resolution", self.resolution, "must be a positive multiple of 8 (the VAE's scale factor)")
        if self.steps < 1:
            raise bad("steps", self.steps, "must be at least 1")
        if self.batch_size < 1:
            raise bad("batch_size", self.batch_size, "must be at least 1")
        if self.blur_factor < 0:
            raise bad("blur_factor", self.blur_factor, "must be >= 0 (0: no blur)")
        lo, hi = self.area
        if not 0 < lo <= hi < 1:
            raise bad("area", list(self.area), "must be [low, high] with 0 < low <= high < 1")
        lo, hi = self.aspect
        if not 0 < lo <= hi:
            raise bad("aspect", list(self.aspect), "must be [low, high] with 0 < low <= high")
        for device, name in self.dtype.items():
            if name not in DTYPES:
                raise bad(f"dtype.{device}", name, f"is not one of {', '.join(DTYPES)}")

    @classmethod
    def from_cfg(cls, cfg: Any) -> InpaintSettings:
        """From the `inpaint` config node (a DictConfig or a dict)."""
        from omegaconf import DictConfig, OmegaConf

        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        assert isinstance(raw, dict)
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in raw.items() if k in known}
        for key in ("area", "aspect"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        values["dtype"] = dict(values.get("dtype") or {})
        values["call_kwargs"] = dict(values.get("call_kwargs") or {})
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """What decides an image's pixels (not batch_size, devices or where files go)."""
        keys = (
            "model",
            "revision",
            "variant",
            "dtype",
            "resolution",
            "steps",
            "guidance_scale",
            "strength",
            "prompt",
            "call_kwargs",
            "area",
            "aspect",
            "seed",
            "blur_factor",
            "pipeline_mask",
            "composite",
            "save_alpha",
        )
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in keys)}

    def dtype_for(self, device_type: str) -> str:
        """The dtype for a device type (`cuda`, `cpu`, `mps`); float32 where none is given."""
        return self.dtype.get(device_type, "float32")
