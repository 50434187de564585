"""Each claim's statistic, computed from per-token measurements with a cluster-bootstrap interval.

Quantities are reduced to per-sequence sums and counts over a position range; the statistic is then
a function of those totals, so every resample recomputes it from resampled data. Every interval
carries the sample it was computed on (sequences, and the distinct token positions read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .splice import Measurements
from .stats import DEFAULT_BOOTSTRAP, Bootstrap, Interval, cluster_bootstrap, spearman


@dataclass(frozen=True)
class Quantity:
    """Mean of a metric for one variant at one hook over positions [lo, hi)."""

    variant: str
    hook: str
    metric: str
    lo: int
    hi: int | None

    def positions(self, m: Measurements) -> range:
        hi = m.n_positions if self.hi is None else min(self.hi, m.n_positions)
        return range(self.lo, hi)

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


def _boot(m: Measurements, quantities: dict[str, Quantity], stat, boot: Bootstrap) -> Interval:
    parts: dict[str, np.ndarray] = {}
    positions: set[int] = set()
    for key, q in quantities.items():
        parts.update(q.parts(m, key))
        positions.update(q.positions(m))
    iv = cluster_bootstrap(parts, stat, boot.confidence, boot.n_resamples, boot.seed)
    return iv.with_sample(m.n_seqs, m.n_seqs * len(positions))


def ratio(m: Measurements, num: Quantity, den: Quantity, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    return _boot(m, {"a": num, "b": den}, lambda t: _mean(t, "a") / _mean(t, "b"), boot)


def beyond_over_inside(m: Measurements, hook: str, variant: str, metric: str,
                       boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    check_beyond_context(m, hook)
    return ratio(m, Quantity(variant, hook, metric, *outside(m, hook)),
                 Quantity(variant, hook, metric, *inside(m, hook)), boot)


def ce_score(m: Measurements, hook: str, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    """sae_lens's CE-loss score over in-context positions: (CE_zero - CE_sae) / (CE_zero - CE_clean)."""
    lo, hi = inside(m, hook)
    q = {"z": Quantity("zero", hook, "dce", lo, hi), "s": Quantity("sae", hook, "dce", lo, hi)}
    return _boot(m, q, lambda t: (_mean(t, "z") - _mean(t, "s")) / _mean(t, "z"), boot)


def recovery(m: Measurements, hook: str, variant: str, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    """(dCE_sae(O) - dCE_v(O)) / (dCE_sae(O) - dCE_sae(I)): the share of the excess that v removes."""
    check_beyond_context(m, hook)
    q = {"so": Quantity("sae", hook, "dce", *outside(m, hook)),
         "si": Quantity("sae", hook, "dce", *inside(m, hook)),
         "vo": Quantity(variant, hook, "dce", *outside(m, hook))}

    def stat(t):
        so = _mean(t, "so")
        return (so - _mean(t, "vo")) / (so - _mean(t, "si"))

    return _boot(m, q, stat, boot)


def layer_trend(m: Measurements, hooks: Sequence[str], layers: Sequence[int], what: str,
                boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
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

    return _boot(m, q, stat, boot)


def mean_of(m: Measurements, quantity: Quantity, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    return _boot(m, {"a": quantity}, lambda t: _mean(t, "a"), boot)


def share_of_tokens(flags: np.ndarray, boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    """Share of True among tokens [n_seqs, n_pos], bootstrapped over sequences."""
    flags = np.asarray(flags, dtype=np.float64)
    parts = {"a_sum": flags.sum(1), "a_n": np.full(len(flags), flags.shape[1], dtype=np.float64)}
    iv = cluster_bootstrap(parts, lambda t: _mean(t, "a"), boot.confidence, boot.n_resamples, boot.seed)
    return iv.with_sample(flags.shape[0], flags.size)
