import torch

from dear_exp.dissect import RADAccumulator, mask_weights, rad_per_image


def test_rad_matches_hand_computation_on_aligned_grid():
    # 2 channels on a 4x4 map; the mask covers the top-left 2x2 block exactly (8x8 mask, 2x downsample
    # with bilinear interpolation keeps a block-aligned binary mask binary).
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, :2, :2] = 3.0  # channel 0 fires inside: inside mean 3, background mean 0
    features[0, 1] = 1.0
    features[0, 1, :2, :2] = -1.0  # channel 1 fires outside: inside -1, background 1
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :4] = 1.0
    rad = rad_per_image(features, mask)
    eps = 1e-6
    expected0 = 12.0 / (4 + eps) - 0.0
    expected1 = -4.0 / (4 + eps) - 12.0 / (12 + eps)
    assert torch.allclose(rad[0], torch.tensor([expected0, expected1]), atol=1e-5)


def test_rad_uses_bilinear_soft_weights_and_binarises_first():
    # a 3x3 map from a 6x6 mask whose foreground is a 3x3 block: after bilinear (align_corners=False)
    # downsampling the weights are fractional; check against the same weights computed by hand.
    mask = torch.zeros(1, 6, 6)
    mask[0, :3, :3] = 0.7  # > 0.5, binarised to 1
    w = mask_weights(mask, (3, 3))[0, 0]
    # bilinear 2x downsampling with align_corners=False samples at pixel centres 0.5, 2.5, 4.5 ->
    # averages rows/cols (0,1), (2,3), (4,5): weights 1, 0.5, 0 per axis
    axis = torch.tensor([1.0, 0.5, 0.0])
    assert torch.allclose(w, axis[:, None] * axis[None, :])
    features = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    inside = (features[0, 0] * w).sum() / (w.sum() + 1e-6)
    background = (features[0, 0] * (1 - w)).sum() / ((1 - w).sum() + 1e-6)
    assert torch.allclose(rad_per_image(features, mask)[0, 0], inside - background)
    below = torch.full((1, 6, 6), 0.4)  # nothing above 0.5: no foreground at all
    assert mask_weights(below, (3, 3)).sum() == 0


def test_accumulator_averages_images_and_skips_masks_without_foreground():
    f1 = torch.zeros(1, 1, 2, 2)
    f1[0, 0, 0, 0] = 4.0
    f2 = torch.zeros(1, 1, 2, 2)
    m_top_left = torch.zeros(1, 2, 2)
    m_top_left[0, 0, 0] = 1.0
    acc = RADAccumulator()
    acc.update(torch.cat([f1, f2]), torch.cat([m_top_left, torch.zeros(1, 2, 2)]))  # 2nd lost its region
    acc.update(f2, m_top_left)
    assert acc.count == 2 and acc.skipped == 1
    expected = (rad_per_image(f1, m_top_left) + rad_per_image(f2, m_top_left)) / 2
    assert torch.allclose(acc.compute(), expected[0])


def test_views_without_background_are_skipped_and_none_left_is_an_error():
    """A crop wholly inside the inpainted region has no background to compare with: no RAD, skipped
    (before, its background mean was 0 / eps = 0 and the inside mean was counted as its RAD)."""
    import pytest

    from dear_exp.errors import DearError

    f = torch.rand(3, 2, 4, 4)
    masks = torch.zeros(3, 4, 4)
    masks[0, :2] = 1.0  # both regions
    masks[1] = 1.0  # no background
    acc = RADAccumulator()
    acc.update(f, masks)
    assert acc.count == 1 and acc.skipped == 2
    assert torch.allclose(acc.compute(), rad_per_image(f[:1], masks[:1])[0])
    empty = RADAccumulator()
    empty.update(f[1:], masks[1:])
    with pytest.raises(DearError, match=r"no diagnostic view kept both a generated region and background .*2 skipped"):
        empty.compute()


def test_a_pair_whose_mask_has_one_region_is_refused(tmp_path):
    """A source mask all black (nothing inpainted) or all white (no background) has no RAD at all."""
    import albumentations as A
    import numpy as np
    import pytest
    from PIL import Image

    from dear_exp.data.datasets import InpaintImages
    from dear_exp.data.folders import inpaint_pairs
    from dear_exp.data.images import Preprocess
    from dear_exp.errors import DearError

    folder = tmp_path / "inpaint"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, value in (("ok", None), ("none", 0), ("all", 255)):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{stem}_inpaint.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[:16] = 255
        if value is not None:
            mask[:] = value
        Image.fromarray(mask).save(folder / f"{stem}_mask.png")
    pairs = {p.image.name: p for p in inpaint_pairs(tmp_path, "inpaint", "inpaint", "hint")}
    data = InpaintImages(list(pairs.values()), A.Compose([]), Preprocess((0.5,) * 3, (0.5,) * 3), 0)
    order = {p.image.name: i for i, p in enumerate(data.pairs)}
    assert data[order["ok_inpaint.png"]][2] == 1.0
    with pytest.raises(DearError, match=r"none_mask.png has no inpainted pixels: RAD compares"):
        data[order["none_inpaint.png"]]
    with pytest.raises(DearError, match=r"all_mask.png has no background pixels"):
        data[order["all_inpaint.png"]]
