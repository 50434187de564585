"""Claims about the positional embedding and the layer-0 SAE.

Sources: the comment thread of Anders & Bloom (2024), https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o,
and Chughtai & Lau, "Understanding Positional Features in Layer 0 SAEs" (2024),
https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF.

Instruments: the splice variants `token_then_pos` (SAE(x - W_pos[p]) + W_pos[p]) and `shift_pos`
(the SAE sees an in-context position with the same phase, and the position is swapped back), their
recovery of the excess loss beyond the context, and layer-0 analyses of W_E[t] + W_pos[p].
Thresholds come from `saeclaims.catalog` ("most" = more than half).
"""

from pathlib import Path

import numpy as np
import pytest

from saeclaims.applicability import needs_beyond_context, needs_hook, needs_positions
from saeclaims.instruments import Quantity, inside, n_tokens, ratio, recovery, share_of_tokens
from saeclaims.positional import decoded_positions, feature_split, frequent_tokens, top_k_variance_share
from saeclaims.stats import exact, proportion_interval

pytestmark = pytest.mark.gpu

GPT2_W_POS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "gpt2-small" / "W_pos.npy"
GPT2_TRAINING_CONTEXT = 128  # gpt2-small-res-jb


@pytest.mark.claim("adding-wpos-recovers-layer0", scope="all")
def test_adding_wpos_recovers(subject, hook, workbench, confidence, claim_check, not_applicable):
    """1st comment: the long-context failure is the SAE not representing W_pos; add it back by hand.
    Statistic: recovery of token_then_pos, (dCE_sae(O) - dCE_ttp(O)) / excess; holds when > 0.5."""
    needs_positions(subject, hook, "adding-wpos-recovers-layer0", not_applicable)
    needs_beyond_context(subject, hook, "adding-wpos-recovers-layer0", not_applicable)
    m = workbench.measurements([hook])
    iv = recovery(m, hook, "token_then_pos", confidence, workbench.seed, workbench.n_resamples)
    claim_check("adding-wpos-recovers-layer0", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None))


@pytest.mark.claim("layer0-error-is-positional", scope="resid_pre0")
def test_layer0_error_is_positional(subject, hook, workbench, confidence, claim_check, not_applicable):
    """2nd comment: positional embedding is most of what the layer 0 SAE gets wrong.
    Statistic: recovery of shift_pos at resid_pre 0 (in-distribution positions); holds when > 0.5."""
    needs_positions(subject, hook, "layer0-error-is-positional", not_applicable)
    needs_beyond_context(subject, hook, "layer0-error-is-positional", not_applicable)
    m = workbench.measurements([hook])
    iv = recovery(m, hook, "shift_pos", confidence, workbench.seed, workbench.n_resamples)
    claim_check("layer0-error-is-positional", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None))


@pytest.mark.claim("positional-error-not-most-later", scope="later_resid_pre")
def test_positional_error_not_most_later(subject, hook, workbench, confidence, claim_check, not_applicable):
    """2nd and 3rd comments: for layers > 0 positional error is not most of the problem.
    Statistic: recovery of shift_pos at resid_pre L >= 1; holds when < 0.5."""
    needs_positions(subject, hook, "positional-error-not-most-later", not_applicable)
    needs_beyond_context(subject, hook, "positional-error-not-most-later", not_applicable)
    m = workbench.measurements([hook])
    iv = recovery(m, hook, "shift_pos", confidence, workbench.seed, workbench.n_resamples)
    claim_check("positional-error-not-most-later", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None))


@pytest.mark.claim("token-only-goes-poorly", scope="resid_pre0")
def test_token_only_goes_poorly(subject, hook, workbench, confidence, claim_check, not_applicable):
    """2nd comment: feeding the layer-0 SAE the token embedding alone and adding position after
    would go poorly. Statistic: dCE_token_then_pos(I) / dCE_sae(I); holds when >= 2."""
    needs_hook(subject, hook, "token-only-goes-poorly", not_applicable)
    needs_positions(subject, hook, "token-only-goes-poorly", not_applicable)
    m = workbench.measurements([hook])
    i = inside(m, hook)
    iv = ratio(m, Quantity("token_then_pos", hook, "dce", *i), Quantity("sae", hook, "dce", *i), confidence,
               workbench.seed, workbench.n_resamples)
    claim_check("token-only-goes-poorly", subject.name, hook, iv, m.n_seqs, n_tokens(m, *i))


@pytest.mark.claim("sae-thinks-earlier", scope="resid_pre0")
def test_sae_thinks_earlier(subject, hook, workbench, confidence, claim_check, not_applicable):
    """Follow-up: at late positions the layer-0 SAE 'thinks' it is earlier. Statistic: share of p in
    O whose position decoded from the reconstruction (argmax_q cos(x_hat - W_E[t], W_pos[q])) is
    < ctx; holds when >= 0.5."""
    needs_positions(subject, hook, "sae-thinks-earlier", not_applicable)
    needs_beyond_context(subject, hook, "sae-thinks-earlier", not_applicable)
    ctx = subject.context_sizes[hook]
    decoded = decoded_positions(subject.model, subject.saes[hook], subject.tokens)[:, ctx:]
    workbench.series["decoded_positions"] = {
        "ctx": ctx, "mean_decoded_by_position": decoded.mean(0).tolist(), "first_position": ctx}
    iv = share_of_tokens(decoded < ctx, confidence, workbench.seed, workbench.n_resamples)
    claim_check("sae-thinks-earlier", subject.name, hook, iv, decoded.shape[0], decoded.size)


@pytest.mark.claim("features-disjoint-layer0", scope="resid_pre0")
def test_features_disjoint_layer0(subject, hook, workbench, confidence, claim_check, not_applicable):
    """Follow-up, 2nd comment: positional and semantic features of the layer-0 SAE are almost
    entirely disjoint. Statistic: share of live features whose variance over a token x position grid
    (W_E[t] + W_pos[p], the 512 most frequent evaluation tokens x positions [1, ctx)) is at least
    90% explained by token or by position alone; Clopper-Pearson interval over features; holds >= 0.9."""
    needs_hook(subject, hook, "features-disjoint-layer0", not_applicable)
    needs_positions(subject, hook, "features-disjoint-layer0", not_applicable)
    ctx = subject.context_sizes[hook]
    bos = subject.tokens[0, 0].item()
    toks = frequent_tokens(subject.tokens.cpu().numpy(), 512, exclude=(bos,))
    split = feature_split(subject.model, subject.saes[hook], toks, np.arange(1, ctx))
    one = split.one_factor(0.9)
    workbench.series["feature_split"] = {"token_share": split.token_share.tolist(),
                                         "position_share": split.position_share.tolist()}
    iv = proportion_interval(int(one.sum()), len(one), confidence)
    claim_check("features-disjoint-layer0", subject.name, hook, iv, 0, split.n_tokens * split.n_positions,
                n_live_features=len(one), n_features=split.n_features)


@pytest.mark.claim("wpos-helix", scope="subject")
def test_wpos_helix(subject, confidence, claim_check, not_applicable, workbench):
    """Follow-up: the top 3 principal components of W_pos rows 1..ctx-1 explain 95% of their
    variance. Exact SVD, no sampling; holds when >= 0.945."""
    needs_positions(subject, "model", "wpos-helix", not_applicable)
    ctx = min(subject.context_sizes.values())
    w_pos = subject.model.W_pos.detach().cpu().numpy()
    workbench.series["w_pos"] = {"rows": w_pos[1:ctx].tolist(), "ctx": ctx}
    share = top_k_variance_share(w_pos[1:ctx], 3)
    claim_check("wpos-helix", subject.name, "model", exact(share, confidence), 0, 0, rows=f"1..{ctx - 1}")


@pytest.mark.claim("wpos-helix", scope="subject")
def test_wpos_helix_gpt2_reference(confidence, claim_check, pytestconfig):
    """The same statistic on GPT-2 small's released W_pos (../shared reference data, when present),
    centred per row as TransformerLens's center_writing_weights does."""
    if not GPT2_W_POS.exists():
        pytest.skip(f"GPT-2 reference W_pos not found at {GPT2_W_POS}")
    from saeclaims.pytest_plugin import STORE_KEY

    w_pos = np.load(GPT2_W_POS).astype(np.float64)
    w_pos = w_pos - w_pos.mean(axis=1, keepdims=True)
    rows = w_pos[1:GPT2_TRAINING_CONTEXT]
    pytestconfig.stash[STORE_KEY].series.setdefault("gpt2-small (reference W_pos)", {})["w_pos"] = {
        "rows": rows.astype(np.float32).tolist(), "ctx": GPT2_TRAINING_CONTEXT}
    share = top_k_variance_share(rows, 3)
    claim_check("wpos-helix", "gpt2-small (reference W_pos)", "model", exact(share, confidence), 0, 0,
                rows=f"1..{GPT2_TRAINING_CONTEXT - 1}")
