"""Measuring the subject facts (`subject_facts.py`) from a run's measurements and the model's W_pos, with
cluster-bootstrap intervals like the claims' statistics."""

from __future__ import annotations

import numpy as np

from .instruments import Quantity, _boot, ce_score, inside
from .measurements import Measurements
from .positional import top_k_variance_share
from .stats import Bootstrap, Interval, cluster_bootstrap
from .subject_facts import CE_SCORE, CONTROL_GAP, EXPLAINED_VARIANCE, HELIX, L0, LONG_CONTEXT, FactKind, SubjectFact


def _fact(subject: str, kind: FactKind, sae_id: str, iv: Interval | float) -> SubjectFact:
    if isinstance(iv, Interval):
        return SubjectFact(subject, kind.name, sae_id, iv.estimate, iv.low, iv.high,
                           kind.meets(iv.estimate, iv.low, iv.high))
    return SubjectFact(subject, kind.name, sae_id, float(iv), None, None, kind.meets(float(iv)))


def helix_share(w_pos: np.ndarray, ctx: int) -> float:
    """Top-3 principal-component share of W_pos rows 1..ctx-1 (row 0 is BOS's and unlike the rest)."""
    return top_k_variance_share(np.asarray(w_pos, dtype=np.float64)[1:ctx], 3)


def long_context_gain(m: Measurements, ctx: int, boot: Bootstrap) -> Interval | None:
    """Clean loss on [ctx/2, ctx) minus on [T/2, T): positive when later tokens are predicted better.
    None when the sequences are too short for the second range to lie beyond the context (T < 2 ctx)."""
    t = m.n_positions + 1
    if t < 2 * ctx or ctx < 2:
        return None
    ce = m.clean_ce.astype(np.float64)
    parts = {"a_sum": ce[:, ctx // 2 : ctx].sum(1), "a_n": np.full(m.n_seqs, ctx - ctx // 2, dtype=np.float64),
             "b_sum": ce[:, t // 2 :].sum(1), "b_n": np.full(m.n_seqs, ce.shape[1] - t // 2, dtype=np.float64)}
    return cluster_bootstrap(parts, lambda s: s["a_sum"] / s["a_n"] - s["b_sum"] / s["b_n"], boot.confidence,
                             boot.n_resamples, boot.seed, clusters=m.clusters)


def model_facts(subject: str, m: Measurements, w_pos: np.ndarray | None, boot: Bootstrap) -> list[SubjectFact]:
    """The model's facts: W_pos geometry (learned positions only) and use of long context."""
    ctx = min(m.context_sizes.values())
    out = []
    if w_pos is not None and ctx > 4:
        out.append(_fact(subject, HELIX, "", helix_share(w_pos, ctx)))
    gain = long_context_gain(m, ctx, boot)
    if gain is not None:
        out.append(_fact(subject, LONG_CONTEXT, "", gain))
    return out


def sae_facts(subject: str, m: Measurements, sae_id: str, boot: Bootstrap) -> list[SubjectFact]:
    """One SAE's in-context quality, and its control's match, from the measured variants present."""
    lo, hi = inside(m, sae_id)
    out = []
    if ("sae", sae_id) in m.metrics:
        nmse = Quantity("sae", sae_id, "nmse", lo, hi)  # squared error over the in-context variance: 1 - EV
        out.append(_fact(subject, EXPLAINED_VARIANCE, sae_id,
                         _boot(m, {"e": nmse}, lambda t: 1.0 - t["e_sum"] / t["e_n"], boot)))
        out.append(_fact(subject, L0, sae_id, _boot(m, {"k": Quantity("sae", sae_id, "l0", lo, hi)},
                                                    lambda t: t["k_sum"] / t["k_n"], boot)))
        if ("zero", sae_id) in m.metrics:
            out.append(_fact(subject, CE_SCORE, sae_id, ce_score(m, sae_id, boot)))
            if ("full_context_sae", sae_id) in m.metrics:
                out.append(_fact(subject, CONTROL_GAP, sae_id, control_gap(m, sae_id, boot)))
    return out


def control_gap(m: Measurements, sae_id: str, boot: Bootstrap) -> Interval:
    """|CE-loss score of the SAE - of the full-context control| on [1, ctx), paired by sequence."""
    lo, hi = inside(m, sae_id)
    q = {"z": Quantity("zero", sae_id, "dce", lo, hi), "s": Quantity("sae", sae_id, "dce", lo, hi),
         "c": Quantity("full_context_sae", sae_id, "dce", lo, hi)}

    def stat(t):  # (z - s)/z - (z - c)/z = (c - s)/z
        return np.abs(t["c_sum"] / t["c_n"] - t["s_sum"] / t["s_n"]) / (t["z_sum"] / t["z_n"])

    return _boot(m, q, stat, boot)
