"""The marks of the subject facts: every branch of `FactKind.meets`, pinned at its edges."""

import math

import pytest

from saeclaims.subject_facts import CONTROL_GAP, HELIX, KINDS, L0, SubjectFact, control_matches


def test_marks_are_gpt2s_words():
    assert (HELIX.low, HELIX.high) == (0.9, None) and HELIX.mark() == ">= 0.9"
    assert (L0.low, L0.high) == (10.0, 100.0) and L0.mark() == "10 to 100"
    assert (CONTROL_GAP.low, CONTROL_GAP.high) == (None, 0.01) and CONTROL_GAP.mark() == "<= 0.01"
    assert KINDS["long_context_gain"].low == 0.05 and KINDS["ce_loss_score"].low == 0.95
    assert KINDS["explained_variance"].low == 0.9


@pytest.mark.parametrize("kind,est,low,high,want", [
    (HELIX, 0.9, None, None, True),            # a deterministic value on the edge is in
    (HELIX, 0.8999, None, None, False),
    (HELIX, math.nan, None, None, None),       # undefined
    (HELIX, 0.95, 0.9, 0.99, True),            # whole interval in, edge included
    (HELIX, 0.95, 0.89, 0.99, None),           # straddles the mark
    (HELIX, 0.8, 0.7, 0.8999, False),          # wholly below
    (HELIX, 0.95, math.nan, 0.99, None),       # undefined interval
    (L0, 50, 10, 100, True),
    (L0, 120, 101, 130, False),                # wholly above a two-sided mark
    (L0, 5, 4, 9.9, False),                    # wholly below it
    (L0, 99, 90, 110, None),
    (CONTROL_GAP, 0.005, 0.0, 0.01, True),
    (CONTROL_GAP, 0.02, 0.0101, 0.03, False),
    (CONTROL_GAP, 0.009, 0.001, 0.02, None),
])
def test_meets(kind, est, low, high, want):
    assert kind.meets(est, low, high) is want


def test_control_matches_finds_the_rows_gap():
    facts = [SubjectFact("s", "control_ce_gap", "h", 0.001, 0.0, 0.002, True),
             SubjectFact("s", "l0", "h", 20, 19, 21, True)]
    assert control_matches(facts, "s", "h") is facts[0]
    assert control_matches(facts, "s", "other") is None and control_matches(facts, "t", "h") is None
