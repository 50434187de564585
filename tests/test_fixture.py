"""The claim fixture's guards and verdict on tiny subjects, without a pytest session around it."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.catalog import CATALOG, NO_HOOK
from saeclaims.fixture import ClaimFixture, ClaimUsageError, RunAccess
from saeclaims.ledger import Ledger
from saeclaims.recording import Recorder
from saeclaims.stats import Bootstrap, Interval
from saeclaims.store import EvidenceStore
from saeclaims.thread import THREAD_CLAIMS
from tests.conftest import tiny_model, tiny_sae, tiny_subject

CLAIMS = {c.id: c for c in THREAD_CLAIMS}
HOOK = "blocks.0.hook_resid_pre"


class FakeSession:
    """The two narrow things the fixture gets: a run (subject, bootstrap) and the real recorder on a fresh store."""

    def __init__(self, subject, ledger=None):
        self.store = EvidenceStore()
        ledger = ledger or Ledger("tiny")
        self.recorder = Recorder(self.store, CATALOG, lambda name: ledger, lambda: None, lambda: 0.99, 0, 200)
        self.run = RunAccess(lambda name: subject, _no_workbench, lambda: Bootstrap(0.99, 0, 200))


def _no_workbench(name):
    raise AssertionError("these tests measure nothing")


def _fixture(subject, claim="beyond-context-degrades", row=HOOK, ledger=None):
    s = FakeSession(subject, ledger)
    return ClaimFixture(CLAIMS[claim], "tiny", row, s.run, s.recorder), s


def _skipped(call) -> str:
    with pytest.raises(pytest.skip.Exception) as info:
        call()
    return str(info.value)


def test_seq_len_not_beyond_the_context_is_not_applicable_with_the_fix():
    fx, s = _fixture(tiny_subject(ctx=8, seq_len=9))
    msg = _skipped(fx.require_beyond_context)
    assert "--seq-len 9 leaves no position beyond the SAE's training context 8: raise it above 9" in msg
    assert s.store.not_applicable[0].claim == "beyond-context-degrades"
    ok, _ = _fixture(tiny_subject(ctx=8, seq_len=10))
    ok.require_beyond_context()  # position 9 is beyond: nothing happens


def test_no_learned_positions():
    subject = tiny_subject()
    subject.model = tiny_model(positional="rotary")
    fx, s = _fixture(subject, "wpos-helix", "model")
    assert "rotary, not a learned absolute W_pos" in _skipped(fx.require_learned_positions)
    assert s.store.not_applicable[0].sae_id == "model"


def test_no_hook_in_scope():
    fx, _ = _fixture(tiny_subject(), "layer0-error-is-positional", NO_HOOK)
    assert "no SAE at this claim's hooks (resid_pre 0)" in _skipped(fx.require_hook)


def test_full_context_control_missing_at_the_hook():
    subject = tiny_subject()
    fx, _ = _fixture(subject, "full-context-training-fixes")
    assert "no full-context SAE family (control) at this hook" in _skipped(fx.require_full_context_sae)
    subject.full_context_saes = {"blocks.1.hook_resid_pre": tiny_sae(16, 32, "blocks.1.hook_resid_pre", 32)}
    fx, _ = _fixture(subject, "full-context-training-fixes", "blocks.1.hook_resid_pre")
    fx.require_full_context_sae()


def test_not_applicable_keeps_the_premise_estimate():
    fx, s = _fixture(tiny_subject())
    _skipped(lambda: fx.not_applicable("no excess to recover", excess="-0.08 [-0.1, -0.06]"))
    assert s.store.not_applicable[0].premise == {"excess": "-0.08 [-0.1, -0.06]"}


@pytest.mark.parametrize(("low", "high", "expected", "fails"), [
    (1.01, 1.2, "holds", False),       # > 1 holds
    (0.5, 1.0, "refuted", False),      # high <= 1 refutes a '>' claim; the ledger says so
    (0.9, 1.1, "holds", True),         # inconclusive against a ledger that expects holds
])
def test_check_judges_records_and_compares_with_the_ledger(low, high, expected, fails):
    ledger = Ledger("tiny", {"beyond-context-degrades": {HOOK: expected}})
    fx, s = _fixture(tiny_subject(), ledger=ledger)
    iv = Interval((low + high) / 2, low, high, 0.99, 6, 180, "cluster bootstrap (BCa)")
    if fails:
        with pytest.raises(pytest.fail.Exception, match=r"-> inconclusive \(expected holds; 6 seqs, 180 tokens\)"):
            fx.check(iv)
    else:
        ev = fx.check(iv, note="x")
        assert (ev.verdict, ev.expected, ev.method, ev.extra) == (expected, expected, "cluster bootstrap (BCa)",
                                                                 {"note": "x"})
    assert len(s.store.evidence) == 1 and s.store.evidence[0].sae_id == HOOK


def test_check_twice_is_an_error():
    fx, _ = _fixture(tiny_subject())
    iv = Interval(2.0, 1.5, 2.5, 0.99)
    fx.check(iv)
    with pytest.raises(ClaimUsageError, match="check\\(\\) called twice"):
        fx.check(iv)


def test_a_reference_row_has_no_loadable_subject():
    s = FakeSession(tiny_subject())
    fx = ClaimFixture(CLAIMS["wpos-helix"], "gpt2-small (reference W_pos)", "model", s.run, s.recorder,
                      reference=True)
    with pytest.raises(ClaimUsageError, match="reference data"):
        fx.subject  # noqa: B018


# ---------------------------------------------------------------- gating: no ratio over an absent premise

def _excess_fixture(dce_in: float, dce_out: float, noise: float = 0.01):
    from saeclaims.instruments import excess
    from tests.test_instruments import HOOKS, synthetic

    m = synthetic({("sae", HOOKS[0]): dce_in, ("shift_pos", HOOKS[0]): dce_in},
                  {("sae", HOOKS[0]): dce_out, ("shift_pos", HOOKS[0]): dce_in}, noise=noise)
    fx, s = _fixture(tiny_subject(), "layer0-error-is-positional")
    return fx, s, excess(m, HOOKS[0], boot=Bootstrap(0.99, 0, 500))


@pytest.mark.parametrize(("dce_in", "dce_out", "applicable"), [
    (0.3, 0.3, False),    # no excess: the interval spans 0
    (0.3, 0.22, False),   # negative excess (loss falls beyond the context)
    (0.3, 0.6, True),     # a clear excess: the recovery may be judged
])
def test_a_recovery_is_judged_only_over_a_positive_excess(dce_in, dce_out, applicable):
    fx, s, ex = _excess_fixture(dce_in, dce_out)
    if applicable:
        fx.require_positive(ex, "excess")
        assert not s.store.not_applicable
        return
    msg = _skipped(lambda: fx.require_positive(ex, "excess"))
    assert "no excess to divide by" in msg and "interval is not wholly above 0" in msg
    (row,) = s.store.not_applicable
    assert row.premise["excess"].startswith(f"{ex.estimate:.4g} [") and not s.store.evidence


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 2.0), st.floats(-0.5, 0.0))
def test_no_excess_never_gives_a_verdict(dce_in, delta):
    """Whatever the level, an excess at or below 0 makes the claim not applicable, never a verdict."""
    fx, s, ex = _excess_fixture(dce_in, dce_in + delta, noise=0.02)
    _skipped(lambda: fx.require_positive(ex, "excess"))
    assert len(s.store.not_applicable) == 1 and not s.store.evidence


def test_an_l0_statistic_on_a_topk_sae_is_not_applicable():
    from sae_lens import TopKSAE, TopKSAEConfig

    subject = tiny_subject()
    cfg = TopKSAEConfig(d_in=16, d_sae=32, k=4)
    cfg.metadata.hook_name, cfg.metadata.context_size = HOOK, 8
    subject.saes[HOOK] = TopKSAE(cfg)
    fx, s = _fixture(subject, "encoder-off-distribution")
    assert "L0 is fixed by construction (topk, k = 4)" in _skipped(fx.require_free_l0)
    assert s.store.not_applicable[0].premise == {"architecture": "topk", "k": 4}
    standard, _ = _fixture(tiny_subject(), "encoder-off-distribution")
    standard.require_free_l0()  # a ReLU SAE's L0 is free


def test_w_pos_claims_are_not_applicable_at_non_residual_hooks():
    subject = tiny_subject(hooks=["blocks.0.hook_mlp_out", "blocks.1.hook_resid_mid", "blocks.0.attn.hook_z"])
    for hook in ("blocks.0.hook_mlp_out", "blocks.0.attn.hook_z"):
        fx, s = _fixture(subject, "position-not-most-of-it-input", hook)
        assert f"summand of the residual stream only; this SAE reads {hook}" in _skipped(fx.require_learned_positions)
        assert s.store.not_applicable[0].premise == {"hook": hook}
    fx, _ = _fixture(subject, "position-not-most-of-it-input", "blocks.1.hook_resid_mid")
    fx.require_learned_positions()  # residual: nothing happens


def test_a_comparison_across_layers_refuses_two_saes_at_one_hook():
    subject = tiny_subject(hooks=[HOOK])
    subject.saes = {"a": tiny_sae(16, 32, HOOK, 8, 1), "b": tiny_sae(16, 32, HOOK, 8, 2),
                    "blocks.1.hook_resid_pre": tiny_sae(16, 32, "blocks.1.hook_resid_pre", 8, 3)}
    fx, s = _fixture(subject, "later-layers-worse-in-context", "resid_pre")
    msg = _skipped(lambda: fx.one_sae_per_hook(subject.sae_ids))
    assert f"several SAEs read {HOOK} (a, b)" in msg
    assert fx.one_sae_per_hook(["a", "blocks.1.hook_resid_pre"]) == ["a", "blocks.1.hook_resid_pre"]


ARCHITECTURES = {  # sae_lens's inference classes, as they load (BatchTopK and Matryoshka load as JumpReLU)
    "standard": ("StandardSAE", {}), "gated": ("GatedSAE", {}), "jumprelu": ("JumpReLUSAE", {}),
    "topk": ("TopKSAE", {"k": 4}), "abstopk": ("AbsTopKSAE", {"k": 4}), "matching_pursuit": ("MatchingPursuitSAE", {}),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_inference_architecture_is_measured_and_l0_claims_know_fixed_k(arch):
    import numpy as np
    import sae_lens

    from saeclaims.splice import measure
    from saeclaims.subjects import validate_subject
    from saeclaims.variants import CLAIM_VARIANTS

    cls, extra = ARCHITECTURES[arch]
    subject = tiny_subject(n_seqs=3, seq_len=16, hooks=[HOOK, "blocks.1.hook_mlp_out"])
    for hook in subject.sae_ids:
        cfg = getattr(sae_lens, f"{cls}Config")(d_in=16, d_sae=32, **extra)
        cfg.metadata.hook_name, cfg.metadata.context_size = hook, 8
        sae = getattr(sae_lens, cls)(cfg)
        with torch.no_grad():
            for p in sae.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
            if arch == "jumprelu":
                sae.threshold.abs_()
        subject.saes[hook] = sae.eval()
    validate_subject(subject)
    m = measure(subject, variants=CLAIM_VARIANTS, progress=False)
    for key, metrics in m.metrics.items():
        assert np.isfinite(metrics["dce"]).all(), key
    with torch.no_grad():
        codes = subject.saes[HOOK].encode(subject.model.run_with_cache(subject.tokens, names_filter=HOOK)[1][HOOK])
    np.testing.assert_array_equal(m.get("sae", HOOK, "l0")[:, 1:], (codes != 0).sum(-1).numpy()[:, 1:-1])
    fx, _ = _fixture(subject, "encoder-off-distribution")
    if "topk" in arch:
        assert "fixed by construction" in _skipped(fx.require_free_l0)
    else:
        fx.require_free_l0()


def test_old_spellings_of_the_row_warn_and_still_work():
    """`claim.hook` and `claim.row` were the row's SAE id under other names; `claim.sae_id` is the one accessor."""
    fx, _ = _fixture(tiny_subject())
    assert fx.sae_id == HOOK
    with pytest.warns(DeprecationWarning, match="claim.hook is deprecated: use claim.sae_id"):
        assert fx.hook == HOOK
    with pytest.warns(DeprecationWarning, match="claim.row is deprecated: use claim.sae_id"):
        assert fx.row == HOOK


@pytest.mark.parametrize(("control_dce", "applicable"), [
    (0.1, True),    # the control adds what the SAE adds in context: like with like
    (0.4, False),   # the control is worse in context by 0.3/2 = 0.15 of CE-loss score: unlike
    (0.13, False),  # a gap of 0.015: just over the 0.01 mark
])
def test_control_relative_claims_need_a_control_like_the_sae(control_dce, applicable):
    """Planted: zero ablation adds 2 nats, the SAE 0.1 in context; the control adds `control_dce`."""
    from tests.test_instruments import HOOKS, synthetic

    m = synthetic({("sae", HOOKS[0]): 0.1, ("zero", HOOKS[0]): 2.0, ("full_context_sae", HOOKS[0]): control_dce},
                  {("sae", HOOKS[0]): 0.5, ("zero", HOOKS[0]): 2.0, ("full_context_sae", HOOKS[0]): control_dce},
                  noise=0.002)
    subject = tiny_subject()
    subject.full_context_saes = {HOOKS[0]: subject.saes[HOOKS[0]]}
    fx, s = _fixture(subject, "beyond-context-degrades-vs-control")
    if applicable:
        fx.require_matched_control(m)
        assert not s.store.not_applicable
        return
    msg = _skipped(lambda: fx.require_matched_control(m))
    assert "the control is not shown to be like the SAE in context" in msg
    (row,) = s.store.not_applicable
    gap = (control_dce - 0.1) / 2.0
    assert float(row.premise["control_ce_gap"].split()[0]) == pytest.approx(gap, rel=0.05)


@pytest.mark.parametrize(("dce_out", "applicable"), [
    (0.3 + 0.06, True),    # an excess of 0.06 over 0.3 in context: above max(0.02, 0.03)
    (0.3 + 0.025, False),  # significant (noise 0.002) but below the floor of 0.03 (a tenth of 0.3)
])
def test_an_excess_must_be_large_enough_to_matter(dce_out, applicable):
    from saeclaims.instruments import excess, excess_floor
    from tests.test_instruments import HOOKS, synthetic

    m = synthetic({("sae", HOOKS[0]): 0.3}, {("sae", HOOKS[0]): dce_out}, noise=0.002)
    floor = excess_floor(m, HOOKS[0])
    assert floor == pytest.approx(0.03, abs=1e-3)
    ex = excess(m, HOOKS[0], boot=Bootstrap(0.99, 0, 500))
    assert ex.low > 0  # significant either way
    fx, s = _fixture(tiny_subject(), "layer0-error-is-positional")
    if applicable:
        fx.require_substantial(ex, "excess", floor)
        assert not s.store.not_applicable
        return
    msg = _skipped(lambda: fx.require_substantial(ex, "excess", floor))
    assert f"below its floor of {floor:.4g}: too small" in msg
    assert float(s.store.not_applicable[0].premise["floor"]) == pytest.approx(0.03, abs=1e-3)


def test_the_floor_is_an_absolute_minimum_for_small_in_context_losses():
    from saeclaims.instruments import excess_floor
    from tests.test_instruments import HOOKS, synthetic

    m = synthetic({("sae", HOOKS[0]): 0.05}, {("sae", HOOKS[0]): 0.5}, noise=0.0)
    assert excess_floor(m, HOOKS[0]) == 0.02  # a tenth of 0.05 is 0.005 < 0.02


@pytest.mark.parametrize("claim_id", ["full-context-training-fixes", "position-not-most-of-it-vs-control",
                                      "layer0-error-is-positional", "reencoding-recovers"])
def test_one_premise_per_hook_says_whether_there_is_something_to_explain(claim_id):
    """Planted: the SAE adds 0.1 nats in context and beyond it (no degradation), while the control adds 0.1 in
    context and 0.05 beyond (it improves with position): the control-relative excess is positive, the SAE's own
    is not. Every claim that explains a failure beyond the context is then not applicable for the same reason,
    with the same premise, so no row of the hook reads as a degradation to fix."""
    from tests.test_instruments import HOOKS, synthetic

    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1, ("zero", h): 2.0, ("full_context_sae", h): 0.1},
                  {("sae", h): 0.1, ("zero", h): 2.0, ("full_context_sae", h): 0.05}, noise=0.002)
    subject = tiny_subject()
    subject.full_context_saes = {h: subject.saes[h]}
    fx, s = _fixture(subject, claim_id)
    msg = _skipped(lambda: fx.require_something_to_explain(m))
    assert "no excess dCE_sae(O) - dCE_sae(I) to divide by" in msg
    (row,) = s.store.not_applicable
    assert set(row.premise) == {"excess dCE_sae(O) - dCE_sae(I)"}
    from saeclaims.instruments import control_excess

    assert control_excess(m, h, Bootstrap(0.99, 0, 500)).low > 0  # the other premise alone would have said "go"


def test_a_claim_whose_instrument_failed_validation_is_not_applicable_naming_it():
    """`position-not-most-of-it-input` reads shift_pos, which gives one verdict on the planted positional and token
    failures (tests/test_planted_instruments.py): not run on real subjects."""
    fx, s = _fixture(tiny_subject(), "position-not-most-of-it-input")
    msg = _skipped(fx.require_valid_instrument)
    assert "its instrument failed validation on planted controls: shift_pos" in msg
    assert s.store.not_applicable[0].claim == "position-not-most-of-it-input"
    ok, _ = _fixture(tiny_subject(), "layer0-error-is-positional")
    ok.require_valid_instrument()  # pos_part_repair passed its planted controls: nothing happens
