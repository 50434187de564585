"""The positional subspace a model computes: where the residual's mean moves with position.

Why: W_pos is a summand of the residual stream only before the first block; later blocks compute positional
features of their own (and a rotary model has no W_pos at all). The position-conditional mean mu_p of an
activation, estimated on held-out windows (never the evaluation set the claims are judged on), shows where
position lives at any hook of any model. Its centred rows mu_p - mu span the subspace; only the directions
reproducible across two halves of the held-out windows are kept, so estimation noise (which is in every
direction) is not taken for position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

REPRODUCIBLE = 0.5  # a direction is kept where its two half-sample profiles over positions correlate above this
MEAN_ENERGY = 0.99  # the kept directions hold this share of the reproducible position means' variance (as
# pos_part_repair keeps W_pos's directions holding 0.99 of its squared norm): a direction where the mean barely
# moves with position is not a positional feature, however reproducible
ACTIVATION_EPS = 2.0**-23  # activations are float32: means below their rounding are not a direction at all


@dataclass(frozen=True)
class PositionSubspace:
    """Orthonormal rows [k, d] spanning the hook's reproducible position-conditional mean, and what it holds."""

    basis: torch.Tensor
    n_windows: int
    variance_share: float  # share of the activation's variance (non-BOS tokens) its mean by position explains in basis
    means: torch.Tensor | None = None  # [T, d] the mean by position (token held fixed), centred; 0 where unseen

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])


def _position_sums(acts: torch.Tensor, use: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position sums [T, d] and counts [T] of float64 activations where `use`, and the sum of squares."""
    x = acts.double() * use[..., None]
    return x.sum(0), use.double().sum(0), x.pow(2).sum()


def subspace_from_halves(sums: tuple[torch.Tensor, torch.Tensor], counts: tuple[torch.Tensor, torch.Tensor],
                         sq: float, n_windows: int, threshold: float = REPRODUCIBLE,
                         raw: torch.Tensor | None = None, energy: float = MEAN_ENERGY) -> PositionSubspace:
    """The subspace from two halves' per-position sums [T, d] and counts [T] (positions with no count in either
    half are left out): right singular vectors of half A's centred means, kept while their profile over
    positions correlates above `threshold` with half B's, and while their singular value is above float32's
    numerical rank (sigma_1 x max(T, d) x ACTIVATION_EPS: below it a direction is the rounding of the token
    means, which both halves share, so it reproduces without being position); the basis is the same number of
    leading directions of both halves together, cut to the fewest that hold MEAN_ENERGY of the variance of the
    means in the reproducible ones. `sq` is the activations' sum of squares and `raw` their per-position sums
    (default: the halves' sums) for the variance the share is of."""
    total, n = sums[0] + sums[1], counts[0] + counts[1]
    have = (counts[0] > 0) & (counts[1] > 0)
    dtype = sums[0].dtype

    def centred(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mu = s[have] / c[have, None]
        return mu - (s[have].sum(0) / c[have].sum())

    if int(have.sum()) < 3:
        return PositionSubspace(torch.zeros(0, sums[0].shape[1], dtype=dtype), n_windows, 0.0)
    means = torch.zeros_like(total)
    means[have] = centred(total, n)
    a, b = centred(sums[0], counts[0]), centred(sums[1], counts[1])
    _, sv, vh = torch.linalg.svd(a, full_matrices=False)
    floor = float(sv[0]) * max(a.shape) * ACTIVATION_EPS if len(sv) else 0.0
    k = 0
    for v, s in zip(vh, sv, strict=True):
        if float(s) <= floor:
            break
        pa, pb = a @ v, b @ v
        r = torch.corrcoef(torch.stack([pa, pb]))[0, 1]
        if not bool(torch.isfinite(r)) or float(r) <= threshold:
            break
        k += 1
    full = centred(total, n)
    _, _, vh_full = torch.linalg.svd(full, full_matrices=False)
    raw = total if raw is None else raw
    mean = raw[have].sum(0) / n[have].sum()
    var_total = float(sq / n[have].sum() - mean.pow(2).sum())
    per = ((full @ vh_full[:k].T).pow(2) * n[have, None]).sum(0) / n[have].sum()  # variance of the means, each
    if k:
        k = int((per.cumsum(0) < energy * per.sum()).sum()) + 1
    kept = vh_full[:k]
    # the variance of the means in the kept directions only: the noise of the rest is not position
    explained = float(per[:k].sum())
    share = explained / var_total if var_total > 0 else 0.0
    return PositionSubspace(kept.contiguous(), n_windows, share, means)


Activations = Callable[[torch.Tensor, list[str]], Mapping[str, torch.Tensor]]


def _cached(model) -> Activations:
    def run(toks: torch.Tensor, points: list[str]) -> Mapping[str, torch.Tensor]:
        return model.run_with_cache(toks, names_filter=lambda n: n in points)[1]
    return run


@torch.no_grad()
def position_subspaces(model, tokens: torch.Tensor, hooks: Sequence[str], bos: int,
                       batch_size: int = 8, activations: Activations | None = None) -> dict[str, PositionSubspace]:
    """PositionSubspace of each hook point, from a clean pass over held-out windows `tokens` [N, T] (BOS tokens
    left out; windows alternate between the halves).

    Position's effect is taken with the token held fixed: each activation first loses its token's mean (over all
    held-out windows), so a token distribution that drifts with position (a document's opening words) is not
    taken for a positional feature. The sum over windows of x - m_t at position p is S_p - sum_t n_pt m_t, so the
    model runs once and the token means are subtracted after, from the position x token counts.
    `activations(tokens, hook points)` gives the clean activations (default: run_with_cache of the whole model;
    a run passes its own fused forward that stops after the last hook).
    """
    activations = activations or _cached(model)
    points = sorted(set(hooks))
    vocab, index = torch.unique(tokens, return_inverse=True)
    n_tok, t_len = len(vocab), tokens.shape[1]
    half_of = torch.arange(len(tokens), device=tokens.device) % 2
    sums: dict[str, list] = {h: [None, None] for h in points}
    tok_sum: dict[str, torch.Tensor] = {}
    sq = {h: 0.0 for h in points}
    counts = [torch.zeros(t_len, dtype=torch.float64, device=tokens.device) for _ in (0, 1)]
    tok_count = torch.zeros(n_tok, dtype=torch.float64, device=tokens.device)
    for i in range(0, len(tokens), batch_size):
        toks, idx, half = tokens[i : i + batch_size], index[i : i + batch_size], half_of[i : i + batch_size]
        cache = activations(toks, points)
        use = toks != bos
        for j in (0, 1):
            counts[j] += (use & (half == j)[:, None]).double().sum(0)
        tok_count.index_add_(0, idx[use], torch.ones(int(use.sum()), dtype=torch.float64, device=toks.device))
        for h in points:
            act = cache[h].reshape(*toks.shape, -1).double() * use[..., None]  # attention hooks: heads flattened
            if h not in tok_sum:
                tok_sum[h] = torch.zeros(n_tok, act.shape[-1], dtype=torch.float64, device=toks.device)
                sums[h] = [torch.zeros(t_len, act.shape[-1], dtype=torch.float64, device=toks.device) for _ in (0, 1)]
            tok_sum[h].index_add_(0, idx[use], act[use])
            sq[h] += float(act.pow(2).sum())
            for j in (0, 1):
                sums[h][j] += act[half == j].sum(0)
    out = {}
    for h in points:
        if not counts[1].any():  # one window: no second half to reproduce anything on
            out[h] = PositionSubspace(torch.zeros(0, sums[h][0].shape[1], dtype=torch.float64), len(tokens), 0.0)
            continue
        tok_mean = tok_sum[h] / tok_count.clamp(min=1)[:, None]
        centred = []
        for j in (0, 1):
            rows = half_of == j
            use = tokens[rows] != bos
            expected = torch.zeros_like(sums[h][j])  # sum over windows at p of their tokens' means
            pos = torch.arange(t_len, device=tokens.device).expand_as(tokens[rows])
            expected.index_add_(0, pos[use], tok_mean[index[rows][use]])
            centred.append(sums[h][j] - expected)
        out[h] = subspace_from_halves((centred[0], centred[1]), (counts[0], counts[1]), sq[h], len(tokens),
                                      raw=(sums[h][0] + sums[h][1]))
    return out
