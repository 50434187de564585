"""The organism's SAE measurements (organism/saes.py): the card's CE-loss score is the claim's."""

import numpy as np
import pytest

from saeclaims.instruments import ce_score
from saeclaims.organism.saes import ce_loss_score
from saeclaims.splice import measure
from saeclaims.stats import Bootstrap
from tests.conftest import tiny_sae, tiny_subject

HOOK = "blocks.1.hook_resid_pre"


def test_an_exact_sae_recovers_all_the_loss():
    subj = tiny_subject(n_seqs=3, seq_len=16, ctx=8, identity=True)
    score = ce_loss_score(subj.model, subj.saes[HOOK], HOOK, subj.tokens.numpy(), 1, 8)
    assert score == pytest.approx(1.0, abs=1e-6)


def test_the_card_score_equals_the_claims_estimate():
    subj = tiny_subject(n_seqs=4, seq_len=16, ctx=8, seed=2)
    sae = subj.saes[HOOK] = tiny_sae(16, 32, HOOK, 8, seed=5)
    got = ce_loss_score(subj.model, sae, HOOK, subj.tokens.numpy(), 1, 8)
    m = measure(subj, [HOOK], ("zero", "sae"), progress=False)
    assert got == pytest.approx(ce_score(m, HOOK, Bootstrap(0.9, 0, 200)).estimate, rel=1e-5)
    assert np.isfinite(got) and got < 1
