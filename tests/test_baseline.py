"""Drift against a baseline run on synthetic rows whose true difference is known; every branch of the rule."""

import numpy as np
import pytest

from saeclaims.baseline import Baseline, compare, compare_runs, row_key
from saeclaims.catalog import Claim
from saeclaims.report import write_report
from saeclaims.schema import ReportFileError
from saeclaims.stats import Evidence, cluster_bootstrap, resample_indices
from tests.test_report import _header

CLAIM = Claim("ratio-claim", "context", "notes", "https://example.org", "words", "a ratio", ">", 1.0, "above 1")
H = "blocks.0.hook_resid_pre"


def _row(est, lo, hi, verdict="holds", method="cluster bootstrap (BCa)", subject="organism", claim="ratio-claim"):
    return Evidence(claim, subject, H, "a ratio", est, lo, hi, 0.99, 1.0, ">", 32, 3200, verdict, method=method)


def _boot(values, seed=0):
    parts = {"a_sum": np.asarray(values, dtype=float), "a_n": np.ones(len(values))}
    return cluster_bootstrap(parts, lambda t: t["a_sum"] / t["a_n"], 0.99, 2000, seed)


def test_resamples_depend_only_on_size_and_seed():
    assert np.array_equal(resample_indices(32, 100, 7), resample_indices(32, 100, 7))
    assert not np.array_equal(resample_indices(32, 100, 7), resample_indices(32, 100, 8))


def test_paired_replicates_cancel_the_sequence_noise():
    """Same sequences, each shifted by exactly +0.01: the paired interval is tight around 0.01, while an unpaired
    comparison of the same runs cannot tell the difference from 0."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 0.5, 32)
    base, cur = _boot(x), _boot(x + 0.01)
    b, c = _row(base.estimate, base.low, base.high), _row(cur.estimate, cur.low, cur.high)
    claim = Claim(**{**CLAIM.to_dict(), "tolerance": 0.0})
    paired = compare(b, c, base.replicates, cur.replicates, claim, True, 0.99)
    assert paired.pairing == "paired" and paired.difference == pytest.approx(0.01)
    assert paired.low == pytest.approx(0.01, abs=1e-5) and paired.drifted
    unpaired = compare(b, c, base.replicates, cur.replicates, claim, False, 0.99)
    assert unpaired.pairing == "unpaired" and unpaired.low < 0 < unpaired.high and not unpaired.drifted


@pytest.mark.parametrize(("shift", "tolerance", "drifted"), [
    (0.5, 0.1, True),     # significant and larger than the tolerance
    (0.05, 0.1, False),   # significant but within the tolerance
    (0.1, 0.1, False),    # exactly the tolerance: not beyond it
    (-0.5, 0.1, True),    # drift downwards counts too
    (0.0, 0.0, False),    # nothing changed
])
def test_the_drift_rule(shift, tolerance, drifted):
    x = np.random.default_rng(1).normal(2.0, 0.3, 32)
    base, cur = _boot(x), _boot(x + shift)
    claim = Claim(**{**CLAIM.to_dict(), "tolerance": tolerance})
    row = compare(_row(base.estimate, base.low, base.high), _row(cur.estimate, cur.low, cur.high),
                  base.replicates, cur.replicates, claim, True, 0.99)
    assert row.drifted is drifted


def test_exact_rows_differ_exactly_and_flips_are_flagged():
    row = compare(_row(0.48, 0.48, 0.48, "refuted", "exact"), _row(0.96, 0.96, 0.96, "holds", "exact"), None, None,
                  CLAIM, True, 0.99)
    assert (row.pairing, row.low, row.high) == ("exact", pytest.approx(0.48), pytest.approx(0.48))
    assert row.drifted and row.flipped  # the default tolerance is a tenth of the threshold: 0.1


def test_rows_without_replicates_use_a_normal_approximation():
    row = compare(_row(0.50, 0.45, 0.55, method="Clopper-Pearson"), _row(0.52, 0.47, 0.57, method="Clopper-Pearson"),
                  None, None, CLAIM, True, 0.99)
    assert row.pairing.startswith("unpaired (normal") and row.low < 0.02 < row.high and not row.drifted


def _baseline(tmp_path, rows, replicates=None, subject="organism"):
    from tests.test_report import _store

    store = _store()
    store.evidence = rows
    store.replicates = replicates or {}
    write_report(tmp_path / "REPORT.md", _header(), store)
    return tmp_path / "report" / "report.json"


def test_added_removed_and_nan_rows_are_listed_not_crashed(tmp_path):
    base = [_row(1.5, 1.4, 1.6), _row(2.0, 1.9, 2.1, claim="gone-claim"), _row(float("nan"), 0, 0, claim="nan-claim")]
    path = _baseline(tmp_path, base)
    cur = [_row(1.5, 1.4, 1.6), _row(3.0, 2.9, 3.1, claim="new-claim"), _row(1.0, 0.9, 1.1, claim="nan-claim")]
    claims = {c: Claim(**{**CLAIM.to_dict(), "id": c}) for c in ("ratio-claim", "new-claim", "nan-claim")}
    cmp = compare_runs(Baseline.load(path, ("organism",)), cur, {}, claims, {"organism": True}, 0.99)
    assert cmp.added == [row_key("organism", "new-claim", H)]
    assert cmp.removed == [row_key("organism", "gone-claim", H)]
    assert cmp.not_comparable and "nan-claim" in cmp.not_comparable[0]
    assert [r.claim for r in cmp.rows] == ["ratio-claim"] and not cmp.rows[0].drifted


def test_replicates_travel_beside_the_report(tmp_path):
    x = np.random.default_rng(2).normal(2.0, 0.3, 32)
    iv = _boot(x)
    key = row_key("organism", "ratio-claim", H)
    path = _baseline(tmp_path, [_row(iv.estimate, iv.low, iv.high)], {key: iv.replicates.tolist()})
    loaded = Baseline.load(path, ("organism",))
    assert np.allclose(loaded.replicates[key], iv.replicates)


def test_a_baseline_of_another_subject(tmp_path):
    path = _baseline(tmp_path, [_row(1.5, 1.4, 1.6)])
    with pytest.raises(ReportFileError, match=r"is of subject\(s\) \['organism'\].*--baseline-any-subject"):
        Baseline.load(path, ("local:mine",))
    assert Baseline.load(path, ("local:mine",), any_subject=True).rows()


def test_a_baseline_of_one_other_subject_pairs_its_rows_with_this_runs_subject(tmp_path):
    """A local:DIR copy of the organism with a changed SAE, against the organism's report: rows pair up."""
    key = row_key("organism", "ratio-claim", H)
    x = np.random.default_rng(3).normal(2.0, 0.3, 32)
    iv = _boot(x)
    path = _baseline(tmp_path, [_row(iv.estimate, iv.low, iv.high)], {key: iv.replicates.tolist()})
    base = Baseline.load(path, ("local:my-sae",), any_subject=True)
    mine = row_key("local:my-sae", "ratio-claim", H)
    assert list(base.rows()) == [mine] and mine in base.replicates and base.subject_of("local:my-sae") == "organism"
    cmp = compare_runs(base, [_row(iv.estimate, iv.low, iv.high, subject="local:my-sae")], {}, {"ratio-claim": CLAIM},
                       {"local:my-sae": True}, 0.99)
    assert [r.subject for r in cmp.rows] == ["local:my-sae"] and not cmp.added and not cmp.removed


def test_changed_sae_weights_are_listed(tmp_path):
    from dataclasses import replace

    from saeclaims.baseline import changed_saes

    path = _baseline(tmp_path, [_row(1.5, 1.4, 1.6)])
    base = Baseline.load(path, ("organism",))
    rec = _header().subjects["organism"]
    base.report.header.subjects["organism"] = replace(rec, sae_sha256={"h": "a" * 64, "g": "c" * 64})
    now = {"organism": replace(rec, sae_sha256={"h": "b" * 64, "g": "c" * 64})}
    assert changed_saes(base, now) == [f"organism/h: sha256 {'a' * 12} -> {'b' * 12}"]


def test_the_report_puts_drifted_rows_first_and_summarises_the_rest():
    from saeclaims.report import baseline_lines, baseline_summary_lines
    from saeclaims.schema import BaselineComparison, DriftRow

    def row(claim, d, drifted=False, flip=False):
        return DriftRow(claim, "organism", H, 1.0, 1.0 + d, d, d - 0.01, d + 0.01, "paired", 0.1, drifted, "holds",
                        "refuted" if flip else "holds")

    cmp = BaselineComparison("base/report.json", [row("a", 0.0), row("b", 0.5, drifted=True), row("c", 0.02),
                                                  row("d", 0.0, flip=True)], changed_saes=["organism/h: sha256 x -> y"])
    text = "\n".join(baseline_lines(cmp, [], []))
    assert text.index("`b`") < text.index("`d`") and "| `a` |" not in text and "| `c` |" not in text
    assert "Unchanged: 2 rows neither drifted nor flipped verdict (the largest difference +0.02 at `c`" in text
    assert "SAEs whose weights changed (sha256): organism/h: sha256 x -> y." in text
    summary = "\n".join(baseline_summary_lines(cmp))
    assert "Against the baseline `base/report.json`: 4 rows compared, **1 drifted**, 1 verdicts flipped" in summary
