"""Each claim's statistic, computed from per-token measurements with a cluster-bootstrap interval.

Quantities are reduced to per-sequence sums and counts over a position range; the statistic is then
a function of those totals, so every resample recomputes it from resampled data. Every interval
carries the sample it was computed on (sequences, and the distinct token positions read).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .measurements import Measurements
from .stats import DEFAULT_BOOTSTRAP, Bootstrap, Interval, cluster_bootstrap, spearman


@dataclass(frozen=True)
class Quantity:
    """Mean of a metric for one variant at one hook over positions [lo, hi) (hi None: every position with a
    loss column, T-1 of T)."""

    variant: str
    sae_id: str
    metric: str
    lo: int
    hi: int | None

    def positions(self, m: Measurements) -> range:
        hi = m.n_positions if self.hi is None else min(self.hi, m.n_positions)
        return range(self.lo, hi)

    def parts(self, m: Measurements, key: str) -> dict[str, np.ndarray]:
        """Per-sequence sum and count over the positions [lo, hi) that have a loss column (the last token
        predicts nothing): activations ([n, T]) and losses or reconstruction metrics ([n, T-1]) over the same
        positions, so "beyond the context" is [ctx, T-1) for a norm as for a loss."""
        if self.metric in ("x_norm", "wpos_share"):
            arr = m.activation[self.sae_id][self.metric]
        else:
            arr = m.get(self.variant, self.sae_id, self.metric)
        last = min(arr.shape[1], m.n_positions)
        hi = last if self.hi is None else min(self.hi, last)
        if self.lo >= hi:
            raise ValueError(f"empty position range [{self.lo}, {hi}) for {self}")
        self._check_converged(m, hi)
        block = arr[:, self.lo : hi].astype(np.float64)
        defined = np.isfinite(block)  # e.g. L0 is undefined at BOS tokens, which are never patched
        return {f"{key}_sum": np.where(defined, block, 0.0).sum(1), f"{key}_n": defined.sum(1).astype(np.float64)}


    def _check_converged(self, m: Measurements, hi: int) -> None:
        """A variant whose solver reports unconverged tokens (reencode) is never read silently."""
        if self.metric == "unconverged":
            return
        flags = m.metrics.get((self.variant, self.sae_id), {}).get("unconverged")
        if flags is None:
            return
        bad = np.nansum(flags[:, self.lo : hi])
        if bad > 0:
            total = int(np.isfinite(flags[:, self.lo : hi]).sum())
            raise UnconvergedError(f"variant {self.variant} at {self.sae_id}: the solver did not converge on "
                                   f"{int(bad)} of {total} tokens in positions [{self.lo}, {hi}); its "
                                   "statistics would mix in codes that are not its answer")


class UnconvergedError(ValueError):
    """A statistic would read tokens where a variant's solver did not converge."""


def _mean(t: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    return t[f"{key}_sum"] / t[f"{key}_n"]


def _check_boot(boot) -> Bootstrap:
    if not isinstance(boot, Bootstrap):
        raise TypeError(f"expected the bootstrap settings (saeclaims.stats.Bootstrap), got {boot!r}")
    return boot


REGIONS = ("inside", "outside", "excess")


def _region(m: Measurements, hook: str, region: str) -> tuple[int, int | None]:
    if region == "inside":
        return inside(m, hook)
    if region == "outside":
        check_beyond_context(m, hook)
        return outside(m, hook)
    raise ValueError(f"region must be one of {REGIONS}, got {region!r}")


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


def _memo_key(parts: Mapping[str, np.ndarray], stat, boot: Bootstrap) -> tuple | None:
    """What an interval is a function of: the per-sequence data (its bytes), the statistic's code and the
    values it closes over, and the bootstrap settings; None when a closed-over value is unhashable."""
    code = getattr(stat, "__code__", None)
    if code is None:
        return None
    cells = tuple(c.cell_contents for c in (getattr(stat, "__closure__", None) or ()))
    data = tuple((k, v.dtype.str, v.shape, v.tobytes()) for k, v in sorted(parts.items()))
    key = (data, code, cells, getattr(stat, "__defaults__", None), boot)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _boot(m: Measurements, quantities: dict[str, Quantity], stat, boot: Bootstrap) -> Interval:
    """The cluster-bootstrap interval of `stat` over `quantities`. Formed once per measurements for the same
    data, statistic and settings (several claims gate on the same excess; the figures redraw the claims'
    statistics): asked for again, it is the same interval."""
    parts: dict[str, np.ndarray] = {}
    positions: set[int] = set()
    for key, q in quantities.items():
        parts.update(q.parts(m, key))
        positions.update(q.positions(m))
    memo = _memo_key(parts, stat, boot)
    if memo is not None and memo in m.interval_cache:
        return m.interval_cache[memo]
    with np.errstate(divide="ignore", invalid="ignore"):  # an undefined estimate gives an undefined interval
        iv = cluster_bootstrap(parts, stat, boot.confidence, boot.n_resamples, boot.seed, clusters=m.clusters)
    iv = iv.with_sample(m.n_seqs, m.n_seqs * len(positions))
    if memo is not None:
        m.interval_cache[memo] = iv
    return iv


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


def excess(m: Measurements, hook: str, variant: str = "sae", metric: str = "dce",
           boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    """m_v(O) - m_v(I): how much more of `metric` variant v adds beyond the context than within it.

    O = outside(m, hook) = positions [ctx, T-1), I = inside(m, hook) = [1, ctx). The denominator of
    every recovery-type statistic: callers gate on this interval lying above 0 before dividing by
    it (a recovery of an excess that may be 0 is not a share of anything). Zero means the variant is
    as good beyond its context as within it; negative, better.
    """
    check_beyond_context(m, hook)
    q = {"o": Quantity(variant, hook, metric, *outside(m, hook)),
         "i": Quantity(variant, hook, metric, *inside(m, hook))}
    return _boot(m, q, lambda t: _mean(t, "o") - _mean(t, "i"), _check_boot(boot))


# An excess a recovery divides by must be large enough to matter, not only significant (issue 23): at least a
# fiftieth of a nat per token (nMSE: of the variance) and a tenth of what the SAE adds in context. Set from the
# words ("degrades", "fails") before looking at any subject: a share of a negligible failure says nothing.
EXCESS_FLOOR = {"dce": 0.02, "nmse": 0.02}
EXCESS_FLOOR_SHARE = 0.1


def excess_floor(m: Measurements, hook: str, metric: str = "dce", variant: str = "sae") -> float:
    """max(EXCESS_FLOOR[metric], EXCESS_FLOOR_SHARE x the variant's mean metric in context)."""
    arr = m.get(variant, hook, metric)[:, slice(*inside(m, hook))].astype(np.float64)
    in_context = float(np.nanmean(arr)) if np.isfinite(arr).any() else 0.0
    return max(EXCESS_FLOOR[metric], EXCESS_FLOOR_SHARE * in_context)


def _control_quantities(m: Measurements, hook: str, variant: str, control: str, metric: str) -> dict[str, Quantity]:
    check_beyond_context(m, hook)
    o, i = outside(m, hook), inside(m, hook)
    return {"vo": Quantity(variant, hook, metric, *o), "vi": Quantity(variant, hook, metric, *i),
            "co": Quantity(control, hook, metric, *o), "ci": Quantity(control, hook, metric, *i)}


def _control_excess(t) -> np.ndarray:
    return _mean(t, "vo") - _mean(t, "vi") * (_mean(t, "co") / _mean(t, "ci"))


def control_excess(m: Measurements, hook: str, boot: Bootstrap = DEFAULT_BOOTSTRAP, variant: str = "sae",
                   control: str = "full_context_sae", metric: str = "dce") -> Interval:
    """m_v(O) - m_v(I) * (m_c(O) / m_c(I)): v's excess beyond what the position trend predicts.

    dCE falls with position for every SAE, even one trained at the full context (later tokens have
    more context, so the model's own loss and the loss an SAE adds both change with position):
    m(O) - m(I) mixes the position trend with the failure beyond the training context. The control
    c (by default the full-context SAE of the same hook, which saw every position in training) has
    only the trend, so m_c(O) / m_c(I) is the ratio a well-trained SAE shows between the two
    regions; scaling v's in-context value by it predicts what v would show beyond the context
    without a context failure, and this statistic is what v shows on top. Zero when v's O/I ratio
    equals the control's; gate control-relative recoveries on it lying above 0.
    """
    q = _control_quantities(m, hook, variant, control, metric)
    return _boot(m, q, _control_excess, _check_boot(boot))


def control_ratio(m: Measurements, hook: str, boot: Bootstrap = DEFAULT_BOOTSTRAP, variant: str = "sae",
                  control: str = "full_context_sae", metric: str = "dce") -> Interval:
    """(m_v(O) / m_v(I)) / (m_c(O) / m_c(I)): v's beyond/inside ratio relative to the control's.

    1 when v degrades beyond the context exactly as much as the position trend of the full-context
    control SAE predicts (see control_excess); above 1, v degrades more.
    """
    q = _control_quantities(m, hook, variant, control, metric)
    return _boot(m, q, lambda t: (_mean(t, "vo") / _mean(t, "vi")) / (_mean(t, "co") / _mean(t, "ci")),
                 _check_boot(boot))


def control_recovery(m: Measurements, hook: str, variant: str, boot: Bootstrap = DEFAULT_BOOTSTRAP,
                     control: str = "full_context_sae") -> Interval:
    """(dCE_sae(O) - dCE_v(O)) / control_excess(sae): the share of the SAE's excess beyond the
    control's position trend that variant v removes (recovery() with the trend taken out of the
    denominator). The caller gates on control_excess lying above 0."""
    q = _control_quantities(m, hook, "sae", control, "dce")
    q["xo"] = Quantity(variant, hook, "dce", *outside(m, hook))
    return _boot(m, q, lambda t: (_mean(t, "vo") - _mean(t, "xo")) / _control_excess(t), _check_boot(boot))


def metric_recovery(m: Measurements, hook: str, variant: str, metric: str,
                    boot: Bootstrap = DEFAULT_BOOTSTRAP) -> Interval:
    """(m_sae(O) - m_v(O)) / (m_sae(O) - m_sae(I)): recovery() for any per-token metric (e.g. nmse).
    The caller gates on excess(m, hook, "sae", metric) lying above 0."""
    check_beyond_context(m, hook)
    q = {"so": Quantity("sae", hook, metric, *outside(m, hook)),
         "si": Quantity("sae", hook, metric, *inside(m, hook)),
         "vo": Quantity(variant, hook, metric, *outside(m, hook))}

    def stat(t):
        so = _mean(t, "so")
        return (so - _mean(t, "vo")) / (so - _mean(t, "si"))

    return _boot(m, q, stat, _check_boot(boot))


def excess_removed_share(m: Measurements, hook: str, variant: str, boot: Bootstrap = DEFAULT_BOOTSTRAP,
                         metric: str = "dce") -> Interval:
    """1 - (m_v(O) - m_v(I)) / (m_sae(O) - m_sae(I)): the share of the SAE's excess that variant v
    does not have. For variants applied at every position (reencode), where v's own in-context value
    differs from the SAE's and recovery()'s comparison at O alone would credit v with any in-context
    improvement. 1: v has no excess; 0: the same excess as the SAE; above 1: v is better beyond the
    context than within. The caller gates on excess(m, hook, "sae", metric) lying above 0."""
    check_beyond_context(m, hook)
    o, i = outside(m, hook), inside(m, hook)
    q = {"so": Quantity("sae", hook, metric, *o), "si": Quantity("sae", hook, metric, *i),
         "vo": Quantity(variant, hook, metric, *o), "vi": Quantity(variant, hook, metric, *i)}
    return _boot(m, q, lambda t: 1 - (_mean(t, "vo") - _mean(t, "vi")) / (_mean(t, "so") - _mean(t, "si")),
                 _check_boot(boot))


def best_removed_share(m: Measurements, hook: str, variants: Sequence[str], boot: Bootstrap = DEFAULT_BOOTSTRAP,
                       metric: str = "dce") -> tuple[Interval, dict[str, Interval]]:
    """The largest excess_removed_share over `variants` (e.g. re-encoding at k and 2k atoms), and each one's.
    Each share's interval is formed at confidence 1 - (1 - c) / len(variants), so they hold jointly at c and
    the maximum lies in [max of the lows, max of the highs] at c; its replicates are the resamples' maxima."""
    boot = _check_boot(boot)
    split = Bootstrap(1 - (1 - boot.confidence) / len(variants), boot.seed, boot.n_resamples)
    each = {v: excess_removed_share(m, hook, v, split, metric) for v in variants}
    ivs = list(each.values())
    best = max(ivs, key=lambda iv: iv.estimate if math.isfinite(iv.estimate) else -math.inf)
    reps = [iv.replicates for iv in ivs]
    joint = np.max(np.stack(reps), axis=0) if all(r is not None and len(r) == len(reps[0]) for r in reps) else None
    return Interval(best.estimate, _max([iv.low for iv in ivs]), _max([iv.high for iv in ivs]), boot.confidence,
                    best.n_seqs, best.n_tokens, best.method, joint), each


def _max(xs: list[float]) -> float:
    """The largest, or NaN when any is NaN (an undefined bound leaves the maximum's undefined)."""
    return math.nan if any(math.isnan(x) for x in xs) else max(xs)


def contrast(m: Measurements, hook_a: str, hook_b: str, region: str, boot: Bootstrap = DEFAULT_BOOTSTRAP,
             variant: str = "sae", metric: str = "dce") -> Interval:
    """mean m(hook_b) - mean m(hook_a) over `region` ("inside": [1, ctx), "outside": [ctx, T-1), each
    hook's own ctx), or excess(hook_b) - excess(hook_a) for region "excess"; paired on sequences.

    For claims ordering layers ("later layers are worse in context": the contrast of dCE between the
    first and the last layer, or each adjacent pair, lies above 0): a difference of means with its
    own interval, where a rank correlation over four points can only take a handful of values.
    """
    if region == "excess":
        q = {}
        for key, h in (("a", hook_a), ("b", hook_b)):
            check_beyond_context(m, h)
            q[f"{key}o"] = Quantity(variant, h, metric, *outside(m, h))
            q[f"{key}i"] = Quantity(variant, h, metric, *inside(m, h))

        def stat(t):
            return (_mean(t, "bo") - _mean(t, "bi")) - (_mean(t, "ao") - _mean(t, "ai"))

        return _boot(m, q, stat, _check_boot(boot))
    q = {"a": Quantity(variant, hook_a, metric, *_region(m, hook_a, region)),
         "b": Quantity(variant, hook_b, metric, *_region(m, hook_b, region))}
    return _boot(m, q, lambda t: _mean(t, "b") - _mean(t, "a"), _check_boot(boot))


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


def share_of_tokens(flags: np.ndarray, boot: Bootstrap = DEFAULT_BOOTSTRAP,
                    clusters: np.ndarray | None = None) -> Interval:
    """Share of True among tokens [n_seqs, n_pos], bootstrapped over sequences (over `clusters`, their
    documents, when given)."""
    flags = np.asarray(flags, dtype=np.float64)
    parts = {"a_sum": flags.sum(1), "a_n": np.full(len(flags), flags.shape[1], dtype=np.float64)}
    iv = cluster_bootstrap(parts, lambda t: _mean(t, "a"), boot.confidence, boot.n_resamples, boot.seed,
                           clusters=clusters)
    return iv.with_sample(flags.shape[0], flags.size)
