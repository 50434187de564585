"""Facts about a subject that the claims presuppose, measured in the run beside GPT-2's own values.

The claims were made about gpt2-small and its `gpt2-small-res-jb` SAEs. A verdict on another subject
transfers only as far as that subject shares the properties the claims depend on: a helix-shaped W_pos, a
model that uses context beyond the SAEs', release-quality SAEs, and a full-context control of the same
quality. Each is measured here on the run's own evaluation tokens (never read from a card) and shown at the
top of REPORT.md, apart from the verdicts. A fact short of its mark is not a verdict on any claim: it says
how far the verdicts on this subject speak for GPT-2.

The marks are GPT-2's (issue 22): W_pos rows 1..127 have a top-3 principal-component share of 0.957;
gpt2-small uses its whole context (loss keeps falling with position); the release SAEs explain ~0.9+ of the
variance with CE-loss scores well above 0.9 at L0 10-100; a control is "like" the release SAE when their
in-context CE-loss scores differ by at most 0.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FactKind:
    """One kind of fact: what it measures and the range GPT-2 small + gpt2-small-res-jb lies in."""

    name: str
    description: str
    low: float | None  # the mark: the estimate must be >= low (and <= high) to be GPT-2-like
    high: float | None
    gpt2: str  # what GPT-2 small + gpt2-small-res-jb shows, in words

    def mark(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g} to {self.high:g}"
        return f">= {self.low:g}" if self.low is not None else f"<= {self.high:g}"

    def inside(self, x: float) -> bool:
        return (self.low is None or x >= self.low) and (self.high is None or x <= self.high)

    def meets(self, estimate: float, ci_low: float | None = None, ci_high: float | None = None) -> bool | None:
        """True when the estimate (its whole interval, when it has one) lies in the mark, False when wholly
        outside it, None when the interval straddles an edge or the estimate is undefined: as the verdicts do."""
        if not math.isfinite(estimate):
            return None
        if ci_low is None or ci_high is None:
            return self.inside(estimate)
        if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
            return None
        ends = (self.inside(ci_low), self.inside(ci_high))
        if all(ends) and self.inside(estimate):
            return True
        below = self.low is not None and ci_high < self.low
        above = self.high is not None and ci_low > self.high
        return False if below or above else None


HELIX = FactKind("wpos_helix_share", "W_pos: share of the variance of rows 1..ctx-1 in their top 3 principal "
                 "components", 0.9, None, "0.957 (a helix)")
LONG_CONTEXT = FactKind("long_context_gain", "the model uses context beyond the SAEs': clean loss on "
                        "[ctx/2, ctx) minus on [T/2, T), nats", 0.05, None, "loss keeps falling with position")
EXPLAINED_VARIANCE = FactKind("explained_variance", "SAE explained variance in context, positions [1, ctx)",
                              0.9, None, "~0.9 and above")
CE_SCORE = FactKind("ce_loss_score", "SAE CE-loss score in context, positions [1, ctx)", 0.95, None,
                    "well above 0.9")
L0 = FactKind("l0", "SAE L0 (active latents per token) in context", 10.0, 100.0, "10 to 100")
CONTROL_GAP = FactKind("control_ce_gap", "|CE-loss score of the SAE - of its full-context control| on "
                       "positions [1, ctx): the control is like the SAE", None, 0.01, "(the follow-up's control)")
KINDS = {k.name: k for k in (HELIX, LONG_CONTEXT, EXPLAINED_VARIANCE, CE_SCORE, L0, CONTROL_GAP)}


@dataclass
class SubjectFact:
    """One fact measured on one subject (at one SAE id, or the model's when sae_id is empty)."""

    subject: str
    fact: str  # a FactKind name
    sae_id: str
    estimate: float
    ci_low: float | None  # None for a deterministic fact (a property of the weights)
    ci_high: float | None
    meets: bool | None  # in GPT-2's mark (the whole interval); None: the interval straddles it, or undefined

    @property
    def kind(self) -> FactKind:
        return KINDS[self.fact]


def control_matches(facts: list[SubjectFact], subject: str, sae_id: str) -> SubjectFact | None:
    """The control-match fact of one SAE, if it was measured."""
    for f in facts:
        if f.subject == subject and f.sae_id == sae_id and f.fact == CONTROL_GAP.name:
            return f
    return None
