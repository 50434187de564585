"""Claims about performance within and beyond the SAE's training context.

Source: Anders & Bloom, "Examining Language Model Performance with Reconstructed Activations using
Sparse Autoencoders" (LessWrong, 2024), https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o, and its
comment thread; Gurnee, "SAE reconstruction errors are (empirically) pathological" (2024).

Instrument: splice a variant of the activation at one hook (BOS never patched) and compare next-token
cross-entropy with the clean model, token by token; I = positions [1, ctx), O = [ctx, T).
Every threshold is taken from the registered claim (`saeclaims.thread`), which says why the words imply it.
"""

import pytest

from saeclaims.instruments import Quantity, beyond_over_inside, ce_score, layer_trend, outside, ratio
from saeclaims.subjects import hook_order

pytestmark = pytest.mark.gpu


@pytest.mark.claim("beyond-context-degrades")
def test_beyond_context_degrades(claim):
    """mean dCE_sae over O divided by mean dCE_sae over I."""
    claim.require_beyond_context()
    claim.check(beyond_over_inside(claim.measurements(), claim.hook, "sae", "dce", claim.boot))


@pytest.mark.claim("in-context-performs-well")
def test_in_context_performs_well(claim):
    """sae_lens's CE-loss score (against zero ablation) over I."""
    claim.check(ce_score(claim.measurements(), claim.hook, claim.boot))


def _resid_pre_trend(claim, what: str):
    hooks = [h for h in claim.subject.hooks if h.endswith("hook_resid_pre")]
    if len(hooks) < 3:
        claim.not_applicable(f"a rank trend needs at least 3 resid_pre hooks, the subject has {len(hooks)}")
    if what == "excess":
        claim.require_beyond_context(hooks[0])
    m = claim.measurements(hooks)
    return layer_trend(m, hooks, [hook_order(h)[0] for h in hooks], what, claim.boot)


@pytest.mark.claim("later-layers-worse-in-context")
def test_later_layers_worse_in_context(claim):
    """Spearman rho between layer and mean dCE_sae(I) over resid_pre hooks."""
    claim.check(_resid_pre_trend(claim, "inside"))


@pytest.mark.claim("beyond-context-worst-early")
def test_beyond_context_worst_early(claim):
    """Spearman rho between layer and the excess dCE_sae(O) - dCE_sae(I) over resid_pre hooks."""
    claim.check(_resid_pre_trend(claim, "excess"))


@pytest.mark.claim("encoder-off-distribution")
def test_encoder_off_distribution(claim):
    """mean L0 over O divided by mean L0 over I."""
    claim.require_beyond_context()
    claim.check(beyond_over_inside(claim.measurements(), claim.hook, "sae", "l0", claim.boot))


@pytest.mark.claim("errors-worse-than-random")
def test_errors_worse_than_random(claim):
    """mean dCE_sae(O) / mean dCE_random_error(O), the error of the same norm in a random direction."""
    claim.require_beyond_context()
    m = claim.measurements()
    o = outside(m, claim.hook)
    claim.check(ratio(m, Quantity("sae", claim.hook, "dce", *o), Quantity("random_error", claim.hook, "dce", *o),
                      claim.boot))
