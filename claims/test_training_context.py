"""The follow-up's speculation (Chughtai & Lau, https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF):
training the SAE on longer contexts would fix the beyond-context degradation.

Instrument: the control family of SAEs trained at the model's full context, spliced by the same
kernel in the same pass (variant `full_context_sae`); I and O are the short family's boundaries, so the
ratio is directly comparable with `beyond-context-degrades`.
"""

import pytest

from saeclaims.instruments import beyond_over_inside

pytestmark = pytest.mark.gpu


@pytest.mark.claim("full-context-training-fixes")
def test_full_context_training_fixes(claim):
    """mean dCE(O) / mean dCE(I) of the full-context SAE."""
    claim.require_full_context_sae()
    claim.require_beyond_context()
    iv = beyond_over_inside(claim.measurements(), claim.hook, "full_context_sae", "dce", claim.boot)
    claim.check(iv, full_context_size=claim.subject.full_context_saes[claim.hook].cfg.metadata.context_size)
