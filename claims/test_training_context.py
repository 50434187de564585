"""The follow-up's speculation (Chughtai & Lau, https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF):
training the SAE on longer contexts would fix the beyond-context degradation.

Instrument: the control family of SAEs trained at the model's full context, spliced by the same
kernel in the same pass (variant `full_context_sae`); I and O are the short family's boundaries, so the
ratio is directly comparable with `beyond-context-degrades`.
"""

import pytest

from saeclaims.instruments import beyond_over_inside, n_tokens

pytestmark = pytest.mark.gpu


@pytest.mark.claim("full-context-training-fixes", scope="full_context")
def test_full_context_training_fixes(subject, hook, workbench, confidence, claim_check, not_applicable):
    """Statistic: mean dCE(O) / mean dCE(I) of the full-context SAE; holds when < 1.25."""
    if hook == "n/a" or hook not in subject.saes:
        not_applicable("full-context-training-fixes", subject.name, hook,
                       "the subject has no full-context SAE family (control) at a hook of the release")
    m = workbench.measurements([hook])
    iv = beyond_over_inside(m, hook, "full_context_sae", "dce", confidence, workbench.seed, workbench.n_resamples)
    claim_check("full-context-training-fixes", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None),
                full_context_size=subject.full_context_saes[hook].cfg.metadata.context_size)
