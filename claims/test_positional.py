"""Claims about the positional embedding and the layer-0 SAE.

Sources: the comment thread of Anders & Bloom (2024), https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o,
and Chughtai & Lau, "Understanding Positional Features in Layer 0 SAEs" (2024),
https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF.

Instruments: the splice variants `token_then_pos` (SAE(x - W_pos[p]) + W_pos[p]), `shift_pos` (the SAE sees an
in-context position with the same phase, and the position is swapped back), `pos_repair_out` (the decoded
position swapped for the true one) and `pos_part_repair` (the positional part of the SAE's error repaired),
their recovery of the excess loss beyond the context, and layer-0 analyses of W_E[t] + W_pos[p]. Which of them
tell a positional failure from a failure the position triggers: tests/test_planted_instruments.py.
Thresholds come from the registered claims (`saeclaims.thread`; "most" = more than half).
"""

from pathlib import Path

import numpy as np
import pytest

from saeclaims.instruments import (
    Quantity,
    control_excess,
    control_recovery,
    excess,
    excess_floor,
    inside,
    mean_of,
    metric_recovery,
    ratio,
    recovery,
    share_of_tokens,
)
from saeclaims.positional import decoded_positions, feature_split, frequent_tokens, top_k_variance_share
from saeclaims.series import DecodedPositions, FeatureShares, WposRows
from saeclaims.stats import exact, proportion_interval
from saeclaims.thread import GPT2_REFERENCE_W_POS

pytestmark = pytest.mark.gpu

GPT2_W_POS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "gpt2-small" / "W_pos.npy"
GPT2_TRAINING_CONTEXT = 128  # gpt2-small-res-jb


def _recovery(claim, variant: str):
    """A recovery is judged only where the excess it divides by is significantly positive."""
    claim.require_learned_positions()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_something_to_explain(m)
    return recovery(m, claim.sae_id, variant, claim.boot)


@pytest.mark.claim("adding-wpos-recovers", reads=("sae", "pos_repair_out"))
def test_adding_wpos_recovers(claim):
    """Recovery of pos_repair_out: SAE(x) - W_pos[q] + W_pos[p], q the position the reconstruction carries."""
    claim.check(_recovery(claim, "pos_repair_out"))


@pytest.mark.claim("layer0-error-is-positional", reads=("sae", "pos_part_repair"))
def test_layer0_error_is_positional(claim):
    """Recovery of pos_part_repair (the positional part of the SAE's error repaired) at resid_pre 0. Not
    shift_pos: it removes any failure the out-of-context position triggers, positional or not (planted controls,
    tests/test_planted_instruments.py)."""
    claim.check(_recovery(claim, "pos_part_repair"))


@pytest.mark.claim("positional-error-not-most-later", reads=("sae", "pos_part_repair"))
def test_positional_error_not_most_later(claim):
    """Recovery of pos_part_repair at resid_pre L >= 1."""
    claim.check(_recovery(claim, "pos_part_repair"))


@pytest.mark.claim("position-not-most-of-it-input", reads=("sae", "shift_pos"))
def test_position_not_most_of_it_input(claim):
    """Recovery of shift_pos at every hook (input-side repair)."""
    claim.check(_recovery(claim, "shift_pos"))


@pytest.mark.claim("position-not-most-of-it-output", reads=("sae", "pos_part_repair"))
def test_position_not_most_of_it_output(claim):
    """Recovery of pos_part_repair at every hook (output-side repair of the error's positional part). Not
    pos_repair_out: it repairs only a clean swap of one decodable position (planted controls)."""
    claim.check(_recovery(claim, "pos_part_repair"))


POSITIONAL_VARIANCE_FLOOR = 0.01  # the claim's words: positional features that hold under 1% of the variance are none


@pytest.mark.claim("position-not-most-of-it-computed", reads=("sae", "pos_mean_part_repair"))
def test_position_not_most_of_it_computed(claim):
    """Recovery of pos_mean_part_repair at every hook: position as the model computes it (the position-conditional
    mean on held-out windows), so rotary models and computed positional features are judged too."""
    claim.require_beyond_context()
    m = claim.measurements()
    sub = m.position_subspaces.get(claim.sae_id)
    if sub is None:
        claim.not_applicable("the subject ships no held-out windows to estimate the activation's mean by position "
                             "from (not the evaluation set)")
    if sub.rank == 0 or sub.variance_share < POSITIONAL_VARIANCE_FLOOR:
        claim.not_applicable(f"no positional features worth the name at this hook: the mean by position explains "
                             f"{sub.variance_share:.3%} of the activation's variance (floor "
                             f"{POSITIONAL_VARIANCE_FLOOR:.0%}), in {sub.rank} reproducible directions",
                             positional_variance_share=f"{sub.variance_share:.4g}", directions=sub.rank)
    claim.require_something_to_explain(m)
    claim.check(recovery(m, claim.sae_id, "pos_mean_part_repair", claim.boot),
                positional_variance_share=f"{sub.variance_share:.4g}", directions=sub.rank)


@pytest.mark.claim("position-not-most-of-it-vs-control", reads=("sae", "shift_pos", "full_context_sae", "zero"))
def test_position_not_most_of_it_vs_control(claim):
    """Recovery of shift_pos over the excess beyond the full-context control's position trend."""
    claim.require_learned_positions()
    claim.require_full_context_sae()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_matched_control(m)
    claim.require_something_to_explain(m)
    claim.require_substantial(control_excess(m, claim.sae_id, claim.boot), "control-relative excess",
                              excess_floor(m, claim.sae_id))
    claim.check(control_recovery(m, claim.sae_id, "shift_pos", claim.boot))


@pytest.mark.claim("positional-not-large-share-of-mse", reads=("sae", "pos_part_repair"))
def test_positional_not_large_share_of_mse(claim):
    """Share of the beyond-context excess nMSE that pos_part_repair removes (the share of the excess squared
    error lying in W_pos's subspace), at resid_pre L >= 1."""
    claim.require_learned_positions()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_substantial(excess(m, claim.sae_id, metric="nmse", boot=claim.boot),
                              "excess nMSE_sae(O) - nMSE_sae(I)", excess_floor(m, claim.sae_id, "nmse"))
    claim.check(metric_recovery(m, claim.sae_id, "pos_part_repair", "nmse", claim.boot))


@pytest.mark.claim("token-only-goes-poorly", reads=("sae", "token_then_pos"))
def test_token_only_goes_poorly(claim):
    """dCE_token_then_pos(I) / dCE_sae(I): the SAE fed the token embedding alone, position added after."""
    claim.require_learned_positions()
    m = claim.measurements()
    i = inside(m, claim.sae_id)
    claim.require_positive(mean_of(m, Quantity("sae", claim.sae_id, "dce", *i), claim.boot), "mean dCE_sae(I)")
    claim.check(ratio(m, Quantity("token_then_pos", claim.sae_id, "dce", *i), Quantity("sae", claim.sae_id, "dce", *i),
                      claim.boot))


@pytest.mark.claim("token-only-goes-poorly-mixing", reads=("sae", "token_mean_pos", "token_then_pos"))
def test_token_only_goes_poorly_mixing(claim):
    """dCE_token_mean_pos(I) / dCE_sae(I): as token-only, with the mean in-context position restored, so only
    the loss of token-position mixing remains; token_then_pos's ratio beside it in the row's extra."""
    claim.require_learned_positions()
    m = claim.measurements()
    i = inside(m, claim.sae_id)
    claim.require_positive(mean_of(m, Quantity("sae", claim.sae_id, "dce", *i), claim.boot), "mean dCE_sae(I)")
    sae_i = Quantity("sae", claim.sae_id, "dce", *i)
    token_only = ratio(m, Quantity("token_then_pos", claim.sae_id, "dce", *i), sae_i, claim.boot)
    claim.check(ratio(m, Quantity("token_mean_pos", claim.sae_id, "dce", *i), sae_i, claim.boot),
                token_only_ratio=f"{token_only.estimate:.4g} [{token_only.low:.4g}, {token_only.high:.4g}]")


@pytest.mark.claim("sae-thinks-earlier", reads=())
def test_sae_thinks_earlier(claim):
    """Share of p in O whose position decoded from the reconstruction, argmax_q cos(x_hat - W_E[t],
    W_pos[q]), is < ctx."""
    claim.require_learned_positions()
    claim.require_beyond_context()
    s, ctx = claim.subject, claim.subject.context_sizes[claim.sae_id]
    # The null: a short SAE's decoder maps any code (random ones too) to an early position, so the instrument
    # shows power only where a decoder that saw late positions, the full-context control's, decodes them late.
    claim.require_full_context_sae()
    null = decoded_positions(s.model, s.full_context_saes[claim.sae_id], s.tokens)[:, ctx:]
    null_share = share_of_tokens(null < ctx, claim.boot, s.documents)
    if not null_share.high < 0.5:
        claim.not_applicable("the full-context control's reconstruction decodes to an early position too, so "
                             "the instrument cannot see late positions on this subject",
                             control_share_decoded_early=f"{null_share.estimate:.4g} [{null_share.low:.4g}, "
                                                         f"{null_share.high:.4g}]")
    decoded = decoded_positions(s.model, s.saes[claim.sae_id], s.tokens)[:, ctx:]
    claim.add_series(DecodedPositions(s.name, claim.sae_id, ctx, ctx, decoded.mean(0).tolist()))
    claim.check(share_of_tokens(decoded < ctx, claim.boot, s.documents),
                control_share_decoded_early=null_share.estimate)


@pytest.mark.claim("features-disjoint-layer0", reads=())
def test_features_disjoint_layer0(claim):
    """Share of live features whose variance over a token x position grid (W_E[t] + W_pos[p], the 512
    most frequent evaluation tokens x positions [1, ctx)) is at least 90% explained by token or by
    position alone; Clopper-Pearson interval over features."""
    claim.require_learned_positions()
    s, ctx = claim.subject, claim.subject.context_sizes[claim.sae_id]
    toks = frequent_tokens(s.tokens.cpu().numpy(), 512, exclude=(s.tokens[0, 0].item(),))
    split = feature_split(s.model, s.saes[claim.sae_id], toks, np.arange(1, ctx))
    one = split.one_factor(0.9)
    claim.add_series(FeatureShares(s.name, claim.sae_id, split.token_share.tolist(), split.position_share.tolist()))
    iv = proportion_interval(int(one.sum()), len(one), claim.boot.confidence)
    claim.check(iv.with_sample(0, split.n_tokens * split.n_positions), n_live_features=len(one),
                n_features=split.n_features)


def _helix(claim, subject: str, rows: np.ndarray, ctx: int) -> None:
    claim.add_series(WposRows(subject, ctx, rows.astype(np.float32).tolist()))
    claim.check(exact(top_k_variance_share(rows, 3), claim.boot.confidence), rows=f"1..{ctx - 1}")


@pytest.mark.claim("wpos-helix", reads=())
def test_wpos_helix(claim):
    """Top 3 principal components of W_pos rows 1..ctx-1 (exact SVD, no sampling)."""
    claim.require_learned_positions()
    ctx = min(claim.subject.context_sizes.values())
    _helix(claim, claim.subject.name, claim.subject.model.W_pos.detach().cpu().numpy()[1:ctx], ctx)


@pytest.mark.claim("wpos-helix", reference=GPT2_REFERENCE_W_POS, reads=())
def test_wpos_helix_gpt2_reference(claim):
    """The same statistic on GPT-2 small's released W_pos (../shared reference data, when present),
    centred per row as TransformerLens's center_writing_weights does."""
    if not GPT2_W_POS.exists():
        pytest.skip(f"GPT-2 reference W_pos not found at {GPT2_W_POS}")
    w_pos = np.load(GPT2_W_POS).astype(np.float64)
    w_pos = w_pos - w_pos.mean(axis=1, keepdims=True)
    _helix(claim, GPT2_REFERENCE_W_POS, w_pos[1:GPT2_TRAINING_CONTEXT], GPT2_TRAINING_CONTEXT)
