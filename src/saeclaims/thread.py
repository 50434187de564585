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
SHIFT_POS_BLIND = ("shift_pos (the SAE shown an in-context position) removes any failure the out-of-context position "
                   "triggers, positional or not: on planted SAEs whose failure is positional and whose failure is a "
                   "token error it gives the same verdict (tests/test_planted_instruments.py)")

THREAD_CLAIMS: tuple[Claim, ...] = (
    Claim("beyond-context-degrades", "context", "post", POST,
          "The SAEs perform well up to their training context and degrade beyond it.",
          "mean dCE_sae(O) / mean dCE_sae(I)", ">", 1.0,
          "'degrade' means more loss is added beyond the context than within it: a ratio above 1.",
          "all", figures=("dce_by_position",)),
    Claim("in-context-performs-well", "context", "post", POST,
          "Within the training context the SAEs perform well.",
          "CE-loss score over I (sae_lens: recovery against zero ablation)", ">=", 0.9,
          "'performs well' is read as the usual bar for a usable SAE: at least 90% of the loss recovered.",
          "all"),
    Claim("later-layers-worse-in-context", "context", "post", POST,
          "Within context, later layers are worse.",
          "mean dCE_sae(I) at the last resid_pre hook - at the first (adjacent-pair contrasts in the row's extra)",
          ">", 0.0,
          "'later is worse' compares absolute added loss: the last layer adds more than the first. A contrast with "
          "its own interval, not a rank correlation over a handful of points.",
          "across_resid_pre", tolerance=0.01, tolerance_why="a hundredth of a nat per token",
          figures=("dce_by_position",)),
    Claim("beyond-context-worst-early", "context", "post", POST,
          "Beyond context, performance is poorest in early layers and best in later ones.",
          "mean dCE_sae(O) at the first resid_pre hook - at the last (adjacent-pair contrasts in the row's extra)",
          ">", 0.0,
          "'poorest early, best late' is about absolute performance beyond the context: the first layer adds more "
          "loss there than the last.",
          "across_resid_pre", tolerance=0.01, tolerance_why="a hundredth of a nat per token",
          figures=("dce_by_position",)),
    Claim("adding-wpos-recovers", "positional", "thread (1st comment)", POST,
          "The long-context problem is that the SAE cannot represent the positional embedding; manually adding "
          "the positional embedding vector when you patch in the SAE reconstruction should fix it.",
          "recovery of pos_repair_out, SAE(x) - W_pos[q] + W_pos[p] with q the position the reconstruction carries: "
          "(dCE_sae(O) - dCE_repair(O)) / (dCE_sae(O) - dCE_sae(I)), where that excess is > 0",
          ">", 0.5,
          "'should fix it' means the output-side repair the comment proposes removes most of the excess: more than "
          "half. Read literally: the reconstruction already carries a position q (decoded from it), which the "
          "repair swaps for the true one; adding W_pos[p] on top would count position twice.",
          "all", figures=("dce_by_position", "recovery_bars")),
    Claim("layer0-error-is-positional", "positional", "thread (2nd comment)", POST,
          "Positional embedding is most of what the layer 0 SAE gets wrong.",
          "recovery of pos_part_repair (SAE(x) + P(x - SAE(x)), P the projection onto W_pos's subspace holding "
          "99% of its squared norm: the positional part of the SAE's error repaired, the rest kept) at resid_pre 0 "
          "over the excess dCE_sae(O) - dCE_sae(I), where that excess is > 0",
          ">", 0.5,
          "'most of' means more than half of the excess loss.",
          "resid_pre0", figures=("recovery_bars",)),
    Claim("positional-error-not-most-later", "positional", "thread (2nd, 3rd comments)", POST,
          "For later layers the positional embedding is not most of the problem.",
          "recovery of pos_part_repair (the positional part of the SAE's error repaired) at resid_pre L >= 1 over "
          "the excess, where that excess is > 0", "<", 0.5,
          "'not most' means less than half of the excess loss is positional.",
          "later_resid_pre", figures=("recovery_bars",)),
    Claim("position-not-most-of-it-input", "positional", "thread (3rd comment)", POST,
          "Positional features are likely a part of the long-context failure, but not most of it.",
          "recovery of shift_pos (the SAE sees an in-context position of the same phase) over the excess, "
          "where the excess is > 0",
          "<", 0.5,
          "'not most of it' means less than half of the excess is removed by repairing position at the input.",
          "all", figures=("recovery_bars",), failed_validation=SHIFT_POS_BLIND),
    Claim("position-not-most-of-it-output", "positional", "thread (3rd comment)", POST,
          "Positional features are likely a part of the long-context failure, but not most of it.",
          "recovery of pos_part_repair (the positional part of the SAE's error repaired at the output) over the "
          "excess, where the excess is > 0",
          "<", 0.5,
          "'not most of it' means less than half of the excess is removed by repairing position at the output.",
          "all", figures=("recovery_bars",)),
    Claim("position-not-most-of-it-computed", "positional", "thread (3rd comment)", POST,
          "Positional features are likely a part of the long-context failure, but not most of it.",
          "recovery of pos_mean_part_repair (the part of the SAE's error in the subspace where the activation's mean "
          "moves with position, estimated on held-out windows, repaired) over the excess, where the excess is > 0 "
          "and that subspace holds at least 1% of the activation's variance",
          "<", 0.5,
          "'positional features' are read as whatever the model computes from position, not W_pos alone (rotary "
          "models included); 'not most of it' means less than half of the excess. A subspace holding under 1% of "
          "the variance is no positional feature worth the name: not applicable there.",
          "all", figures=("recovery_bars",)),
    Claim("position-not-most-of-it-vs-control", "positional", "thread (3rd comment)", POST,
          "Positional features are likely a part of the long-context failure, but not most of it.",
          "recovery of shift_pos over the control-relative excess dCE_sae(O) - dCE_sae(I) x "
          "dCE_ctl(O) / dCE_ctl(I), where that excess is > 0 and the SAE's own excess is substantial (the hook's "
          "premise)",
          "<", 0.5,
          "as for the input-side claim, against the excess beyond what the full-context control's own "
          "position trend predicts (loss falls with position for every SAE).",
          "full_context", failed_validation=SHIFT_POS_BLIND),
    Claim("positional-not-large-share-of-mse", "positional", "thread (2nd comment)", POST,
          "For layers > 0, I'm skeptical that the positional embedding is accounting for a large fraction of "
          "the large MSE that shows up beyond the context.",
          "share of the beyond-context excess normalised MSE, nMSE_sae(O) - nMSE_sae(I), removed by "
          "pos_part_repair (the positional part of the SAE's error repaired), where that excess is > 0",
          "<", 0.5,
          "'not a large fraction' is read as less than half.",
          "later_resid_pre"),
    Claim("reencoding-recovers", "context", "thread (3rd comment)", POST,
          "Out of context the encoder is off distribution: the same dictionary with better codes would not "
          "fail there.",
          "share of the excess dCE_sae(O) - dCE_sae(I) that re-inferring the codes with the SAE's own decoder "
          "(non-negative OMP at k = the SAE's in-context L0 and at 2k; the better of the two, each interval at "
          "half the row's error rate) removes: 1 - excess_reencode / excess_sae, where the SAE's excess is > 0; "
          "first --reencode-seqs sequences",
          ">", 0.5,
          "if the encoder is what fails beyond the context, codes re-inferred for the same dictionary remove "
          "most of the excess: more than half. If the dictionary itself cannot represent those activations, "
          "they do not.",
          "all"),
    Claim("layer0-norm-order-of-magnitude-smaller", "norms", "thread (2nd comment)", POST,
          "Layer 0 activations are an order of magnitude smaller than any later-layer activations.",
          "mean ||resid_pre L|| / mean ||resid_pre 0|| over positions >= 1", ">=", 10.0,
          "'an order of magnitude' is a factor of 10.",
          "later_resid_pre", figures=("norms",)),
    Claim("wpos-small-share-later", "norms", "thread (2nd comment)", POST,
          "For any layer > 0 the positional embedding is only a really small part of the signal.",
          "mean over tokens of ||W_pos[p]||^2 / ||x||^2", "<", 0.1,
          "'a really small part' is read as under a tenth of the squared norm.",
          "later_resid_pre", figures=("norms",)),
    Claim("token-only-goes-poorly", "positional", "thread (2nd comment)", POST,
          "Feeding only the token embedding to the layer 0 SAE and adding position afterwards would go "
          "poorly.",
          "dCE_token_then_pos(I) / dCE_sae(I) at resid_pre 0", ">=", 2.0,
          "'go poorly' relative to the SAE used as trained: at least double the added loss in context.",
          "resid_pre0", figures=("dce_by_position",)),
    Claim("token-only-goes-poorly-mixing", "positional", "thread (2nd comment)", POST,
          "Feeding only the token embedding to the layer 0 SAE and adding position afterwards would go "
          "poorly, since the SAE was trained on token and position mixed.",
          "dCE_token_mean_pos(I) / dCE_sae(I) at resid_pre 0: the SAE fed the token embedding plus the mean "
          "in-context W_pos, position added after", ">=", 2.0,
          "the reason given is mixing, not an input off the training distribution: with the average position "
          "restored (an input of the right scale and mean, but unmixed), what still goes poorly is what mixing "
          "explains; 'go poorly' keeps its bar of at least double the SAE's added loss in context.",
          "resid_pre0", figures=("dce_by_position",)),
    Claim("features-disjoint-layer0", "positional", "follow-up; thread (2nd comment)", FOLLOW_UP,
          "Positional and semantic features of the layer 0 SAE are almost entirely disjoint.",
          "share of live layer-0 features whose activation variance over a token x position grid is "
          ">= 90% explained by one factor alone", ">=", 0.9,
          "'almost entirely disjoint': at least 90% of features are purely token or purely positional.",
          "resid_pre0", figures=("feature_split_hist",)),
    Claim("encoder-off-distribution", "context", "thread (3rd comment)", POST,
          "Out of context the encoder is off distribution and does not distinguish noise: more latents fire.",
          "(mean L0_sae(O) / mean L0_sae(I)) / (mean L0_ctl(O) / mean L0_ctl(I)), ctl the full-context control "
          "of like in-context quality", ">", 1.0,
          "failing to reject noise shows as more active latents beyond the context than the position trend of L0 "
          "predicts: a ratio above 1. L0 changes with position for any SAE (a full-context control's falls at "
          "later layers), so the trend is the control's, which saw every position in training.",
          "all", figures=("l0_by_position",)),
    Claim("false-positives-beyond-context", "context", "thread (3rd comment)", POST,
          "Out of context the encoder doesn't distinguish noise properly (compressed sensing): it turns on latents "
          "that are not part of the true sparse code.",
          "(mean FP_sae(O) / mean FP_sae(I)) / (mean FP_ctl(O) / mean FP_ctl(I)): FP a token's false-positive mass, "
          "the share of its code's decoded mass (|a_i| ||d_i|| summed over active latents) on latents outside the "
          "oracle support (the atoms non-negative OMP picks from the same decoder at the token's own L0, at most "
          "twice the SAE's in-context L0 as reencode_2x); ctl the "
          "full-context control of like in-context quality, by the same construction; first --reencode-seqs "
          "sequences",
          ">", 1.0,
          "'doesn't distinguish noise' beyond the context means more of the code is false positives there than "
          "the position trend predicts: a ratio above 1. The trend is the control's, which saw every position in "
          "training; the oracle support is the true sparse code's stand-in at the sparsity the encoder chose.",
          "all"),
    Claim("false-positives-cause-failure", "context", "thread (3rd comment)", POST,
          "Out of context the encoder doesn't distinguish noise properly: the latents it turns on that are not "
          "part of the true sparse code are what makes the SAE fail there.",
          "share of the excess dCE_sae(O) - dCE_sae(I) that oracle_support (the SAE's own code with its active "
          "latents outside the oracle support zeroed) removes: 1 - excess_oracle_support / excess_sae, where the "
          "SAE's excess is substantial; first --reencode-seqs sequences",
          ">", 0.5,
          "if false positives cause the failure, removing them (the SAE's own values kept on the true support) "
          "removes most of the excess: more than half. A failure of magnitudes on the right support, or of the "
          "dictionary, stays.",
          "all"),
    Claim("errors-worse-than-random", "context", "Gurnee (2024), SAE reconstruction errors are (empirically) "
          "pathological", GURNEE,
          "SAE reconstruction errors are pathological: splicing in the reconstruction adds much more loss than "
          "replacing the activation by one with a random error of the same norm (2-4.5x in GPT-2 small).",
          "mean dCE_sae(I) / mean dCE_random_error(I), within the training context", ">", 2.0,
          "'much worse' is given a number by the source itself: its smallest measured factor, 2, is the bar.",
          "all", figures=("dce_by_position",)),
    Claim("errors-worse-than-random-beyond", "context", "thread, after Gurnee (2024)", POST,
          "Beyond the training context the reconstruction error is still worse than a random vector of "
          "similar norm.",
          "mean dCE_sae(O) / mean dCE_random_error(O)", ">", 1.0,
          "'worse than random' of the same norm beyond the context, where no factor was measured: a ratio "
          "above 1 (the direction only).",
          "all", figures=("dce_by_position",)),
    Claim("sae-thinks-earlier", "positional", "follow-up", FOLLOW_UP,
          "At late positions the layer 0 SAE 'thinks' it is at an earlier position.",
          "share of p in O whose position decoded from the reconstruction is < ctx; judged where the full-context "
          "control's reconstruction decodes most late tokens late (the null: a short decoder maps any code early)",
          ">=", 0.5,
          "'thinks it is earlier' as a rule, not an exception: at least half the late tokens.",
          "resid_pre0", figures=("decoded_positions_plot",)),
    Claim("wpos-helix", "positional", "follow-up", FOLLOW_UP,
          "W_pos rows 1..127 lie on a helix: their top 3 principal components explain 95% of the variance.",
          "share of variance of W_pos rows 1..ctx-1 in the top 3 principal components", ">=", 0.945,
          "'95%' as reported to two digits: at least 94.5%.",
          "model", references=(GPT2_REFERENCE_W_POS,), figures=("wpos_pca",)),
    Claim("beyond-context-degrades-vs-control", "training-context", "post; position baseline", POST,
          "The SAEs degrade beyond their training context (judged against an SAE trained at the full context).",
          "(dCE_sae(O) / dCE_sae(I)) / (dCE_ctl(O) / dCE_ctl(I)) with the full-context control at the same hook",
          ">", 1.0,
          "'degrade' relative to the position trend every SAE shows: the short SAE's beyond/inside ratio exceeds "
          "the control's.",
          "full_context"),
    Claim("full-context-training-fixes", "training-context", "follow-up (speculation)", FOLLOW_UP,
          "Training the SAE on longer contexts would fix the degradation.",
          "share of the short SAE's excess that the full-context SAE does not have, at the same positions: "
          "1 - (dCE_ctl(O) - dCE_ctl(I)) / (dCE_sae(O) - dCE_sae(I)), where the SAE's excess is substantial (the "
          "hook's premise: a degradation to fix) and the control is like the SAE in context",
          ">=", 0.75,
          "'fix' means the degradation all but disappears: at least three quarters of it removed.",
          "full_context", figures=("dce_by_position",)),
)


def register_thread_claims() -> tuple[Claim, ...]:
    return tuple(register_claim(c) for c in THREAD_CLAIMS)
