"""The claims catalogue: each claim's words, source, statistic and the threshold its words imply.

Thresholds live here and nowhere else. They come from the wording ("most" is more than half, "an order
of magnitude" a factor of 10); a refuted claim is recorded in the ledger, never fixed by moving them.
"""

from __future__ import annotations

from dataclasses import dataclass

POST = "https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o"
FOLLOW_UP = "https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF"


@dataclass(frozen=True)
class Claim:
    id: str
    family: str
    source: str
    url: str
    words: str
    statistic: str
    direction: str
    threshold: float
    why: str
    scope: str  # which hooks: "per hook", "resid_pre 0", "L >= 1", "across resid_pre hooks", ...


CLAIMS: dict[str, Claim] = {c.id: c for c in [
    Claim("beyond-context-degrades", "context", "post", POST,
          "The SAEs perform well up to their training context and degrade beyond it.",
          "mean dCE_sae(O) / mean dCE_sae(I)", ">", 1.0,
          "'degrade' means more loss is added beyond the context than within it: a ratio above 1.",
          "per hook"),
    Claim("in-context-performs-well", "context", "post", POST,
          "Within the training context the SAEs perform well.",
          "CE-loss score over I (sae_lens: recovery against zero ablation)", ">=", 0.9,
          "'performs well' is read as the usual bar for a usable SAE: at least 90% of the loss recovered.",
          "per hook"),
    Claim("later-layers-worse-in-context", "context", "post", POST,
          "Within context, later layers are worse.",
          "Spearman rho(layer, mean dCE_sae(I)) over resid_pre hooks", ">", 0.0,
          "'later is worse' is a monotone increasing trend: a positive rank correlation.",
          "across resid_pre hooks"),
    Claim("beyond-context-worst-early", "context", "post", POST,
          "Beyond context, performance is poorest in early layers and best in later ones.",
          "Spearman rho(layer, excess) over resid_pre hooks", "<", 0.0,
          "'poorest early, best late' is a decreasing trend of the excess loss: a negative rank correlation.",
          "across resid_pre hooks"),
    Claim("adding-wpos-recovers-layer0", "positional", "thread (1st comment)", POST,
          "The long-context problem is that the SAE cannot represent the positional embedding; adding "
          "W_pos back when patching should fix it.",
          "recovery of token_then_pos: (dCE_sae(O) - dCE_ttp(O)) / excess", ">", 0.5,
          "'simply the positional embedding' would mean most of the excess is recovered: more than half.",
          "per hook"),
    Claim("layer0-error-is-positional", "positional", "thread (2nd comment)", POST,
          "Positional embedding is most of what the layer 0 SAE gets wrong.",
          "recovery of shift_pos at resid_pre 0", ">", 0.5,
          "'most of' means more than half of the excess loss.",
          "resid_pre 0"),
    Claim("positional-error-not-most-later", "positional", "thread (2nd, 3rd comments)", POST,
          "For later layers the positional embedding is not most of the problem.",
          "recovery of shift_pos, L >= 1", "<", 0.5,
          "'not most' means less than half of the excess loss is positional.",
          "L >= 1"),
    Claim("layer0-norm-order-of-magnitude-smaller", "norms", "thread (2nd comment)", POST,
          "Layer 0 activations are an order of magnitude smaller than any later-layer activations.",
          "mean ||resid_pre L|| / mean ||resid_pre 0|| over positions >= 1", ">=", 10.0,
          "'an order of magnitude' is a factor of 10.",
          "L >= 1"),
    Claim("wpos-small-share-later", "norms", "thread (2nd comment)", POST,
          "For any layer > 0 the positional embedding is only a really small part of the signal.",
          "mean over tokens of ||W_pos[p]||^2 / ||x||^2", "<", 0.1,
          "'a really small part' is read as under a tenth of the squared norm.",
          "L >= 1"),
    Claim("token-only-goes-poorly", "positional", "thread (2nd comment)", POST,
          "Feeding only the token embedding to the layer 0 SAE and adding position afterwards would go "
          "poorly.",
          "dCE_token_then_pos(I) / dCE_sae(I) at resid_pre 0", ">=", 2.0,
          "'go poorly' relative to the SAE used as trained: at least double the added loss in context.",
          "resid_pre 0"),
    Claim("features-disjoint-layer0", "positional", "follow-up; thread (2nd comment)", FOLLOW_UP,
          "Positional and semantic features of the layer 0 SAE are almost entirely disjoint.",
          "share of live layer-0 features whose activation variance over a token x position grid is "
          ">= 90% explained by one factor alone", ">=", 0.9,
          "'almost entirely disjoint': at least 90% of features are purely token or purely positional.",
          "resid_pre 0"),
    Claim("encoder-off-distribution", "context", "thread (3rd comment)", POST,
          "Out of context the encoder is off distribution and does not distinguish noise: more latents fire.",
          "mean L0(O) / mean L0(I)", ">", 1.0,
          "failing to reject noise shows as more active latents beyond the context: a ratio above 1.",
          "per hook"),
    Claim("errors-worse-than-random", "context", "follow-up", FOLLOW_UP,
          "Beyond the training context the reconstruction error is much worse than a random vector of "
          "similar norm.",
          "mean dCE_sae(O) / mean dCE_random_error(O)", ">", 1.0,
          "'worse than random' of the same norm: a ratio above 1 (the words 'much worse' are not given a "
          "number, so only the direction is tested).",
          "per hook"),
    Claim("sae-thinks-earlier", "positional", "follow-up", FOLLOW_UP,
          "At late positions the layer 0 SAE 'thinks' it is at an earlier position.",
          "share of p in O whose position decoded from the reconstruction is < ctx", ">=", 0.5,
          "'thinks it is earlier' as a rule, not an exception: at least half the late tokens.",
          "resid_pre 0"),
    Claim("wpos-helix", "positional", "follow-up", FOLLOW_UP,
          "W_pos rows 1..127 lie on a helix: their top 3 principal components explain 95% of the variance.",
          "share of variance of W_pos rows 1..ctx-1 in the top 3 principal components", ">=", 0.945,
          "'95%' as reported to two digits: at least 94.5%.",
          "model"),
    Claim("full-context-training-fixes", "training-context", "follow-up (speculation)", FOLLOW_UP,
          "Training the SAE on longer contexts would fix the degradation.",
          "dCE(O) / dCE(I) of the full-context SAE", "<", 1.25,
          "'fix' means the beyond-context penalty all but disappears: within 25% of the in-context loss.",
          "per hook with a full-context SAE"),
]}


def get_claim(claim_id: str) -> Claim:
    try:
        return CLAIMS[claim_id]
    except KeyError:
        raise KeyError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS)}") from None
