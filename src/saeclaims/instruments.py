"""Each claim's statistic, computed from per-token measurements with a cluster-bootstrap interval.

Quantities are reduced to per-sequence sums and counts over a position range; the statistic is then
a function of those totals, so every resample recomputes it from resampled data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .splice import Measurements
from .stats import Interval, cluster_bootstrap, spearman


@dataclass(frozen=True)
class Quantity:
    """Mean of a metric for one variant at one hook over positions [lo, hi)."""

    variant: str
    hook: str
    metric: str
    lo: int
    hi: int | None

    def parts(self, m: Measurements, key: str) -> dict[str, np.ndarray]:
        if self.metric in ("x_norm", "wpos_share"):
            arr = m.activation[self.hook][self.metric]
        else:
            arr = m.get(self.variant, self.hook, self.metric)
        hi = arr.shape[1] if self.hi is None else min(self.hi, arr.shape[1])
        if self.lo >= hi:
            raise ValueError(f"empty position range [{self.lo}, {hi}) for {self}")
        block = arr[:, self.lo : hi].astype(np.float64)
        defined = np.isfinite(block)  # e.g. L0 is undefined at BOS tokens, which are never patched
        return {f"{key}_sum": np.where(defined, block, 0.0).sum(1), f"{key}_n": defined.sum(1).astype(np.float64)}


def _mean(t: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    return t[f"{key}_sum"] / t[f"{key}_n"]


def inside(m: Measurements, hook: str) -> tuple[int, int]:
    return 1, m.context_sizes[hook]


def outside(m: Measurements, hook: str) -> tuple[int, None]:
    return m.context_sizes[hook], None


def check_beyond_context(m: Measurements, hook: str) -> None:
    """Claims about positions beyond the context need some."""
    ctx = m.context_sizes[hook]
    if m.n_positions <= ctx:
        raise ValueError(f"sequences of {m.n_positions + 1} tokens leave no position beyond the SAE's "
                         f"training context {ctx} at {hook}: raise --seq-len above {ctx + 1}")


def n_tokens(m: Measurements, lo: int, hi: int | None) -> int:
    hi = m.n_positions if hi is None else min(hi, m.n_positions)
    return m.n_seqs * max(0, hi - lo)


def _boot(m: Measurements, quantities: dict[str, Quantity], stat, confidence: float, seed: int,
          n_resamples: int) -> Interval:
    parts: dict[str, np.ndarray] = {}
    for key, q in quantities.items():
        parts.update(q.parts(m, key))
    return cluster_bootstrap(parts, stat, confidence, n_resamples, seed)


def ratio(m: Measurements, num: Quantity, den: Quantity, confidence: float, seed: int = 0,
          n_resamples: int = 2000) -> Interval:
    return _boot(m, {"a": num, "b": den}, lambda t: _mean(t, "a") / _mean(t, "b"), confidence, seed,
                 n_resamples)


def beyond_over_inside(m: Measurements, hook: str, variant: str, metric: str, confidence: float,
                       seed: int = 0, n_resamples: int = 2000) -> Interval:
    check_beyond_context(m, hook)
    return ratio(m, Quantity(variant, hook, metric, *outside(m, hook)),
                 Quantity(variant, hook, metric, *inside(m, hook)), confidence, seed, n_resamples)


def ce_score(m: Measurements, hook: str, confidence: float, seed: int = 0, n_resamples: int = 2000) -> Interval:
    """sae_lens's CE-loss score over in-context positions: (CE_zero - CE_sae) / (CE_zero - CE_clean)."""
    lo, hi = inside(m, hook)
    q = {"z": Quantity("zero", hook, "dce", lo, hi), "s": Quantity("sae", hook, "dce", lo, hi)}
    return _boot(m, q, lambda t: (_mean(t, "z") - _mean(t, "s")) / _mean(t, "z"), confidence, seed,
                 n_resamples)


def recovery(m: Measurements, hook: str, variant: str, confidence: float, seed: int = 0,
             n_resamples: int = 2000) -> Interval:
    """(dCE_sae(O) - dCE_v(O)) / (dCE_sae(O) - dCE_sae(I)): the share of the excess that v removes."""
    check_beyond_context(m, hook)
    q = {"so": Quantity("sae", hook, "dce", *outside(m, hook)),
         "si": Quantity("sae", hook, "dce", *inside(m, hook)),
         "vo": Quantity(variant, hook, "dce", *outside(m, hook))}

    def stat(t):
        so = _mean(t, "so")
        return (so - _mean(t, "vo")) / (so - _mean(t, "si"))

    return _boot(m, q, stat, confidence, seed, n_resamples)


def layer_trend(m: Measurements, hooks: Sequence[str], layers: Sequence[int], what: str, confidence: float,
                seed: int = 0, n_resamples: int = 2000) -> Interval:
    """Spearman rho of layer against per-hook mean dCE_sae(I) (`what='inside'`) or excess (`'excess'`)."""
    q: dict[str, Quantity] = {}
    for i, h in enumerate(hooks):
        q[f"i{i}"] = Quantity("sae", h, "dce", *inside(m, h))
        if what == "excess":
            check_beyond_context(m, h)
            q[f"o{i}"] = Quantity("sae", h, "dce", *outside(m, h))
    x = np.asarray(layers, dtype=np.float64)

    def stat(t):
        per_hook = []
        for i in range(len(hooks)):
            v = _mean(t, f"i{i}")
            per_hook.append(_mean(t, f"o{i}") - v if what == "excess" else v)
        return spearman(x, np.stack(per_hook, axis=-1))

    return _boot(m, q, stat, confidence, seed, n_resamples)


def mean_of(m: Measurements, quantity: Quantity, confidence: float, seed: int = 0,
            n_resamples: int = 2000) -> Interval:
    return _boot(m, {"a": quantity}, lambda t: _mean(t, "a"), confidence, seed, n_resamples)


def share_of_tokens(flags: np.ndarray, confidence: float, seed: int = 0, n_resamples: int = 2000) -> Interval:
    """Share of True among tokens [n_seqs, n_pos], bootstrapped over sequences."""
    flags = np.asarray(flags, dtype=np.float64)
    parts = {"a_sum": flags.sum(1), "a_n": np.full(len(flags), flags.shape[1], dtype=np.float64)}
    return cluster_bootstrap(parts, lambda t: _mean(t, "a"), confidence, n_resamples, seed)
