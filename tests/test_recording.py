"""What a claim test records (recording.py): evidence and replicates, samples, drift, outcomes."""

from types import SimpleNamespace

from saeclaims.catalog import Catalog, Claim
from saeclaims.ledger import Ledger, Sample
from saeclaims.recording import Recorder, report_line
from saeclaims.stats import Evidence
from saeclaims.store import EvidenceStore, SubjectRecord

CLAIM = Claim("c", "toy", "s", "https://example.org", "w", "stat", ">", 0.5, "why", "model")


def _recorder(baseline=None) -> Recorder:
    return Recorder(EvidenceStore(), Catalog([CLAIM]), lambda name: Ledger(name), lambda: baseline, lambda: 0.99,
                    seed=3, n_resamples=200)


def _evidence(estimate: float = 1.0) -> Evidence:
    return Evidence(claim="c", subject="s", sae_id="model", statistic="stat", estimate=estimate, ci_low=0.9,
                    ci_high=1.1, confidence=0.99, threshold=0.5, direction=">", n_seqs=4, n_tokens=40,
                    verdict="holds")


def test_evidence_and_its_replicates_are_kept_by_row():
    r = _recorder()
    r.record(_evidence(), replicates=[1, 2.5])
    r.record(_evidence(2.0))
    assert [e.estimate for e in r.store.evidence] == [1.0, 2.0]
    assert r.store.replicates == {"s|c|model": [1.0, 2.5]}


def test_sample_and_pairing_come_from_the_measured_subject():
    r = _recorder()
    assert r.sample("s") is None and not r.paired("s")  # reference data: no sample
    r.store.subjects["s"] = SubjectRecord("s", "m", "r", ["h"], {"h": 8}, 64, 16, 32, tokens_sha256="abc")
    assert r.sample("s") == Sample(16, 32)
    calls = []
    base = SimpleNamespace(paired_with=lambda *a: calls.append(a) or True, rows=lambda: {}, replicates={})
    r = _recorder(base)
    r.store.subjects["s"] = SubjectRecord("s", "m", "r", ["h"], {"h": 8}, 64, 16, 32, tokens_sha256="abc")
    assert r.paired("s") and calls == [("s", "abc", 3, 200)]
    assert r.drift(_evidence(), None) is None  # the baseline has no such row


def test_drift_against_a_baseline_row():
    base_ev = _evidence(1.0)
    base = SimpleNamespace(paired_with=lambda *a: False, rows=lambda: {"s|c|model": base_ev}, replicates={})
    row = _recorder(base).drift(_evidence(1.3), None)
    assert row is not None and row.baseline == 1.0 and row.current == 1.3
    assert _recorder().drift(_evidence(), None) is None  # no baseline at all


def _report(outcome, when, longrepr=None, keywords=("claim",)):
    return SimpleNamespace(nodeid=f"t::{outcome}-{when}", outcome=outcome, when=when, longrepr=longrepr,
                           keywords={k: 1 for k in keywords})


def test_outcomes_of_claim_tests_only():
    r = _recorder()
    crash = SimpleNamespace(reprcrash=SimpleNamespace(message="AssertionError: bad\nmore"))
    r.record_outcome(_report("passed", "setup"))  # a passed setup is no outcome yet
    r.record_outcome(_report("passed", "call"))
    r.record_outcome(_report("failed", "call", crash))
    r.record_outcome(_report("failed", "setup", crash))
    r.record_outcome(_report("skipped", "setup", ("f.py", 3, "Skipped: not applicable")))
    r.record_outcome(_report("failed", "call", crash, keywords=("other",)))
    got = {k: (o.outcome, o.message) for k, o in r.store.outcomes.items()}
    assert got == {"t::passed-call": ("passed", ""), "t::failed-call": ("failed", "AssertionError: bad"),
                   "t::failed-setup": ("errored", "AssertionError: bad"),
                   "t::skipped-setup": ("skipped", "not applicable")}
    assert report_line(SimpleNamespace(longrepr="line one\n\n  last line  \n")) == "last line"
    assert report_line(SimpleNamespace(longrepr="")) == ""
