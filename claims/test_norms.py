"""Claims about activation norms across layers (the 2nd comment of the thread under Anders & Bloom,
https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o).

Instrument: the clean activation at each resid_pre hook, positions >= 1 (BOS excluded), from the same
evaluation tokens as every other claim; per-sequence means, cluster bootstrap over sequences.
"""

import pytest

from saeclaims.instruments import Quantity, mean_of, n_tokens, ratio

pytestmark = pytest.mark.gpu
LAYER0 = "blocks.0.hook_resid_pre"


@pytest.mark.claim("layer0-norm-order-of-magnitude-smaller", scope="later_resid_pre")
def test_layer0_norm_order_of_magnitude_smaller(subject, hook, workbench, confidence, claim_check,
                                                not_applicable):
    """'The layer 0 model activations are an order of magnitude smaller than any later-layer
    activations.' Statistic: mean ||resid_pre L|| / mean ||resid_pre 0||; holds when >= 10."""
    if hook == "n/a" or LAYER0 not in subject.saes:
        not_applicable("layer0-norm-order-of-magnitude-smaller", subject.name, hook,
                       "needs SAEs at blocks.0.hook_resid_pre and a later resid_pre")
    m = workbench.measurements([LAYER0, hook])
    iv = ratio(m, Quantity("sae", hook, "x_norm", 1, None), Quantity("sae", LAYER0, "x_norm", 1, None),
               confidence, workbench.seed, workbench.n_resamples)
    claim_check("layer0-norm-order-of-magnitude-smaller", subject.name, hook, iv, m.n_seqs,
                n_tokens(m, 1, None))


@pytest.mark.claim("wpos-small-share-later", scope="later_resid_pre")
def test_wpos_small_share_later(subject, hook, workbench, confidence, claim_check, not_applicable):
    """'The positional embedding itself is only making up a really small part of the signal going
    into the SAE for any layer > 0.' Statistic: mean of ||W_pos[p]||^2 / ||x||^2; holds when < 0.1."""
    if hook == "n/a":
        not_applicable("wpos-small-share-later", subject.name, hook, "no resid_pre SAE after layer 0")
    if not subject.has_learned_positions:
        not_applicable("wpos-small-share-later", subject.name, hook, "no learned absolute W_pos")
    m = workbench.measurements([hook])
    iv = mean_of(m, Quantity("sae", hook, "wpos_share", 1, None), confidence, workbench.seed,
                 workbench.n_resamples)
    claim_check("wpos-small-share-later", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None))
