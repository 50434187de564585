"""Claims against the control family: SAEs trained at the model's full context (Chughtai & Lau,
https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF, speculate that this fixes the degradation).

Instrument: the control SAEs are spliced by the same kernel in the same pass (variant `full_context_sae`);
I and O are the short family's boundaries. Loss falls with position for every SAE, so the control's own
beyond/inside ratio is the position baseline the short SAE is judged against.
"""

import pytest

from saeclaims.instruments import control_ratio, excess_removed_share

pytestmark = pytest.mark.gpu


@pytest.mark.claim("beyond-context-degrades-vs-control", reads=("sae", "full_context_sae", "zero"))
def test_beyond_context_degrades_vs_control(claim):
    """(dCE_sae(O) / dCE_sae(I)) / (dCE_ctl(O) / dCE_ctl(I))."""
    claim.require_full_context_sae()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_matched_control(m)
    claim.check(control_ratio(m, claim.sae_id, claim.boot))


@pytest.mark.claim("full-context-training-fixes", reads=("sae", "full_context_sae", "zero"))
def test_full_context_training_fixes(claim):
    """Share of the short SAE's excess dCE(O) - dCE(I) that the full-context SAE does not have, at the same
    positions (so the loss's own trend with position cancels). Not the share of the control-relative excess: under
    the like-control gate (the same in-context loss) that share is 1 by construction, whatever the control does
    beyond the context (tests/test_planted_statistics.py plants both)."""
    claim.require_full_context_sae()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_matched_control(m)
    claim.require_something_to_explain(m)
    claim.check(excess_removed_share(m, claim.sae_id, "full_context_sae", claim.boot),
                full_context_size=claim.subject.full_context_saes[claim.sae_id].cfg.metadata.context_size)
