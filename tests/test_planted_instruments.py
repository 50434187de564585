"""The positional claims' instruments on planted controls: can each tell a claim that holds from one that fails?

Each claim test of claims/test_positional.py is run as it is (its guards, its statistic, its threshold) on the
planted subject (tests/planted_subjects.py), measured by `splice.measure`, at the confidence of a run (0.999).
Positive control: an SAE on which the claim's words hold by construction; negative control: one on which they
fail. `positional` carries a wrong position beyond ctx and nothing else; `smeared` an even blend of two trained
positions; `token` adds a token-part error of the same excess loss as `positional`, triggered by the
out-of-context position; `exact` has no failure beyond ctx.

Where an instrument separates its controls the test asserts it; where it cannot, the test documents it by
asserting the same verdict on both (the instrument is then not valid for the claim's words; README, "Planted
controls").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from claims import test_positional as positional_claims
from saeclaims.fixture import ClaimFixture, RunAccess
from saeclaims.instruments import recovery
from saeclaims.splice import measure
from saeclaims.stats import Bootstrap, Interval, verdict
from saeclaims.thread import THREAD_CLAIMS

from .planted_subjects import helix_subject, planted_subject

BOOT = Bootstrap(confidence=0.999)
VARIANTS = ("zero", "sae", "shift_pos", "pos_repair_out", "pos_part_repair", "token_then_pos",
            "full_context_sae")
NOT_APPLICABLE = "not applicable"
CLAIMS = {c.id: c for c in THREAD_CLAIMS}


class NotApplicableHere(Exception):
    """The claim's guard found its premise absent on this planted SAE."""


class PlantedClaim(ClaimFixture):
    """The `claim` fixture on a planted subject: the claim test's own guards and statistic; the verdict is kept
    here instead of being recorded and compared with a ledger."""

    def __init__(self, claim_id: str, subject, sae_id: str, m, boot: Bootstrap) -> None:
        run = RunAccess(subject=lambda name: subject, workbench=lambda name: None, bootstrap=lambda: boot)
        super().__init__(CLAIMS[claim_id], subject.name, sae_id, run, recorder=None)
        self._m = m
        self.interval: Interval | None = None

    def measurements(self, hooks=None):
        return self._m

    def add_series(self, series) -> None:
        pass

    def not_applicable(self, reason: str, **premise):
        raise NotApplicableHere(reason)

    def check(self, interval: Interval, **extra):
        self.interval = interval


def claim_id_of(test: Callable) -> str:
    return next(mk.args[0] for mk in test.pytestmark if mk.name == "claim")


def judge(test: Callable, planted, m, sae_id: str) -> tuple[str, Interval | None]:
    """The verdict (or 'not applicable') the claim test reaches on one planted SAE, with its interval."""
    fixture = PlantedClaim(claim_id_of(test), planted.subject, sae_id, m, BOOT)
    try:
        test(fixture)
    except NotApplicableHere:
        return NOT_APPLICABLE, None
    iv, c = fixture.interval, fixture.claim
    return verdict(iv.low, iv.high, c.threshold, c.direction), iv


@pytest.fixture(scope="module")
def planted():
    return planted_subject()


@pytest.fixture(scope="module")
def measured(planted):
    return measure(planted.subject, variants=VARIANTS, progress=False)


def test_planted_failures_cost_the_same_excess_loss(planted, measured):
    """The two failures are of the same size (the token one is calibrated to the positional one), so an
    instrument that tells them apart does so by where the error lies, not by how much it costs."""
    for layer in (0, 1):
        assert planted.excess[f"token-l{layer}"] == pytest.approx(planted.excess[f"positional-l{layer}"], rel=0.01)
        assert planted.excess[f"positional-l{layer}"] > 0.1


# (claim test, SAE id of the positive control, of the negative control)
SEPARATING = [
    (positional_claims.test_adding_wpos_recovers, "positional-l0", "token-l0"),
    (positional_claims.test_adding_wpos_recovers, "positional-l1", "token-l1"),
    (positional_claims.test_sae_thinks_earlier, "positional-l0", "token-l0"),
    # pos_part_repair, on both positional failures
    (positional_claims.test_layer0_error_is_positional, "positional-l0", "token-l0"),
    (positional_claims.test_layer0_error_is_positional, "smeared-l0", "token-l0"),
    (positional_claims.test_position_not_most_of_it_output, "token-l0", "positional-l0"),
    (positional_claims.test_position_not_most_of_it_output, "token-l0", "smeared-l0"),
    (positional_claims.test_position_not_most_of_it_output, "token-l1", "smeared-l1"),
    (positional_claims.test_positional_error_not_most_later, "token-l1", "positional-l1"),
    (positional_claims.test_positional_error_not_most_later, "token-l1", "smeared-l1"),
    (positional_claims.test_positional_not_large_share_of_mse, "token-l1", "positional-l1"),
    (positional_claims.test_positional_not_large_share_of_mse, "token-l1", "smeared-l1"),
]


@pytest.mark.parametrize(("test", "holds_on", "fails_on"), SEPARATING,
                         ids=[f"{claim_id_of(t)}-{p}-{n}" for t, p, n in SEPARATING])
def test_instrument_separates_its_controls(test, holds_on, fails_on, planted, measured):
    assert judge(test, planted, measured, holds_on)[0] == "holds"
    assert judge(test, planted, measured, fails_on)[0] == "refuted"


# Instruments that cannot tell a positional failure from a token failure the position triggers: shift_pos shows
# the SAE an in-context position, which removes any failure the out-of-context position triggers.
BLIND = [
    (positional_claims.test_position_not_most_of_it_input, "token-l0", "positional-l0", "refuted"),
    (positional_claims.test_position_not_most_of_it_input, "token-l1", "positional-l1", "refuted"),
    (positional_claims.test_position_not_most_of_it_vs_control, "token-l0", "positional-l0", "refuted"),
]


@pytest.mark.parametrize(("test", "holds_on", "fails_on", "both"), BLIND,
                         ids=[f"{claim_id_of(t)}-{p}-{n}" for t, p, n, _ in BLIND])
def test_instrument_cannot_separate_its_controls(test, holds_on, fails_on, both, planted, measured):
    """Documents a failed validation: the same verdict on the control where the words hold and where they fail."""
    assert judge(test, planted, measured, holds_on)[0] == both
    assert judge(test, planted, measured, fails_on)[0] == both


@pytest.mark.parametrize("test", [positional_claims.test_adding_wpos_recovers,
                                  positional_claims.test_layer0_error_is_positional,
                                  positional_claims.test_position_not_most_of_it_input])
def test_no_failure_beyond_context_is_not_applicable(test, planted, measured):
    """The null of the excess gate: an SAE with no failure beyond its context has no excess to take a share of."""
    assert judge(test, planted, measured, "exact-l0")[0] == NOT_APPLICABLE


# The claims' former instruments, kept here as measured (the claims now read pos_part_repair): shift_pos gives the
# same verdict on both controls.
FORMER = [
    ("layer0-error-is-positional", "shift_pos", "positional-l0", "token-l0", "holds"),
    ("positional-error-not-most-later", "shift_pos", "token-l1", "positional-l1", "refuted"),
]


@pytest.mark.parametrize(("claim_id", "variant", "holds_on", "fails_on", "both"), FORMER,
                         ids=[f"{c}-{v}" for c, v, *_ in FORMER])
def test_former_instrument_cannot_separate_its_controls(claim_id, variant, holds_on, fails_on, both, planted,
                                                        measured):
    c = CLAIMS[claim_id]
    for sae_id in (holds_on, fails_on):
        iv = recovery(measured, sae_id, variant, BOOT)
        assert verdict(iv.low, iv.high, c.threshold, c.direction) == both


def test_decoded_swap_misses_a_smeared_position(planted, measured):
    """pos_repair_out repairs a clean swap of one decodable position only: on the smeared failure (all of the
    excess positional by construction) neither reading of it reaches the verdict the words have there."""
    assert judge(positional_claims.test_adding_wpos_recovers, planted, measured, "smeared-l0")[0] != "holds"
    c = CLAIMS["position-not-most-of-it-output"]
    iv = recovery(measured, "smeared-l0", "pos_repair_out", BOOT)
    assert verdict(iv.low, iv.high, c.threshold, c.direction) != "refuted"


# pos_mean_part_repair (position as the mean by position on held-out windows shows it, token held fixed), validated
# on the helix model (tests/planted_subjects.helix_subject), whose 48 positions lie in 4 W_pos directions as real
# models' positions lie in few: `computed` carries position ctx - 1's computed features beyond ctx (all of its excess
# positional in the words' reading), `token` a token-part error of the same excess.
COMPUTED = positional_claims.test_position_not_most_of_it_computed
HELIX_VARIANTS = ("zero", "sae", "pos_part_repair", "pos_mean_part_repair", "mean_shift_pos", "full_context_sae")


@pytest.fixture(scope="module")
def helix():
    return helix_subject()


@pytest.fixture(scope="module")
def helix_measured(helix):
    return measure(helix.subject, variants=HELIX_VARIANTS, progress=False)


def test_helix_failures_cost_the_same_excess_loss(helix):
    for layer in (0, 1):
        assert helix.excess[f"token-l{layer}"] == pytest.approx(helix.excess[f"computed-l{layer}"], rel=0.01)
        assert helix.excess[f"computed-l{layer}"] > 0.1


@pytest.mark.parametrize("layer", [0, 1])
def test_computed_position_separates_its_controls(layer, helix, helix_measured):
    assert judge(COMPUTED, helix, helix_measured, f"token-l{layer}")[0] == "holds"
    assert judge(COMPUTED, helix, helix_measured, f"computed-l{layer}")[0] == "refuted"


def test_computed_position_sees_what_the_wpos_reading_misses(helix, helix_measured):
    """At layer 1 the computed failure moves features the blocks compute from position besides W_pos: the W_pos
    instrument (pos_part_repair) removes only part of its excess; the mean-by-position one removes all of it."""
    wpos = recovery(helix_measured, "computed-l1", "pos_part_repair", BOOT)
    computed = recovery(helix_measured, "computed-l1", "pos_mean_part_repair", BOOT)
    assert wpos.high < computed.low, (wpos, computed)


@pytest.mark.parametrize("layer", [0, 1])
def test_the_mean_shift_form_cannot_separate_the_computed_controls(layer, helix, helix_measured):
    """The issue's mean-shift form, SAE(x - mu_p + mu_q) - mu_q + mu_p, shows the SAE position q's computed
    features, so the token failure (triggered by the position) vanishes as the positional one does: read as
    position-not-most-of-it's recovery (< 0.5), both are refuted. Why the claim reads pos_mean_part_repair."""
    c = CLAIMS["position-not-most-of-it-computed"]
    for kind in ("computed", "token"):
        iv = recovery(helix_measured, f"{kind}-l{layer}", "mean_shift_pos", BOOT)
        assert verdict(iv.low, iv.high, c.threshold, c.direction) == "refuted", (kind, iv)


def test_computed_position_sees_a_wpos_only_failure_in_part(helix, helix_measured):
    """Its limit, documented: a failure that moves W_pos alone at layer 1 and leaves the computed features at the
    true position is no position the model computes; its kept directions mix W_pos with computed features, so
    only part of that error is inside them (inconclusive, not refuted)."""
    assert judge(COMPUTED, helix, helix_measured, "positional-l1")[0] == "inconclusive"
    assert judge(COMPUTED, helix, helix_measured, "positional-l0")[0] == "refuted"


def _with_subspace(m, sae_id: str, share: float | None):
    """The measurements with one SAE's position subspace replaced (None: no held-out windows at all)."""
    subs = dict(m.position_subspaces)
    if share is None:
        subs.pop(sae_id)
    else:
        subs[sae_id] = dataclasses.replace(subs[sae_id], variance_share=share)
    return dataclasses.replace(m, position_subspaces=subs, interval_cache={})


def test_computed_position_needs_held_out_windows_and_positional_features_worth_the_name(helix, helix_measured):
    """The premise of position-not-most-of-it-computed: a subspace estimated off the evaluation set, holding at
    least 1% of the variance (the floor from the words); exactly at the floor the claim is judged."""
    m = helix_measured
    sub = m.position_subspaces["token-l1"]
    assert sub.rank >= 1 and sub.variance_share >= 0.01, sub
    assert judge(COMPUTED, helix, _with_subspace(m, "token-l1", None), "token-l1")[0] == NOT_APPLICABLE
    assert judge(COMPUTED, helix, _with_subspace(m, "token-l1", 0.0099), "token-l1")[0] == NOT_APPLICABLE
    assert judge(COMPUTED, helix, _with_subspace(m, "token-l1", 0.01), "token-l1")[0] == "holds"
    assert judge(COMPUTED, helix, m, "exact-l1")[0] == NOT_APPLICABLE
