"""The claims of the discussion around Anders & Bloom (2024) and its follow-up, as registered claims.

Sources: Anders & Bloom, "Examining Language Model Performance with Reconstructed Activations using
Sparse Autoencoders" (LessWrong, 2024) and its comment thread; Chughtai & Lau, "Understanding Positional
Features in Layer 0 SAEs" (2024); Gurnee, "SAE reconstruction errors are (empirically) pathological" (2024).
`register_thread_claims()` adds them to the catalogue (this repository's `claims/conftest.py` does).
"""

from __future__ import annotations

from .catalog import Claim, register_claim

POST = "https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o"
FOLLOW_UP = "https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF"
GURNEE = "https://www.lesswrong.com/posts/rZPiuFxESMxCDHe4B"
GPT2_REFERENCE_W_POS = "gpt2-small (reference W_pos)"

THREAD_CLAIMS: tuple[Claim, ...] = (
    Claim("beyond-context-degrades", "context", "post", POST,
          "The SAEs perform well up to their training context and degrade beyond it.",
          "mean dCE_sae(O) / mean dCE_sae(I)", ">", 1.0,
          "'degrade' means more loss is added beyond the context than within it: a ratio above 1.",
          "all"),
    Claim("in-context-performs-well", "context", "post", POST,
          "Within the training context the SAEs perform well.",
          "CE-loss score over I (sae_lens: recovery against zero ablation)", ">=", 0.9,
          "'performs well' is read as the usual bar for a usable SAE: at least 90% of the loss recovered.",
          "all"),
    Claim("later-layers-worse-in-context", "context", "post", POST,
          "Within context, later layers are worse.",
          "Spearman rho(layer, mean dCE_sae(I)) over resid_pre hooks", ">", 0.0,
          "'later is worse' is a monotone increasing trend: a positive rank correlation.",
          "across_resid_pre"),
    Claim("beyond-context-worst-early", "context", "post", POST,
          "Beyond context, performance is poorest in early layers and best in later ones.",
          "Spearman rho(layer, excess) over resid_pre hooks", "<", 0.0,
          "'poorest early, best late' is a decreasing trend of the excess loss: a negative rank correlation.",
          "across_resid_pre"),
    Claim("adding-wpos-recovers-layer0", "positional", "thread (1st comment)", POST,
          "The long-context problem is that the SAE cannot represent the positional embedding; adding "
          "W_pos back when patching should fix it.",
          "recovery of token_then_pos: (dCE_sae(O) - dCE_ttp(O)) / excess", ">", 0.5,
          "'simply the positional embedding' would mean most of the excess is recovered: more than half.",
          "all"),
    Claim("layer0-error-is-positional", "positional", "thread (2nd comment)", POST,
          "Positional embedding is most of what the layer 0 SAE gets wrong.",
          "recovery of shift_pos at resid_pre 0", ">", 0.5,
          "'most of' means more than half of the excess loss.",
          "resid_pre0"),
    Claim("positional-error-not-most-later", "positional", "thread (2nd, 3rd comments)", POST,
          "For later layers the positional embedding is not most of the problem.",
          "recovery of shift_pos, L >= 1", "<", 0.5,
          "'not most' means less than half of the excess loss is positional.",
          "later_resid_pre"),
    Claim("layer0-norm-order-of-magnitude-smaller", "norms", "thread (2nd comment)", POST,
          "Layer 0 activations are an order of magnitude smaller than any later-layer activations.",
          "mean ||resid_pre L|| / mean ||resid_pre 0|| over positions >= 1", ">=", 10.0,
          "'an order of magnitude' is a factor of 10.",
          "later_resid_pre"),
    Claim("wpos-small-share-later", "norms", "thread (2nd comment)", POST,
          "For any layer > 0 the positional embedding is only a really small part of the signal.",
          "mean over tokens of ||W_pos[p]||^2 / ||x||^2", "<", 0.1,
          "'a really small part' is read as under a tenth of the squared norm.",
          "later_resid_pre"),
    Claim("token-only-goes-poorly", "positional", "thread (2nd comment)", POST,
          "Feeding only the token embedding to the layer 0 SAE and adding position afterwards would go "
          "poorly.",
          "dCE_token_then_pos(I) / dCE_sae(I) at resid_pre 0", ">=", 2.0,
          "'go poorly' relative to the SAE used as trained: at least double the added loss in context.",
          "resid_pre0"),
    Claim("features-disjoint-layer0", "positional", "follow-up; thread (2nd comment)", FOLLOW_UP,
          "Positional and semantic features of the layer 0 SAE are almost entirely disjoint.",
          "share of live layer-0 features whose activation variance over a token x position grid is "
          ">= 90% explained by one factor alone", ">=", 0.9,
          "'almost entirely disjoint': at least 90% of features are purely token or purely positional.",
          "resid_pre0"),
    Claim("encoder-off-distribution", "context", "thread (3rd comment)", POST,
          "Out of context the encoder is off distribution and does not distinguish noise: more latents fire.",
          "mean L0(O) / mean L0(I)", ">", 1.0,
          "failing to reject noise shows as more active latents beyond the context: a ratio above 1.",
          "all"),
    Claim("errors-worse-than-random", "context", "Gurnee (2024), SAE reconstruction errors are (empirically) "
          "pathological", GURNEE,
          "Beyond the training context the reconstruction error is much worse than a random vector of "
          "similar norm.",
          "mean dCE_sae(O) / mean dCE_random_error(O)", ">", 1.0,
          "'worse than random' of the same norm: a ratio above 1 (the words 'much worse' are not given a "
          "number, so only the direction is tested).",
          "all"),
    Claim("sae-thinks-earlier", "positional", "follow-up", FOLLOW_UP,
          "At late positions the layer 0 SAE 'thinks' it is at an earlier position.",
          "share of p in O whose position decoded from the reconstruction is < ctx", ">=", 0.5,
          "'thinks it is earlier' as a rule, not an exception: at least half the late tokens.",
          "resid_pre0"),
    Claim("wpos-helix", "positional", "follow-up", FOLLOW_UP,
          "W_pos rows 1..127 lie on a helix: their top 3 principal components explain 95% of the variance.",
          "share of variance of W_pos rows 1..ctx-1 in the top 3 principal components", ">=", 0.945,
          "'95%' as reported to two digits: at least 94.5%.",
          "model", references=(GPT2_REFERENCE_W_POS,)),
    Claim("full-context-training-fixes", "training-context", "follow-up (speculation)", FOLLOW_UP,
          "Training the SAE on longer contexts would fix the degradation.",
          "dCE(O) / dCE(I) of the full-context SAE", "<", 1.25,
          "'fix' means the beyond-context penalty all but disappears: within 25% of the in-context loss.",
          "full_context"),
)


def register_thread_claims() -> tuple[Claim, ...]:
    return tuple(register_claim(c) for c in THREAD_CLAIMS)
