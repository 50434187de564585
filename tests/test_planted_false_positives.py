"""The compressed-sensing instrument on planted controls: false-positive mass against an oracle support
(`false-positives-beyond-context`) and its causal twin, the `oracle_support` variant (`false-positives-cause-failure`).

Both claim tests of claims/test_context.py run as they are (guards, statistic, threshold) at a run's confidence
(0.999) on tests/planted_subjects.false_positive_subject, measured by `splice.measure`: `spurious` (beyond the
context the encoder turns on a latent outside the true sparse code: both claims hold by construction) and
`magnitude` (beyond the context the code has the right support and wrong magnitudes, a failure of about the same
excess loss: both fail by construction). Every SAE and the control share a noise latent that fires on every token,
so the in-context false-positive mass the ratios divide by is defined.
"""

from __future__ import annotations

import pytest

from claims import test_context as context_claims
from saeclaims.splice import measure
from saeclaims.stats import verdict

from .planted_subjects import HOOKS, false_positive_subject, sae_id
from .test_planted_instruments import BOOT, NotApplicableHere, PlantedClaim, claim_id_of

VARIANTS = ("zero", "sae", "full_context_sae", "oracle_support", "full_context_oracle_support")


class PlantedOracle(PlantedClaim):
    """PlantedClaim whose oracle measurements are the planted ones (measured on every sequence)."""

    def oracle_measurements(self, hooks=None):
        return self._m


@pytest.fixture(scope="module")
def subject():
    return false_positive_subject()


@pytest.fixture(scope="module")
def measured(subject):
    return measure(subject, variants=VARIANTS, progress=False)


def judge(test, subject, m, row: str):
    fixture = PlantedOracle(claim_id_of(test), subject, row, m, BOOT)
    try:
        test(fixture)
    except NotApplicableHere as exc:
        return f"not applicable: {exc}", None
    iv, c = fixture.interval, fixture.claim
    return verdict(iv.low, iv.high, c.threshold, c.direction), iv


SPURIOUS, MAGNITUDE = sae_id("spurious", HOOKS[0]), sae_id("magnitude", HOOKS[0])
# (claim test, SAE id where its words hold by construction, where they fail by construction)
SEPARATING = [
    (context_claims.test_false_positives_beyond_context, SPURIOUS, MAGNITUDE),
    (context_claims.test_false_positives_cause_failure, SPURIOUS, MAGNITUDE),
]


@pytest.mark.parametrize(("test", "holds_on", "fails_on"), SEPARATING,
                         ids=[claim_id_of(t) for t, *_ in SEPARATING])
def test_instrument_separates_its_controls(test, holds_on, fails_on, subject, measured):
    assert judge(test, subject, measured, holds_on)[0] == "holds"
    assert judge(test, subject, measured, fails_on)[0] == "refuted"


def test_the_oracle_support_is_the_planted_true_code(measured):
    """The pursuit finds what was planted: in context only the shared noise latent lies outside the oracle support,
    and on the magnitude failure nothing more beyond the context (its support is right)."""
    import numpy as np

    for row in (SPURIOUS, MAGNITUDE):
        assert np.nansum(measured.get("oracle_support", row, "unconverged")) == 0
        fp = measured.get("oracle_support", row, "fp_mass")[:, 1:16]
        assert (fp > 0).all() and (fp < 0.05).all()  # NOISE over the code's whole mass
    beyond = measured.get("oracle_support", SPURIOUS, "fp_mass")[:, 16:]
    assert (beyond > 0.1).all()


def test_the_failures_cost_about_the_same(measured):
    from saeclaims.instruments import excess

    a, b = (excess(measured, r, boot=BOOT).estimate for r in (SPURIOUS, MAGNITUDE))
    assert 0.2 < a < 0.7 and 0.2 < b < 0.7 and abs(a - b) < 0.15
