"""The pytest plugin end to end, in sandboxed pytest runs (the plugin loads through its entry point):
the claim fixture, the open catalogue, the family, the ledger, xdist merging, bad input, and an
interrupted run leaving the last good report alone."""

import json

import pytest

pytest_plugins = ["pytester"]

CONFTEST = '''
from saeclaims import register_claim

for i in range(12):
    register_claim(id=f"toy-{i}", family="toy", source="sandbox", url="https://example.org", words="a toy claim",
                   statistic="a number", direction=">", threshold=0.9, why="above 0.9", scope="model")
'''

CLAIM_TESTS = '''
import pytest
from saeclaims.stats import Interval


def _make(i):
    @pytest.mark.claim(f"toy-{{i}}")
    def test(claim):
        est = 0.99 if i % 2 == 0 else 0.5
        claim.check(Interval(est, est - 0.001, est + 0.001, claim.boot.confidence, 4, 40))
    return test


for _i in range({n}):
    globals()[f"test_toy_{{_i}}"] = _make(_i)
'''


@pytest.fixture
def sandbox(pytester):
    pytester.makeconftest(CONFTEST)
    (pytester.path / "claims" / "expected").mkdir(parents=True)
    refuted = "\n".join(f'[toy-{i}]\nmodel = "refuted"' for i in range(1, 12, 2))  # the ledger knows
    (pytester.path / "claims" / "expected" / "organism.toml").write_text(refuted + "\n")
    return pytester


def _run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--sae-report",
                                         str(pytester.path / "out" / "REPORT.md"), *args)


def _payload(pytester):
    return json.loads((pytester.path / "out" / "report" / "report.json").read_text())


def test_evidence_from_all_xdist_workers_is_merged_and_the_header_is_true(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=12))
    result = _run(sandbox, "-n", "2")
    result.assert_outcomes(passed=12)
    payload = _payload(sandbox)
    assert sorted(e["claim"] for e in payload["evidence"]) == sorted(f"toy-{i}" for i in range(12))
    assert all(e["confidence"] == pytest.approx(1 - 0.05 / 12) for e in payload["evidence"])
    assert all((e["n_seqs"], e["n_tokens"]) == (4, 40) for e in payload["evidence"])
    assert payload["header"]["family_size"] == 12
    assert "a family of 12 intervals" in (sandbox.path / "out" / "REPORT.md").read_text()


def test_the_family_does_not_depend_on_the_selection(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=12))
    _run(sandbox, "-k", "toy_3").assert_outcomes(passed=1)
    (row,) = _payload(sandbox)["evidence"]
    assert row["confidence"] == pytest.approx(1 - 0.05 / 12)


def test_a_verdict_against_the_ledger_fails_with_the_evidence_in_one_line(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    (sandbox.path / "claims" / "expected" / "organism.toml").unlink()
    result = _run(sandbox)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "toy-1 @ organism/model: a number = 0.5 [0.499, 0.501]" in out
    assert "-> refuted (expected holds" in out
    assert "saeclaims/fixture.py" not in out  # the failure shows the evidence, not plugin frames
    assert "**MISMATCH**" in (sandbox.path / "out" / "REPORT.md").read_text()


def _no_bare_nan(token):
    raise ValueError(f"report.json holds a bare {token}, which is not JSON")


def test_a_nan_interval_is_undefined_and_report_json_stays_json(sandbox):
    """A statistic that does not exist (a ratio over nothing) is "undefined", not "inconclusive", and
    report.json stays valid JSON (null where the number is NaN), valid against its schema."""
    sandbox.makepyfile(test_claims='''
import math
import pytest
from saeclaims.stats import Interval


@pytest.mark.claim("toy-0")
def test_nan(claim):
    claim.check(Interval(math.nan, math.nan, math.inf, claim.boot.confidence, 4, 40))
''')
    result = _run(sandbox)
    result.assert_outcomes(failed=1)
    assert "-> undefined (the statistic is not a finite number here) (expected holds" in result.stdout.str()
    text = (sandbox.path / "out" / "report" / "report.json").read_text()
    payload = json.loads(text, parse_constant=_no_bare_nan)
    (row,) = payload["evidence"]
    assert (row["estimate"], row["ci_low"], row["ci_high"], row["verdict"]) == (None, None, None, "undefined")
    from saeclaims.schema import load_report

    assert load_report(sandbox.path / "out" / "report" / "report.json").evidence[0].estimate != 0  # NaN back
    md = (sandbox.path / "out" / "REPORT.md").read_text()
    assert "| nan [nan, inf] |" in md and "| undefined |" in md
    assert "Undefined (the statistic is NaN or infinite, not judged): `toy-0`" in md


def test_a_selection_where_nothing_applies_writes_a_report_saying_why(sandbox):
    sandbox.makepyfile(test_claims='''
import pytest


@pytest.mark.claim("toy-0")
def test_a(claim):
    claim.not_applicable("the premise is absent here", premise="0.1 [0, 0.2]")


@pytest.mark.claim("toy-1")
def test_b(claim):
    claim.not_applicable("the premise is absent here")
''')
    result = _run(sandbox)
    result.assert_outcomes(skipped=2)
    assert ("no row was judged, all 2 selected rows are not applicable (the premise is absent here)"
            in result.stdout.str())
    md = (sandbox.path / "out" / "REPORT.md").read_text()
    assert ("- the premise is absent here: `toy-0` on organism/model (premise 0.1 [0, 0.2]), `toy-1` on "
            "organism/model") in md
    assert len(_payload(sandbox)["not_applicable"]) == 2


def test_a_report_path_outside_the_project_keeps_the_ledger(sandbox, tmp_path_factory):
    """`--sae-report /dir/REPORT.md` (space form) makes pytest take /dir's side as rootdir; the ledger and
    the report still resolve from where pytest runs, and the header and REPORT.md name the ledger."""
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "REPORT.md").write_text("the previous report\n")  # an existing file is what moves pytest's rootdir
    result = sandbox.runpytest_subprocess("-p", "no:cacheprovider", "--sae-report", str(other / "REPORT.md"))
    result.assert_outcomes(passed=2)  # toy-1 is refuted, as the ledger expects: the ledger was read
    out = result.stdout.str()
    assert "saeclaims: ledger for organism: claims/expected/organism.toml: 6 entries" in out
    assert "saeclaims: pytest's rootdir is" in out
    md = (other / "REPORT.md").read_text()
    assert "| ledger (expected verdicts) | claims/expected/organism.toml: 6 entries |" in md


def test_a_missing_default_ledger_directory_is_said(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=1))
    (sandbox.path / "claims" / "expected" / "organism.toml").unlink()
    (sandbox.path / "claims" / "expected").rmdir()
    result = _run(sandbox)
    result.assert_outcomes(passed=1)
    assert "the default ledger directory" in result.stdout.str() and "does not exist, so every row is expected" \
        in result.stdout.str()


def test_registered_claims_without_a_test_are_listed_in_the_report(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    _run(sandbox).assert_outcomes(passed=2)
    md = (sandbox.path / "out" / "REPORT.md").read_text()
    assert "registered claims with no test in this suite: toy-2, toy-3" in md


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


# ---------------------------------------------------------------- bad input: one line, before measuring


def _usage_error(result, *fragments):
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    for f in fragments:
        assert f in err, err
    assert err.count("ERROR:") == 1, err
    assert "Traceback" not in err


def test_a_marker_naming_an_unregistered_claim(sandbox):
    sandbox.makepyfile(test_claims='''
import pytest

@pytest.mark.claim("no-such-claim")
def test_x(claim):
    pass
''')
    _usage_error(_run(sandbox), "claim 'no-such-claim' is not registered", "register_claim")


def test_a_marker_reading_an_unknown_variant(sandbox):
    sandbox.makepyfile(test_claims='''
import pytest

@pytest.mark.claim("toy-0", reads=("sae", "shift"))
def test_x(claim):
    pass

@pytest.mark.claim("toy-1", reads="sae")
def test_y(claim):
    pass
''')
    _usage_error(_run(sandbox), "test_x[organism-model]: reads names unknown variants ['shift']",
                 "test_y[organism-model]: reads='sae' must be a tuple of variant names")


def test_two_tests_for_one_claim_on_the_same_row(sandbox):
    sandbox.makepyfile(test_claims='''
import pytest

@pytest.mark.claim("toy-0")
def test_a(claim):
    pass

@pytest.mark.claim("toy-0")
def test_b(claim):
    pass
''')
    _usage_error(_run(sandbox), "claim toy-0 on organism/model is already tested by test_claims.py::test_a")


def test_a_claim_test_without_the_claim_fixture(sandbox):
    sandbox.makepyfile(test_claims='''
import pytest

@pytest.mark.claim("toy-0")
def test_a():
    pass
''')
    _usage_error(_run(sandbox), "test_claims.py::test_a: a claim test must use the `claim` fixture")


def test_a_ledger_directory_that_does_not_exist(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=1))
    _usage_error(_run(sandbox, "--sae-ledger-dir", "nowhere"), "ledger directory", "nowhere does not exist")


def test_a_ledger_entry_for_an_unregistered_claim(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=1))
    (sandbox.path / "claims" / "expected" / "organism.toml").write_text('[toy-99]\nmodel = "holds"\n')
    _usage_error(_run(sandbox), "names unknown claim 'toy-99'")


def test_a_ledger_key_that_is_no_row_of_the_claim(sandbox):
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=1))
    ledger = sandbox.path / "claims" / "expected" / "organism.toml"
    ledger.write_text('[toy-0]\n"blocks.9.hook_resid_pre" = "holds"\n')
    _usage_error(_run(sandbox), "'blocks.9.hook_resid_pre', which is not a row of this claim")


def test_check_called_twice(sandbox):
    sandbox.makepyfile(test_claims='''
import pytest
from saeclaims.stats import Interval

@pytest.mark.claim("toy-0")
def test_a(claim):
    iv = Interval(1.0, 0.99, 1.01, claim.boot.confidence)
    claim.check(iv)
    claim.check(iv)
''')
    result = _run(sandbox)
    result.assert_outcomes(failed=1)
    assert "check() called twice in one test" in result.stdout.str()


def test_a_duplicate_registration_with_another_definition(sandbox):
    sandbox.makeconftest(CONFTEST + '''
register_claim(id="toy-0", family="toy", source="elsewhere", url="https://example.org", words="another",
               statistic="a number", direction="<", threshold=0.1, why="below", scope="model")
''')
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=1))
    result = _run(sandbox)
    assert result.ret != 0
    assert "claim 'toy-0' is registered twice with different definitions" in result.stdout.str() + result.stderr.str()


# ---------------------------------------------------------------- a light plugin (issue 21 item 7)

HEAVY = ("torch", "scipy", "matplotlib", "sae_lens", "transformer_lens")


def test_loading_the_plugin_imports_nothing_heavy():
    import subprocess
    import sys

    code = f"import sys, saeclaims.pytest_plugin; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_without_claim_tests_loads_no_heavy_module(pytester):
    """Every pytest run in an environment with the package installed loads the plugin: it must cost nothing."""
    pytester.makepyfile(test_plain=f'''
import sys

def test_plain():
    assert [m for m in {HEAVY!r} if m in sys.modules] == []
''')
    # --no-sae-report is the plugin's own option: the run fails unless the plugin was loaded
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--no-sae-report")
    result.assert_outcomes(passed=1)


def test_strict_markers_without_xdist(sandbox):
    """Claim tests carry xdist_group markers; without xdist the plugin registers the marker itself."""
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    result = _run(sandbox, "-p", "no:xdist", "--strict-markers")
    result.assert_outcomes(passed=2)


def test_the_precision_is_recorded_and_the_old_autocast_option_still_works_with_a_warning(sandbox):
    """--sae-precision (default auto) lands resolved in report.json's header and REPORT.md's Run table; the deprecated
    --autocast bf16 means --sae-precision bf16 and says so; the two disagreeing is a usage error."""
    sandbox.makepyfile(test_claims=CLAIM_TESTS.format(n=2))
    _run(sandbox).assert_outcomes(passed=2)
    assert _payload(sandbox)["header"]["precision"] == "auto -> fp32 (cpu)"
    assert "| precision | auto -> fp32 (cpu) |" in (sandbox.path / "out" / "REPORT.md").read_text()
    result = _run(sandbox, "--autocast", "bf16")
    result.assert_outcomes(passed=2)
    assert "--autocast is deprecated: use --sae-precision bf16" in result.stdout.str()
    header = _payload(sandbox)["header"]
    assert (header["precision"], header["dtype"], header["options"]["precision"]) == \
        ("bf16 (cpu)", "autocast bf16", "bf16")
    bad = _run(sandbox, "--autocast", "bf16", "--sae-precision", "fp32")
    assert bad.ret == 4 and "contradicts --sae-precision fp32" in bad.stderr.str()
