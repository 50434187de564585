"""The published-statistics preflight: sae_lens's definitions of L0 and explained variance, the exact edges of
its release benchmark's tolerances, which subjects are checked, and the plugin's usage error and
--accept-published-mismatch (in-process runs on a tiny registered "release")."""

import json
import math
from pathlib import Path

import pytest
import torch

import saeclaims.preflight as pf
from saeclaims.preflight import EXPLAINED_VARIANCE, L0, MISMATCH, NOT_PUBLISHED, OK, PublishedCheck
from saeclaims.subjects import Subject, SubjectInfo, SubjectSource, register_source, unregister_source
from tests.conftest import tiny_model, tiny_sae

pytest_plugins = ["pytester"]

CTX = 17  # positions [1, 17) of 4 sequences: 64 tokens, so a mean L0 is k/64, exact in float64
RAND, IDENT = "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"


def edge_subject() -> Subject:
    """A random SAE (L0 somewhere, EV anywhere) and an identity-like one (x̂ == x bitwise: EV exactly 1)."""
    model = tiny_model(n_layers=2, d_model=16, n_ctx=32)
    saes = {RAND: tiny_sae(16, 32, RAND, CTX, seed=1), IDENT: tiny_sae(16, 32, IDENT, CTX, identity=True)}
    tokens = torch.randint(1, model.cfg.d_vocab, (4, 32), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    return Subject(name="tiny-release", model=model, saes=saes, tokens=tokens,
                   context_sizes={i: CTX for i in saes},
                   provenance={"model": "tiny", "release": "tiny-release", "sae_ids": list(saes)})


@pytest.fixture(scope="module")
def edge():
    subject = edge_subject()
    return subject, pf.measure_in_context(subject)


def _reference(subject: Subject, sae_id: str, ctx: int) -> tuple[float, float, int]:
    """sae_lens's own arithmetic on the same tokens: L0 as in get_sparsity_and_variance_metrics, explained
    variance by sae_lens's ExplainedVarianceCalculator (fed float64: its float32 sums differ in the 5th digit on
    a badly reconstructed input), BOS tokens masked out as its benchmark does."""
    from sae_lens.evals import ExplainedVarianceCalculator

    sae = subject.saes[sae_id]
    hook = sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = subject.model.run_with_cache(subject.tokens, names_filter=[hook])
        act = cache[hook][:, 1:ctx]
        x = act.flatten(-2, -1) if act.ndim == 4 else act
        keep = (subject.tokens[:, 1:ctx] != subject.bos_token_id).reshape(-1)
        x = x.reshape(-1, x.shape[-1])[keep]
        feats = sae.encode(x)
        calc = ExplainedVarianceCalculator()
        calc.add_batch(sae_output=sae.decode(feats).double(), hidden_acts=x.double())  # float64, as here
    return (feats != 0).sum(-1).float().mean().item(), calc.compute(), int(keep.sum())


def test_statistics_follow_sae_lens_definitions_per_sae_context_hook_z_and_bos(monkeypatch):
    """Per-SAE context (8 vs 17, and 64 > seq_len 32: positions [1, seq_len)), a BOS mid-window left out, a
    hook_z SAE fed its flattened [heads x d_head] input whether or not it reshapes by itself; several forward
    batches and several encoding chunks per batch."""
    monkeypatch.setattr(pf, "_CHUNK_ELEMENTS", 7 * 32)  # 7 tokens at a time for d_sae 32
    model = tiny_model(n_layers=2, d_model=16, n_ctx=32)
    z = "blocks.1.attn.hook_z"
    saes = {"short": tiny_sae(16, 32, RAND, 8, seed=1), "long": tiny_sae(16, 32, "blocks.1.hook_resid_post", 64),
            "z": tiny_sae(16, 32, z, CTX, seed=2), "z-reshaping": tiny_sae(16, 32, z, CTX, seed=2)}
    saes["z-reshaping"].turn_on_forward_pass_hook_z_reshaping()
    tokens = torch.randint(1, model.cfg.d_vocab, (5, 32), generator=torch.Generator().manual_seed(3))
    tokens[:, 0] = 0
    tokens[2, 5] = 0  # a document boundary inside every window: not counted
    ctxs = {"short": 8, "long": 64, "z": CTX, "z-reshaping": CTX}
    subject = Subject("t", model, saes, tokens, ctxs)
    got = pf.measure_in_context(subject, batch_tokens=40)  # several batches
    for sae_id, ctx in ctxs.items():
        # sae_lens's reshaping SAE takes [..., heads, d_head] only: its reference is the flattened twin's
        l0, ev, n = _reference(subject, "z" if sae_id == "z-reshaping" else sae_id, min(ctx, 32))
        assert got[sae_id].n_tokens == n == 5 * (min(ctx, 32) - 1) - 1
        assert got[sae_id].l0 == pytest.approx(l0, rel=1e-6)
        assert got[sae_id].explained_variance == pytest.approx(ev, rel=1e-6)  # float32 x̂ of other shapes
    assert got["z"] == got["z-reshaping"]


def test_the_edge_subject_measures_exact_values(edge):
    _, m = edge
    assert m[RAND].n_tokens == m[IDENT].n_tokens == 64
    assert (m[RAND].l0 * 64).is_integer()  # k/64: m + 5 and m - 5 are exact, so the L0 edges are too
    assert m[IDENT].l0 == 16.0 and m[IDENT].explained_variance == 1.0  # exactly: x̂ == x bitwise


def _nudge(x: float, up: bool) -> float:
    return math.nextafter(x, math.inf if up else -math.inf)


# (statistic, SAE, published as a function of the measured value, status). Edges are included (`<=`), as in
# sae_lens's `pytest.approx(measured, abs=tol) == published`; one float past an edge is a mismatch.
CASES = [
    ("l0 equal", L0, RAND, lambda m: m, OK),
    ("l0 +5 (edge)", L0, RAND, lambda m: m + 5.0, OK),
    ("l0 -5 (edge)", L0, RAND, lambda m: m - 5.0, OK),
    ("l0 one float past +5", L0, RAND, lambda m: _nudge(m + 5.0, up=True), MISMATCH),
    ("l0 +5.01", L0, RAND, lambda m: m + 5.01, MISMATCH),
    ("l0 missing", L0, RAND, lambda m: None, NOT_PUBLISHED),
    ("ev equal", EXPLAINED_VARIANCE, IDENT, lambda m: m, OK),
    # 1.0 - 0.1 is the float 0.9; 1.0 - 0.9 is exact (Sterbenz) = 0.09999999999999998 <= 0.1
    ("ev -0.1 (edge)", EXPLAINED_VARIANCE, IDENT, lambda m: m - 0.1, OK),
    ("ev one float past -0.1", EXPLAINED_VARIANCE, IDENT, lambda m: _nudge(m - 0.1, up=False), MISMATCH),
    ("ev -0.11", EXPLAINED_VARIANCE, IDENT, lambda m: m - 0.11, MISMATCH),
    # 1.0 + 0.1 rounds up to 1.1000000000000000888: |1.0 - 1.1| = 0.10000000000000009 > 0.1, in sae_lens too
    ("ev +0.1 rounds past the edge", EXPLAINED_VARIANCE, IDENT, lambda m: m + 0.1, MISMATCH),
    ("ev missing", EXPLAINED_VARIANCE, IDENT, lambda m: None, NOT_PUBLISHED),
]


@pytest.mark.parametrize(("statistic", "sae_id", "published", "status"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_tolerance_edges_are_sae_lens_benchmark_edges(edge, monkeypatch, statistic, sae_id, published, status):
    subject, m = edge
    measured = getattr(m[sae_id], statistic)
    value = published(measured)
    monkeypatch.setattr(pf, "published_statistics", lambda release: {sae_id: {statistic: value}})
    checks = {(c.sae_id, c.statistic): c for c in pf.check_published(subject)}
    assert len(checks) == 4  # every SAE x statistic; the ones not in the directory are "not published"
    c = checks[(sae_id, statistic)]
    assert (c.measured, c.published, c.tolerance, c.status) == (measured, value, pf.TOLERANCES[statistic], status)
    if value is not None:  # the same verdict as sae_lens's own assertion
        assert (status == OK) == (pytest.approx(measured, abs=pf.TOLERANCES[statistic]) == value)
    others = [x for k, x in checks.items() if k != (sae_id, statistic)]
    assert all(x.status == NOT_PUBLISHED and x.published is None for x in others)
    assert c.subject == "tiny-release" and c.hook == sae_id and c.n_tokens == 64


def test_any_value_agrees_with_pytest_approx_around_both_edges(edge):
    """On a measured value that is no short binary fraction (the random SAE's explained variance)."""
    _, m = edge
    for stat, tol in pf.TOLERANCES.items():
        measured = getattr(m[RAND], stat)
        for edge_value in (measured - tol, measured + tol):
            p = edge_value
            for _ in range(3):
                p = _nudge(p, up=False)
            for _ in range(7):
                assert pf.within(measured, p, tol) == (pytest.approx(measured, abs=tol) == p), (stat, p)
                p = _nudge(p, up=True)


@pytest.mark.parametrize("release", [None, "local:/some/dir", "saeclaims-organism (fixtures/organism)"])
def test_subjects_that_are_no_sae_lens_release_are_not_checked(edge, monkeypatch, release):
    subject, _ = edge
    prov = {} if release is None else {"release": release}
    monkeypatch.setattr(pf, "measure_in_context", lambda *a, **k: pytest.fail("measured a non-release"))
    assert pf.check_published(Subject("x", subject.model, subject.saes, subject.tokens, subject.context_sizes,
                                      provenance=prov)) == []


def test_published_values_are_the_directory_s_and_absent_ones_are_not_its_defaults():
    """get_pretrained_saes_directory() fills an absent l0 with 0.0 and variance with 1.0; those are no
    published values. Every release of the installed directory: same SAE ids, same values where published."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    absent = {L0: 0, EXPLAINED_VARIANCE: 0}
    for release, look in directory.items():
        published = pf.published_statistics(release)
        assert set(published) == set(look.saes_map), release
        for sae_id, values in published.items():
            for stat, loaded in ((L0, look.expected_l0[sae_id]), (EXPLAINED_VARIANCE,
                                                                  look.expected_var_explained[sae_id])):
                if values[stat] is None:
                    absent[stat] += 1
                    assert loaded == {L0: 0.0, EXPLAINED_VARIANCE: 1.0}[stat], (release, sae_id, stat)
                else:
                    assert values[stat] == loaded, (release, sae_id, stat)
    assert absent[L0] > 0 and absent[EXPLAINED_VARIANCE] > 0  # both kinds of gap exist in the directory
    res_jb = pf.published_statistics("gpt2-small-res-jb")
    assert all(v[L0] is not None and v[EXPLAINED_VARIANCE] is not None for v in res_jb.values())
    assert pf.published_statistics("saeclaims-organism (fixtures/organism)") is None


def test_messages_name_the_sae_statistic_values_tolerance_and_the_fix():
    bad = PublishedCheck("blocks.8.hook_resid_pre", L0, 61.25, 70.0, 5.0, MISMATCH, "rel", "blocks.8.hook_resid_pre",
                         2032)
    good = PublishedCheck("blocks.8.hook_resid_pre", EXPLAINED_VARIANCE, 0.95, 0.9, 0.1, OK, "rel", "h", 2032)
    none = PublishedCheck("x", EXPLAINED_VARIANCE, 0.8, None, 0.1, NOT_PUBLISHED)
    assert bad.one_line() == ("SAE blocks.8.hook_resid_pre: l0 measured 61.25, published 70 "
                              "(|difference| 8.75 > tolerance 5)")
    assert good.one_line().endswith("(|difference| 0.05 <= tolerance 0.1)")
    assert none.one_line() == "SAE x: explained_variance measured 0.8; sae_lens publishes no value"
    msg = pf.mismatch_message("rel", [bad, good, none])
    assert msg.count("\n") == 2 and bad.one_line() in msg and good.one_line() not in msg
    assert msg.startswith("--sae-subject rel: ") and "2032 tokens" in msg
    assert "tokenizer" in msg and "from_pretrained kwargs" in msg and "--accept-published-mismatch" in msg


def test_xdist_workers_send_their_checks_and_the_controller_keeps_each_once():
    from saeclaims.session import ClaimSession
    from saeclaims.store import EvidenceStore

    check = PublishedCheck("a", L0, 10.0, 12.0, 5.0, OK, "rel", "blocks.0.hook_resid_pre", 64)
    worker, controller = ClaimSession.__new__(ClaimSession), ClaimSession.__new__(ClaimSession)
    worker.store, worker.published = EvidenceStore(), [check]
    controller.store, controller.published, controller.worker_peak = EvidenceStore(), [], {}
    for _ in range(2):  # two workers that both loaded the subject
        controller.merge_worker_payload(worker.worker_payload())
    assert controller.published == [check]
    assert controller.worker_peak["rss"] > 0  # the workers' peak memory travels too (the largest is kept)


# ---------------------------------------------------------------- through the plugin

CLAIM_CONFTEST = '''
from saeclaims import register_claim

register_claim(id="toy", family="toy", source="sandbox", url="https://example.org", words="a toy claim",
               statistic="a number", direction=">", threshold=0.9, why="above 0.9", scope="model")
'''

CLAIM_TEST = '''
import pytest
from saeclaims.stats import Interval


@pytest.mark.claim("toy")
def test_toy(claim):
    claim.check(Interval(0.99, 0.98, 0.995, claim.boot.confidence, 4, 40))
'''


@pytest.fixture
def tiny_release(monkeypatch, edge):
    """`tiny-release`: the edge subject as a registered source, its directory entry publishing the identity
    SAE's values (ok) and an L0 of 1000 for the random SAE (mismatch)."""
    _, m = edge
    loads = []

    def load(spec, device, n_seqs, seq_len, text_file):
        loads.append(spec)
        return edge_subject()

    source = register_source(SubjectSource(
        form="tiny-release", name="tiny-release", load=load, help="a tiny test release",
        describe=lambda spec: SubjectInfo(spec, [RAND, IDENT])))
    monkeypatch.setattr(pf, "published_statistics", lambda release: {
        RAND: {L0: 1000.0, EXPLAINED_VARIANCE: None},
        IDENT: {L0: m[IDENT].l0, EXPLAINED_VARIANCE: 1.0}} if release == "tiny-release" else None)
    yield loads
    assert unregister_source("tiny-release") is source


def _run(pytester, *args):
    pytester.makeconftest(CLAIM_CONFTEST)
    pytester.makepyfile(test_claims=CLAIM_TEST)
    (pytester.path / "claims" / "expected").mkdir(parents=True, exist_ok=True)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--sae-subject",
                                        "tiny-release", "--sae-report", str(pytester.path / "out" / "REPORT.md"),
                                        "--n-resamples", "100", *args)


def test_a_mismatch_is_one_usage_error_before_any_test(pytester, tiny_release):
    result = _run(pytester)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text[-3000:]
    line = f"SAE {RAND}: l0 measured "
    assert text.count(line) == 1 and "published 1000 (|difference|" in text and "> tolerance 5)" in text
    assert "--accept-published-mismatch" in text and "Traceback" not in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = "`SAE statistics differ from sae_lens's published values`"
    assert row.strip("`") in text and row in readme[readme.index("### Bad input"):]
    assert f"SAE {IDENT}" not in text  # only the mismatches are named
    assert tiny_release == ["tiny-release"]  # loaded once
    assert not (pytester.path / "out").exists()


def test_accepting_the_mismatch_runs_on_and_reports_it_at_the_top(pytester, tiny_release):
    result = _run(pytester, "--accept-published-mismatch")
    result.assert_outcomes(passed=1)
    md = (pytester.path / "out" / "REPORT.md").read_text()
    warning = md.index("## Warning: SAE statistics differ from the published values")
    assert warning < md.index("## Summary")
    top = md[warning:md.index("## Summary")]
    assert f"| tiny-release | {RAND} | l0 |" in top and "| 1000 | 5 | **mismatch** | 64 |" in top
    assert IDENT not in top
    run = md[md.index("## Run"):md.index("## Verdicts")]
    assert f"| tiny-release | {IDENT} | explained_variance | 1 | 1 | 0.1 | ok | 64 |" in run
    assert f"| tiny-release | {RAND} | explained_variance |" in run and "| - | 0.1 | not published |" in run
    header = json.loads((pytester.path / "out" / "report" / "report.json").read_text())["header"]
    rows = {(r["sae_id"], r["statistic"]): r for r in header["published"]}
    assert rows[(RAND, L0)]["status"] == MISMATCH and rows[(RAND, L0)]["published"] == 1000.0
    assert rows[(IDENT, EXPLAINED_VARIANCE)] | {"subject": "tiny-release"} == {
        "sae_id": IDENT, "statistic": EXPLAINED_VARIANCE, "measured": 1.0, "published": 1.0, "tolerance": 0.1,
        "status": OK, "subject": "tiny-release", "hook": IDENT, "n_tokens": 64}
    assert rows[(RAND, EXPLAINED_VARIANCE)]["published"] is None
    assert header["options"]["accept_published_mismatch"] is True
