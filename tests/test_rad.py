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
