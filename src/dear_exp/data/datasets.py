"""Datasets for training, the diagnostic inpaint set and evaluation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from dear_exp.data.folders import InpaintPair, Sample
from dear_exp.data.images import Preprocess, image_header, load_image
from dear_exp.data.postprocess import Chain
from dear_exp.data.seeding import item_seed
from dear_exp.errors import DearError


def _split(index: int | tuple[int, int]) -> tuple[int, int | None]:
    """A sampler may hand over (index, seed); a plain index gets a seed from the item's path."""
    return index if isinstance(index, tuple) else (index, None)


class LabelledImages(Dataset):
    """(image, label) with augmentation seeded per item."""

    def __init__(self, samples: list[Sample], augment: A.Compose, preprocess: Preprocess, seed: int) -> None:
        self.samples = samples
        self.augment = augment
        self.preprocess = preprocess
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = _split(index)
        sample = self.samples[i]
        self.augment.set_random_seed(item_seed(self.seed, sample.key) if seed is None else seed)
        image = self.augment(image=np.array(load_image(sample.path)))["image"]
        return self.preprocess(image), torch.tensor(float(sample.label))


class InpaintImages(Dataset):
    """(image, mask, target): the target is 1 while the mask survives augmentation, else 0."""

    def __init__(
        self, pairs: list[InpaintPair], augment: A.Compose, preprocess: Preprocess, seed: int, weight: str = "mask"
    ) -> None:
        if weight not in ("mask", "alpha"):
            raise DearError(f"diag_data.rad_weight={weight} is not one of mask, alpha")
        missing = [p for p in pairs if p.alpha is None] if weight == "alpha" else []
        if missing:
            raise DearError(
                f"diag_data.rad_weight=alpha but {len(missing)} pair(s) have no {{stem}}_alpha.png, e.g. "
                f"{missing[0].mask.with_name(missing[0].mask.stem[: -len('_mask')] + '_alpha.png')}; "
                "regenerate with task=make_inpaint inpaint.save_alpha=true or set diag_data.rad_weight=mask"
            )
        self.pairs = pairs
        self.augment = augment
        self.preprocess = preprocess
        self.seed = seed
        self.weight = weight

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, seed = _split(index)
        pair = self.pairs[i]
        image = np.array(load_image(pair.image))
        mask = np.array(load_image(pair.mask, mode="L"))
        inside = int((mask > 127).sum())
        if inside == 0 or inside == mask.size:
            raise DearError(
                f"mask {pair.mask} has {'no inpainted' if inside == 0 else 'no background'} pixels: RAD compares "
                "the generated region with the rest of the image, so this pair has none; regenerate it or remove "
                f"{pair.image.name} and its mask"
            )
        if mask.shape != image.shape[:2]:
            raise DearError(
                f"mask {pair.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image} is "
                f"{image.shape[1]}x{image.shape[0]}; regenerate the pair"
            )
        self.augment.set_random_seed(item_seed(self.seed, pair.key) if seed is None else seed)
        if self.weight == "alpha":
            assert pair.alpha is not None
            alpha = np.array(load_image(pair.alpha, mode="L"))
            if alpha.shape != mask.shape:
                raise DearError(
                    f"alpha {pair.alpha} is {alpha.shape[1]}x{alpha.shape[0]} but its mask {pair.mask} is "
                    f"{mask.shape[1]}x{mask.shape[0]}; regenerate the pair"
                )
            out = self.augment(image=image, masks=[mask, alpha])
            m = self.preprocess.mask(out["masks"][0])
            return self.preprocess(out["image"]), self.preprocess.mask(out["masks"][1]), _survived(m)
        out = self.augment(image=image, mask=mask)
        m = self.preprocess.mask(out["mask"])
        return self.preprocess(out["image"]), m, _survived(m)


def _survived(mask: torch.Tensor) -> torch.Tensor:
    """1.0 when generated pixels survived this view's augmentation (its label in the refit: fake), else 0.0."""
    return torch.tensor(float((mask > 0.5).any()))


class EvalImages(Dataset):
    """(image, label, index) at native resolution after a post-processing chain."""

    def __init__(self, samples: list[Sample], chain: Chain, preprocess: Preprocess) -> None:
        self.samples = samples
        self.chain = chain
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def final_sizes(self) -> list[tuple[int, int]]:
        """Sizes after post-processing and the detector's trim, from headers and drawn parameters."""
        sizes = []
        for s in self.samples:
            _, size = self.chain.plan(s.key, image_header(s.path)[1])
            sizes.append(self.preprocess.out_size(*size))
        return sizes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = self.chain(load_image(sample.path), sample.key)
        return self.preprocess(np.array(image)), torch.tensor(float(sample.label)), torch.tensor(index)
