"""The token-only claims' and the feature split's instruments on planted controls, end to end.

Each claim test of claims/test_positional.py is run as it is (its guards, its statistic, its threshold) on real
sae_lens SAEs with hand-set weights at blocks.0.hook_resid_pre of the planted model (tests/planted_token_only.py),
measured by `splice.measure`, at the confidence of a run (0.999). `separable` reads token and position apart,
`mixed` reads the token only jointly with one position, `off_distribution` reads the token only with the mean
in-context position present; all three are exact in context up to the shared token shrink.

- token-only-goes-poorly (token_then_pos): holds on `mixed` and `off_distribution`, refuted on `separable`.
- token-only-goes-poorly-mixing (token_mean_pos): holds on `mixed`; refuted on `separable` and on
  `off_distribution`, whose token-only failure is the missing mean position, not mixing.
- features-disjoint-layer0 (feature_split): holds on `separable` and `off_distribution` (pure token and pure
  position features on the grid), refuted on `mixed` (token x position conjunctions).
"""

from __future__ import annotations

import pytest
import torch

from claims import test_positional as positional_claims
from saeclaims.instruments import Quantity, inside, mean_of
from saeclaims.splice import measure

from .planted_subjects import CTX, D_TOK
from .planted_token_only import KINDS, SHRINK, mean_position, token_only_subject
from .test_planted_instruments import BOOT, claim_id_of, judge

TOKEN_ONLY = positional_claims.test_token_only_goes_poorly
MIXING = positional_claims.test_token_only_goes_poorly_mixing
DISJOINT = positional_claims.test_features_disjoint_layer0


@pytest.fixture(scope="module")
def planted():
    return token_only_subject()


@pytest.fixture(scope="module")
def measured(planted):
    return measure(planted.subject, variants=("sae", "token_then_pos", "token_mean_pos"), progress=False)


def _grid(model) -> torch.Tensor:
    """W_E[t] + W_pos[p] for every token but BOS and every in-context position [1, CTX): resid_pre 0 in context."""
    w_e, w_pos = model.W_E.detach(), model.W_pos.detach()
    return (w_e[1:, None] + w_pos[None, 1:CTX]).reshape(-1, w_e.shape[1])


@torch.no_grad()
def test_planted_saes_are_exact_in_context(planted, measured):
    """Every planted SAE computes shrink_map (the shared token shrink) on the in-context grid, so they share one
    in-context added loss, small beside losing the token part but wholly above 0 (the claims divide by it)."""
    s = planted.subject
    x = _grid(s.model)
    for kind in KINDS:
        sae = s.saes[kind]
        torch.testing.assert_close(sae.decode(sae.encode(x)), x @ planted.in_context_map.T, atol=1e-5, rtol=0)
    dce = {k: mean_of(measured, Quantity("sae", k, "dce", *inside(measured, k)), BOOT) for k in KINDS}
    for kind in KINDS:
        assert dce[kind].low > 0, (kind, dce[kind])
        assert dce[kind].estimate == pytest.approx(dce["separable"].estimate, rel=1e-3)
    lost = mean_of(measured, Quantity("token_then_pos", "mixed", "dce", *inside(measured, "mixed")), BOOT)
    assert dce["separable"].high < 0.1 * lost.estimate, (dce["separable"], lost)  # the token part dropped


@torch.no_grad()
def test_planted_saes_do_what_they_say_off_the_grid(planted):
    """The constructions themselves: the share of the (shrunk) token part each SAE keeps when fed the token
    embedding alone (token_then_pos's input) and with the mean in-context position (token_mean_pos's input)."""
    s = planted.subject
    tok = s.model.W_E.detach()[1:]
    w_bar = mean_position(s.model)
    want = {"separable": (1.0, 1.0), "mixed": (0.0, 0.0), "off_distribution": (0.0, 1.0)}

    def kept(out):
        return float((out[:, :D_TOK] * tok[:, :D_TOK]).sum() / ((1 - SHRINK) * tok[:, :D_TOK].pow(2).sum()))

    for kind, (alone, with_mean) in want.items():
        sae = s.saes[kind]
        assert kept(sae.decode(sae.encode(tok))) == pytest.approx(alone, abs=1e-5), kind
        assert kept(sae.decode(sae.encode(tok + w_bar)) - w_bar) == pytest.approx(with_mean, abs=1e-5), kind


# (claim test, SAE id, the verdict the words have there by construction)
CONTROLS = [
    (TOKEN_ONLY, "mixed", "holds"),
    (TOKEN_ONLY, "off_distribution", "holds"),
    (TOKEN_ONLY, "separable", "refuted"),
    (MIXING, "mixed", "holds"),
    (MIXING, "separable", "refuted"),
    (MIXING, "off_distribution", "refuted"),
    (DISJOINT, "separable", "holds"),
    (DISJOINT, "off_distribution", "holds"),
    (DISJOINT, "mixed", "refuted"),
]


@pytest.mark.parametrize(("test", "sae_id", "expected"), CONTROLS,
                         ids=[f"{claim_id_of(t)}-{k}" for t, k, _ in CONTROLS])
def test_instrument_gives_the_planted_verdict(test, sae_id, expected, planted, measured):
    got, iv = judge(test, planted, measured, sae_id)
    print(f"\n{claim_id_of(test)} | {sae_id} | {got} {iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]")
    assert got == expected, iv

