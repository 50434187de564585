"""Claims about activation norms across layers (the 2nd comment of the thread under Anders & Bloom,
https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o).

Instrument: the clean activation at each resid_pre hook, positions >= 1 (BOS excluded), from the same
evaluation tokens as every other claim; per-sequence means, cluster bootstrap over sequences.
"""

import pytest

from saeclaims.instruments import Quantity, mean_of, ratio

pytestmark = pytest.mark.gpu
LAYER0 = "blocks.0.hook_resid_pre"


@pytest.mark.claim("layer0-norm-order-of-magnitude-smaller", reads=())
def test_layer0_norm_order_of_magnitude_smaller(claim):
    """mean ||resid_pre L|| / mean ||resid_pre 0|| over positions >= 1."""
    at0 = claim.subject.ids_at(LAYER0)  # the clean activation's norm is the same for every SAE there
    if not at0:
        claim.not_applicable(f"needs an SAE at {LAYER0} to compare with")
    m = claim.measurements([at0[0], claim.sae_id])
    claim.check(ratio(m, Quantity("sae", claim.sae_id, "x_norm", 1, None), Quantity("sae", at0[0], "x_norm", 1, None),
                      claim.boot))


@pytest.mark.claim("wpos-small-share-later", reads=())
def test_wpos_small_share_later(claim):
    """mean over tokens of ||W_pos[p]||^2 / ||x||^2."""
    claim.require_learned_positions()
    claim.check(mean_of(claim.measurements(), Quantity("sae", claim.sae_id, "wpos_share", 1, None), claim.boot))
