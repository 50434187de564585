"""Where the activation's mean moves with position, estimated so that noise is not taken for position."""

import torch

from saeclaims.position_means import PositionSubspace, position_subspaces, subspace_from_halves
from tests.conftest import tiny_model


def _halves(signal: torch.Tensor, n_windows: int, noise: float, seed: int = 0):
    """Per-position sums and counts of two halves of windows x[w, p] = signal[p] + noise."""
    g = torch.Generator().manual_seed(seed)
    t, d = signal.shape
    x = signal[None] + noise * torch.randn(n_windows, t, d, generator=g, dtype=torch.float64)
    a, b = x[0::2], x[1::2]
    counts = tuple(torch.full((t,), float(len(h)), dtype=torch.float64) for h in (a, b))
    return (a.sum(0), b.sum(0)), counts, float(x.pow(2).sum()), x


def test_a_planted_two_direction_position_signal_is_found_and_noise_is_not():
    t, d = 64, 32
    p = torch.arange(t, dtype=torch.float64)
    signal = torch.zeros(t, d, dtype=torch.float64)
    signal[:, 3] = torch.cos(p / 10)
    signal[:, 7] = torch.sin(p / 10)
    sums, counts, sq, x = _halves(signal, 40, 1.0)
    sub = subspace_from_halves(sums, counts, sq, 40)
    assert sub.rank == 2
    assert torch.allclose(sub.basis @ sub.basis.T, torch.eye(2, dtype=torch.float64), atol=1e-9)
    in_plane = sub.basis[:, [3, 7]].pow(2).sum()
    assert in_plane > 1.9  # both rows lie (almost) in the planted plane
    # the explained share: the planted signal's variance (0.5 per direction) over the total (1 per dim + signal)
    assert abs(sub.variance_share - 1.0 / (d + 1.0)) < 0.01
    # the means by position themselves (mean_shift_pos reads them): the centred signal, up to the noise of 40 windows
    assert sub.means.shape == (t, d)
    assert (sub.means - (signal - signal.mean(0))).abs().max() < 5 / 40**0.5


def test_noise_alone_gives_no_direction():
    sums, counts, sq, _ = _halves(torch.zeros(64, 32, dtype=torch.float64), 40, 1.0, seed=3)
    sub = subspace_from_halves(sums, counts, sq, 40)
    assert sub.rank == 0 and sub.basis.shape == (0, 32)


def test_fewer_than_three_positions_seen_by_both_halves_gives_no_direction():
    sums, counts, sq, _ = _halves(torch.randn(4, 5, dtype=torch.float64), 4, 0.1)
    counts = (counts[0], torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    assert subspace_from_halves(sums, counts, sq, 4).rank == 0


def test_position_subspaces_of_a_model_are_orthonormal_and_one_window_has_none():
    model = tiny_model(2, 16, 32, seed=0)
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(1, model.cfg.d_vocab, (24, 32), generator=g)
    toks[:, 0] = 0
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    subs = position_subspaces(model, toks, hooks, bos=0)
    for h in hooks:
        s = subs[h]
        assert isinstance(s, PositionSubspace) and s.n_windows == 24 and 0 <= s.variance_share <= 1
        assert torch.allclose(s.basis @ s.basis.T, torch.eye(s.rank, dtype=s.basis.dtype), atol=1e-6)
    # resid_pre 0 is W_E[t] + W_pos[p]: the random W_pos moves the mean with position
    assert subs[hooks[0]].rank >= 1
    one = position_subspaces(model, toks[:1], hooks, bos=0)
    assert all(s.rank == 0 for s in one.values())


def _three_profiles(weak: float) -> torch.Tensor:
    """Means over 64 positions along dims 3, 7 (variance 0.5 each) and 11 (a weak profile of amplitude `weak`)."""
    p = torch.arange(64, dtype=torch.float64)
    signal = torch.zeros(64, 32, dtype=torch.float64)
    signal[:, 3], signal[:, 7] = torch.cos(p / 10), torch.sin(p / 10)
    signal[:, 11] = weak * torch.cos(3 * p / 10 + 1)
    return signal


def test_a_reproducible_direction_with_too_little_of_the_means_variance_is_not_position():
    """The kept directions are the fewest holding 0.99 of the reproducible means' variance: a weak profile
    (0.5% of it) is cut, a stronger one (2%) is kept; both reproduce perfectly (no noise)."""
    for weak, want in ((0.1, 2), (0.2, 3)):  # variance 0.005 / 0.02 beside 0.5 + 0.5
        sums, counts, sq, _ = _halves(_three_profiles(weak), 40, 0.0)
        assert subspace_from_halves(sums, counts, sq, 40).rank == want, weak
        assert subspace_from_halves(sums, counts, sq, 40, energy=1.0).rank == 3, weak


def test_a_shared_rounding_pattern_below_float32_rank_is_not_position():
    """A pattern both halves share at 1e-6 of the signal (the rounding of the token means, subtracted from both)
    reproduces perfectly but lies below float32's numerical rank: not a direction; at 0.3 it is one."""
    for size, want in ((1e-6, 2), (0.3, 3)):
        sums, counts, sq, _ = _halves(_three_profiles(size), 40, 0.0)
        assert subspace_from_halves(sums, counts, sq, 40, energy=1.0).rank == want, size
