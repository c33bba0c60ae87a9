"""Training augmentation with albumentations, applied to image and mask together."""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import cv2

from dear_exp.errors import DearError


def build_augment(cfg: dict[str, Any]) -> A.Compose:
    """`reference`: the DEAR training recipe (method.md step 4); `crop_flip`: random crop + flip
    (how NPR was trained); `center_crop`: validation; `none`: identity. Geometric ops move the mask with the image."""
    name = cfg["name"]
    if name == "none":
        return A.Compose([])
    crop = int(cfg["crop"])
    pad_crop = [
        A.PadIfNeeded(min_height=crop, min_width=crop, border_mode=cv2.BORDER_REFLECT),
        A.RandomCrop(crop, crop),
    ]
    if name == "center_crop":
        return A.Compose([pad_crop[0], A.CenterCrop(crop, crop)])
    if name == "crop_flip":
        return A.Compose([*pad_crop, A.HorizontalFlip(p=0.5)])
    if name != "reference":
        raise DearError(f"unknown augment.name {name!r}: choose reference, crop_flip, center_crop or none")
    var_lo, var_hi = cfg["noise_var"]
    hole = int(cfg["cutout_size"])
    rrc = int(cfg["resized_crop"])
    return A.Compose(
        [
            A.RandomResizedCrop(size=(rrc, rrc), scale=(0.08, 1.0), ratio=(0.75, 4 / 3), p=cfg["p_resized_crop"]),
            A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=cfg["p_jitter"]),
            A.ToGray(p=cfg["p_gray"]),
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(hole, hole),
                hole_width_range=(hole, hole),
                fill=128,
                p=cfg["p_cutout"],
            ),
            A.GaussNoise(std_range=(math.sqrt(var_lo) / 255, math.sqrt(var_hi) / 255), p=cfg["p_noise"]),
            A.GaussianBlur(sigma_limit=tuple(cfg["blur_sigma"]), p=cfg["p_blur"]),
            A.ImageCompression(quality_range=tuple(cfg["jpeg_quality"]), p=cfg["p_jpeg"]),
            A.RandomRotate90(p=1.0),
            A.HorizontalFlip(p=0.5),
            *pad_crop,
        ]
    )
