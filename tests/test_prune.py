import pytest
import torch

from dear_exp.errors import DearError
from dear_exp.prune import build_mask, prune_counts


@pytest.mark.parametrize(
    ("alpha_low", "alpha_high", "n_low", "n_high", "kept"),
    [(0.2, 0.8, 409, 409, 1230), (0.3, 0.7, 614, 614, 820), (0.1, 0.9, 204, 204, 1640)],
)
def test_reference_counts_on_2048_channels(alpha_low, alpha_high, n_low, n_high, kept):
    assert prune_counts(2048, alpha_low, alpha_high) == (n_low, n_high)
    scores = torch.randn(2048, generator=torch.Generator().manual_seed(0))
    assert int(build_mask(scores, "bilateral", alpha_low, alpha_high).sum()) == kept


def test_bilateral_prunes_both_extremes_and_keeps_the_middle():
    scores = torch.arange(10, dtype=torch.float32)[torch.randperm(10, generator=torch.Generator().manual_seed(1))]
    mask = build_mask(scores, "bilateral", 0.2, 0.8)
    assert sorted(scores[mask.bool()].tolist()) == [2, 3, 4, 5, 6, 7]
    assert sorted(scores[~build_mask(scores, "high", 0.2, 0.8).bool()].tolist()) == [8, 9]
    assert sorted(scores[~build_mask(scores, "low", 0.2, 0.8).bool()].tolist()) == [0, 1]
    assert build_mask(scores, "none", 0.2, 0.8).sum() == 10


def test_random_mode_prunes_as_many_seeded():
    scores = torch.randn(2048)
    a = build_mask(scores, "random", 0.2, 0.8, seed=3)
    assert int(a.sum()) == 1230
    assert torch.equal(a, build_mask(torch.randn(2048), "random", 0.2, 0.8, seed=3))
    assert not torch.equal(a, build_mask(scores, "random", 0.2, 0.8, seed=4))


@pytest.mark.parametrize(("lo", "hi"), [(0.5, 0.5), (0.8, 0.2), (-0.1, 0.5), (0.2, 1.5)])
def test_impossible_levels_are_refused(lo, hi):
    with pytest.raises(DearError, match=r"prune\.alpha_(low|high)=.*(alpha_low < alpha_high|must be a number)"):
        build_mask(torch.randn(16), "bilateral", lo, hi)


def test_every_valid_band_keeps_at_least_one_channel():
    # floor(C*a) + floor(C*(1-b)) < C whenever a < b
    gen = torch.Generator().manual_seed(0)
    for _ in range(2000):
        c = int(torch.randint(1, 64, (1,), generator=gen))
        a, b = sorted(torch.rand(2, generator=gen).tolist())
        if a == b:
            continue
        try:
            n_low, n_high = prune_counts(c, a, b)
        except DearError:  # only reachable when rounding closes a band narrower than 1e-9 * C
            assert b - a < 1e-8
            continue
        assert n_low == int(c * a + 1e-9) and n_high == int(c * (1 - b) + 1e-9) and n_low + n_high < c


def test_float_noise_does_not_change_counts_and_a_closed_band_is_refused():
    assert prune_counts(10, 0.2, 0.8) == (2, 2)  # int(10 * (1 - 0.8)) alone would give 1
    assert prune_counts(100, 0.29, 0.71) == (29, 29)  # int(100 * 0.29) alone would give 28
    with pytest.raises(DearError, match="at least one channel"):
        prune_counts(10, 0.3, 0.3 + 1e-14)


def test_unknown_mode():
    with pytest.raises(DearError, match=r"prune\.mode='both' must be one of bilateral, .*released"):
        build_mask(torch.randn(4), "both", 0.2, 0.8)
