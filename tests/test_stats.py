"""Statistics: verdict logic, Bonferroni, the cluster bootstrap's coverage, vectorised Spearman."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from saeclaims.stats import (
    Evidence,
    bonferroni_confidence,
    by_cluster,
    cluster_bootstrap,
    proportion_interval,
    spearman,
    verdict,
)

finite = st.floats(-100, 100, allow_nan=False)


@given(a=finite, b=finite, t=finite, direction=st.sampled_from([">", ">=", "<", "<="]))
def test_verdict_is_holds_exactly_when_the_interval_is_on_the_claims_side(a, b, t, direction):
    lo, hi = min(a, b), max(a, b)
    v = verdict(lo, hi, t, direction)
    side = {">": lambda x: x > t, ">=": lambda x: x >= t, "<": lambda x: x < t, "<=": lambda x: x <= t}[direction]
    assert (v == "holds") == (side(lo) and side(hi))
    assert (v == "refuted") == (not side(lo) and not side(hi))


@given(a=finite, b=finite, t1=finite, t2=finite)
def test_verdict_moves_monotonically_with_the_threshold(a, b, t1, t2):
    """Raising the bar of a '>' claim can only move it from holds towards refuted, never back."""
    lo, hi = min(a, b), max(a, b)
    rank = {"holds": 0, "inconclusive": 1, "refuted": 2}
    lo_t, hi_t = min(t1, t2), max(t1, t2)
    assert rank[verdict(lo, hi, lo_t, ">")] <= rank[verdict(lo, hi, hi_t, ">")]
    assert rank[verdict(lo, hi, lo_t, "<")] >= rank[verdict(lo, hi, hi_t, "<")]


def test_verdict_edges_and_nan():
    assert verdict(1.0, 2.0, 1.0, ">") == "inconclusive"
    assert verdict(1.0, 2.0, 1.0, ">=") == "holds"
    assert verdict(0.0, 1.0, 1.0, ">") == "refuted"
    assert verdict(math.nan, 1.0, 0.0, ">") == "undefined"
    assert verdict(0.0, math.inf, 0.0, "<") == "undefined"
    with pytest.raises(ValueError, match="direction"):
        verdict(0, 1, 0, "!=")


def test_bonferroni():
    assert bonferroni_confidence(0.95, 1) == pytest.approx(0.95)
    assert bonferroni_confidence(0.95, 50) == pytest.approx(0.999)
    with pytest.raises(ValueError):
        bonferroni_confidence(1.0, 3)


def _clustered(rng, n_seqs, n_tok, mu, sd_between, sd_within):
    seq_effect = rng.normal(0, sd_between, size=(n_seqs, 1))
    return mu + seq_effect + rng.normal(0, sd_within, size=(n_seqs, n_tok))


def _mean_parts(x):
    return {"a_sum": x.sum(1), "a_n": np.full(len(x), x.shape[1], float)}


def test_cluster_bootstrap_covers_the_true_mean_at_nominal_rate():
    """Strongly clustered data: a token-level bootstrap would undercover badly; the cluster one must
    cover the true mean in at least 90% of 200 seeded trials at 95%."""
    rng = np.random.default_rng(1234)
    hits = 0
    for trial in range(200):
        x = _clustered(rng, 40, 30, 2.0, 1.0, 0.5)
        iv = cluster_bootstrap(_mean_parts(x), lambda t: t["a_sum"] / t["a_n"], 0.95, 400, seed=trial)
        hits += iv.low <= 2.0 <= iv.high
    assert hits >= 180, f"coverage {hits / 200:.2%}"


def test_a_token_level_bootstrap_would_undercover_so_the_check_can_fail():
    """The coverage check above has teeth: treating tokens as independent fails it."""
    rng = np.random.default_rng(1234)
    hits = 0
    for trial in range(100):
        x = _clustered(rng, 40, 30, 2.0, 1.0, 0.5).reshape(-1, 1)  # every token its own cluster
        iv = cluster_bootstrap(_mean_parts(x), lambda t: t["a_sum"] / t["a_n"], 0.95, 200, seed=trial,
                               method="percentile")
        hits += iv.low <= 2.0 <= iv.high
    assert hits < 90


def test_ratio_is_computed_inside_each_resample():
    rng = np.random.default_rng(0)
    a = rng.gamma(2, size=(50, 20))
    b = rng.gamma(2, size=(50, 20)) + 1
    parts = {"a_sum": a.sum(1), "a_n": np.full(50, 20.0), "b_sum": b.sum(1), "b_n": np.full(50, 20.0)}
    iv = cluster_bootstrap(parts, lambda t: (t["a_sum"] / t["a_n"]) / (t["b_sum"] / t["b_n"]), 0.9, 500)
    assert iv.estimate == pytest.approx(a.mean() / b.mean())
    assert iv.low < iv.estimate < iv.high


def test_bootstrap_is_seeded():
    x = np.random.default_rng(0).normal(size=(20, 5))
    f = lambda t: t["a_sum"] / t["a_n"]  # noqa: E731
    assert cluster_bootstrap(_mean_parts(x), f, seed=3) == cluster_bootstrap(_mean_parts(x), f, seed=3)


def test_bootstrap_needs_two_clusters():
    with pytest.raises(ValueError, match="at least 2"):
        cluster_bootstrap({"a_sum": np.ones(1), "a_n": np.ones(1)}, lambda t: t["a_sum"])


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=4))
def test_vectorised_spearman_matches_scipy(y):
    x = np.arange(4.0)
    y = np.asarray(y)
    ref = sps.spearmanr(x, y).statistic
    got = spearman(x, np.stack([y, y]))
    if np.isnan(ref):
        assert np.isnan(got).all()
    else:
        np.testing.assert_allclose(got, ref, atol=1e-12)


def test_proportion_interval_is_clopper_pearson():
    iv = proportion_interval(9, 10, 0.95)
    assert iv.estimate == 0.9
    assert iv.low == pytest.approx(0.5550, abs=1e-3)
    assert iv.high == pytest.approx(0.9975, abs=1e-3)


def test_evidence_one_line_names_everything():
    ev = Evidence("c", "s", "h", "stat", 1.5, 1.2, 1.8, 0.99, 1.0, ">", 10, 100, "holds", "refuted")
    line = ev.one_line()
    assert "c @ s/h" in line and "[1.2, 1.8]" in line and "expected refuted" in line
    assert ev.status == "MISMATCH"


def test_resamples_leave_ten_replicates_beyond_each_end_of_the_interval():
    from saeclaims.stats import TAIL_REPLICATES, resamples_for

    assert TAIL_REPLICATES == 10
    assert resamples_for(0.95, 2000) == 2000  # 400 would do: the asked-for count stands
    assert resamples_for(0.99, 2000) == 2000  # exactly 10 / 0.005: still the asked-for count
    assert resamples_for(0.995, 2000) == 4000  # 10 / 0.0025
    assert resamples_for(1 - 0.05 / 75, 2000) == 30000  # the organism run's 99.93%
    assert resamples_for(0.9993, 50_000) == 50_000  # more asked for: kept


def test_a_high_confidence_interval_is_not_the_extreme_replicates():
    """At 99.93% the ends must not move with the bootstrap seed as the min/max of 2000 replicates do."""
    from saeclaims.stats import cluster_bootstrap

    rng = np.random.default_rng(0)
    parts = {"a": rng.normal(1, 1, 64), "b": rng.normal(0.4, 1, 64) + 1}
    ends = [cluster_bootstrap(parts, lambda d: d["a"] / d["b"], 0.9993, 2000, seed) for seed in range(4)]
    highs = [iv.high for iv in ends]
    assert max(highs) - min(highs) < 0.05 * (ends[0].high - ends[0].low)  # 0.02 here; 0.09 from 2000
    assert all(iv.replicates.shape == (2000,) for iv in ends)  # drift replicates stay the asked-for count


def test_equal_columns_are_resampled_once_and_the_interval_is_the_same_to_the_bit(monkeypatch):
    """Two quantities over the same positions share their token counts: scipy gets each distinct column once;
    paired resampling draws the same sequences either way, so nothing changes, not even the last bit."""
    from saeclaims import stats

    rng = np.random.default_rng(3)
    counts = rng.integers(5, 9, 40).astype(float)
    parts = {"a_sum": rng.normal(2, 1, 40) * counts, "a_n": counts, "b_sum": rng.normal(1, 1, 40) * counts,
             "b_n": counts.copy(), "c_n": counts + 1}

    def statistic(t):
        return (t["a_sum"] / t["a_n"]) / (t["b_sum"] / t["b_n"]) + 0 * t["c_n"]

    data, where = stats._distinct([np.asarray(v) for v in parts.values()])
    assert len(data) == 4 and where == [0, 1, 2, 1, 3]
    got = stats.cluster_bootstrap(parts, statistic, 0.99, 500, seed=7)
    monkeypatch.setattr(stats, "_distinct", lambda cols: (tuple(cols), list(range(len(cols)))))
    ref = stats.cluster_bootstrap(parts, statistic, 0.99, 500, seed=7)
    assert (got.estimate, got.low, got.high) == (ref.estimate, ref.low, ref.high)
    np.testing.assert_array_equal(got.replicates, ref.replicates)


def test_resamples_in_batches_give_the_interval_of_all_at_once(monkeypatch):
    """scipy forms BOOTSTRAP_BATCH resamples at a time, drawing them from one generator in turn: the BCa and
    percentile intervals are those of one unbatched call to the bit, also when the batch does not divide
    the resamples."""
    from saeclaims import stats

    rng = np.random.default_rng(5)
    parts = {"s": rng.normal(1, 0.5, 30), "n": rng.integers(3, 7, 30).astype(float)}

    def statistic(t):
        return t["s"] / t["n"]

    monkeypatch.setattr(stats, "BOOTSTRAP_BATCH", 333)
    for method in ("BCa", "percentile"):
        got = stats.cluster_bootstrap(parts, statistic, 0.99, 1000, seed=4, method=method)
        monkeypatch.setattr(stats, "BOOTSTRAP_BATCH", None)
        ref = stats.cluster_bootstrap(parts, statistic, 0.99, 1000, seed=4, method=method)
        monkeypatch.setattr(stats, "BOOTSTRAP_BATCH", 333)
        assert stats.resamples_for(0.99, 1000) % 333 != 0
        assert (got.low, got.high) == (ref.low, ref.high) and got.method == ref.method


def _documents_of(n_docs: int, per_doc: int) -> np.ndarray:
    return np.repeat(np.arange(n_docs), per_doc)


def test_resampling_documents_covers_when_windows_of_one_document_are_alike():
    """Windows of one document share its effect: resampling windows undercovers (the check has teeth), resampling
    documents covers at the nominal rate (200 seeded trials at 95%: at least 90%)."""
    rng = np.random.default_rng(7)
    docs = _documents_of(20, 4)
    hits = {"windows": 0, "documents": 0}
    for trial in range(200):
        doc_effect = rng.normal(0, 1.0, size=20)[docs][:, None]
        x = 2.0 + doc_effect + rng.normal(0, 0.3, size=(80, 1)) + rng.normal(0, 0.5, size=(80, 10))
        for name, clusters in (("windows", None), ("documents", docs)):
            iv = cluster_bootstrap(_mean_parts(x), lambda t: t["a_sum"] / t["a_n"], 0.95, 400, seed=trial,
                                   method="percentile", clusters=clusters)
            hits[name] += iv.low <= 2.0 <= iv.high
    assert hits["documents"] >= 180, hits
    assert hits["windows"] < 160, hits


def test_one_document_per_sequence_is_the_sequence_bootstrap_to_the_bit():
    x = np.random.default_rng(0).normal(size=(12, 5))
    f = lambda t: t["a_sum"] / t["a_n"]  # noqa: E731
    plain = cluster_bootstrap(_mean_parts(x), f, seed=2)
    labelled = cluster_bootstrap(_mean_parts(x), f, seed=2, clusters=np.arange(12) * 3)
    assert (plain.estimate, plain.low, plain.high) == (labelled.estimate, labelled.low, labelled.high)
    assert plain.method == "cluster bootstrap (BCa)"
    assert labelled.method == "cluster bootstrap (BCa) over 12 documents"


def test_by_cluster_sums_a_documents_sequences_in_order_of_first_appearance():
    a, b = by_cluster([np.array([1.0, 2.0, 4.0, 8.0]), np.ones(4)], np.array([7, 3, 7, 5]))
    assert a.tolist() == [5.0, 2.0, 8.0] and b.tolist() == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="3 cluster labels for 4 sequences"):
        by_cluster([np.ones(4)], np.array([0, 1, 2]))


def test_bootstrap_needs_two_documents():
    with pytest.raises(ValueError, match="at least 2 documents, got 1"):
        cluster_bootstrap({"a_sum": np.ones(3), "a_n": np.ones(3)}, lambda t: t["a_sum"], clusters=np.zeros(3))
