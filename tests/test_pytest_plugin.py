"""The pytest plugin end to end, in a sandboxed pytest run: evidence recording, the ledger, xdist merging,
and an interrupted run leaving the last good report alone."""

import json

import pytest

pytest_plugins = ["pytester"]

CLAIM_TESTS = '''
import pytest
from saeclaims.stats import Interval

@pytest.mark.claim("wpos-helix", scope="subject")
@pytest.mark.parametrize("i", range({n}))
def test_claim(i, claim_check, confidence):
    est = 0.99 if i % 2 == 0 else 0.5
    claim_check("wpos-helix", f"fake{{i}}", "model", Interval(est, est - 0.001, est + 0.001, confidence), 1, 1)
'''


@pytest.fixture
def sandbox(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    claim: a claim\n")
    (pytester.path / "claims" / "expected").mkdir(parents=True)
    for i in range(1, 12, 2):  # odd fakes are refuted, and the ledger says so
        (pytester.path / "claims" / "expected" / f"fake{i}.toml").write_text('[wpos-helix]\nmodel = "refuted"\n')
    return pytester


def _run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "saeclaims.pytest_plugin", "--report",
                                         str(pytester.path / "out" / "REPORT.md"), *args)


def test_evidence_from_all_xdist_workers_is_merged(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=12))
    result = _run(sandbox, "-n", "2")
    result.assert_outcomes(passed=12)
    payload = json.loads((sandbox.path / "out" / "report" / "report.json").read_text())
    assert sorted(e["subject"] for e in payload["evidence"]) == sorted(f"fake{i}" for i in range(12))
    assert all(e["confidence"] == pytest.approx(1 - 0.05 / 12) for e in payload["evidence"])


def test_a_verdict_against_the_ledger_fails_with_the_evidence_in_one_line(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    (sandbox.path / "claims" / "expected" / "fake1.toml").unlink()
    result = _run(sandbox)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "wpos-helix @ fake1/model: " in out and "= 0.5 [0.499, 0.501]" in out
    assert "-> refuted (expected holds" in out
    md = (sandbox.path / "out" / "REPORT.md").read_text()
    assert "**MISMATCH**" in md


def test_an_interrupted_run_keeps_the_last_good_report(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    _run(sandbox).assert_outcomes(passed=2)
    good = (sandbox.path / "out" / "REPORT.md").read_text()
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2) + '''
def test_zz_interrupt():
    raise KeyboardInterrupt
''')
    _run(sandbox)
    assert (sandbox.path / "out" / "REPORT.md").read_text() == good
