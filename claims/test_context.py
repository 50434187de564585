"""Claims about performance within and beyond the SAE's training context.

Source: Anders & Bloom, "Examining Language Model Performance with Reconstructed Activations using
Sparse Autoencoders" (LessWrong, 2024), https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o, and its
comment thread; and Chughtai & Lau, "Understanding Positional Features in Layer 0 SAEs",
https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF.

Instrument: splice a variant of the activation at one hook (position 0 never patched) and compare
next-token cross-entropy with the clean model, token by token; I = positions [1, ctx), O = [ctx, T).
Every threshold is taken from `saeclaims.catalog`, which says why the words imply it.
"""

import pytest

from saeclaims.applicability import needs_beyond_context
from saeclaims.instruments import (
    Quantity,
    beyond_over_inside,
    ce_score,
    check_beyond_context,
    inside,
    layer_trend,
    n_tokens,
    outside,
    ratio,
)
from saeclaims.subjects import hook_order

pytestmark = pytest.mark.gpu


@pytest.mark.claim("beyond-context-degrades", scope="all")
def test_beyond_context_degrades(subject, hook, workbench, confidence, claim_check, not_applicable):
    """Post: the SAEs do well up to their training context and degrade beyond it.
    Statistic: mean dCE_sae over O divided by mean dCE_sae over I; holds when > 1."""
    needs_beyond_context(subject, hook, "beyond-context-degrades", not_applicable)
    m = workbench.measurements([hook])
    iv = beyond_over_inside(m, hook, "sae", "dce", confidence, workbench.seed, workbench.n_resamples)
    claim_check("beyond-context-degrades", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None))


@pytest.mark.claim("in-context-performs-well", scope="all")
def test_in_context_performs_well(subject, hook, workbench, confidence, claim_check):
    """Post: within the training context the SAEs perform well.
    Statistic: sae_lens's CE-loss score (against zero ablation) over I; holds when >= 0.9."""
    m = workbench.measurements([hook])
    iv = ce_score(m, hook, confidence, workbench.seed, workbench.n_resamples)
    claim_check("in-context-performs-well", subject.name, hook, iv, m.n_seqs, n_tokens(m, *inside(m, hook)))


def _resid_pre_hooks(subject):
    return [h for h in subject.hooks if h.endswith("hook_resid_pre")]


@pytest.mark.claim("later-layers-worse-in-context", scope="subject")
def test_later_layers_worse_in_context(subject, workbench, confidence, claim_check, not_applicable):
    """Post: within context, later layers are worse.
    Statistic: Spearman rho between layer and mean dCE_sae(I) over resid_pre hooks; holds when > 0."""
    hooks = _resid_pre_hooks(subject)
    if len(hooks) < 3:
        not_applicable("later-layers-worse-in-context", subject.name, "resid_pre",
                       f"a rank trend needs at least 3 resid_pre hooks, the subject has {len(hooks)}")
    m = workbench.measurements(hooks)
    iv = layer_trend(m, hooks, [hook_order(h)[0] for h in hooks], "inside", confidence, workbench.seed,
                     workbench.n_resamples)
    claim_check("later-layers-worse-in-context", subject.name, "resid_pre", iv, m.n_seqs,
                sum(n_tokens(m, *inside(m, h)) for h in hooks))


@pytest.mark.claim("beyond-context-worst-early", scope="subject")
def test_beyond_context_worst_early(subject, workbench, confidence, claim_check, not_applicable):
    """Post: beyond context, performance is poorest in early layers and best in later ones.
    Statistic: Spearman rho between layer and the excess dCE_sae(O) - dCE_sae(I); holds when < 0."""
    hooks = _resid_pre_hooks(subject)
    if len(hooks) < 3:
        not_applicable("beyond-context-worst-early", subject.name, "resid_pre",
                       f"a rank trend needs at least 3 resid_pre hooks, the subject has {len(hooks)}")
    needs_beyond_context(subject, hooks[0], "beyond-context-worst-early", not_applicable)
    m = workbench.measurements(hooks)
    iv = layer_trend(m, hooks, [hook_order(h)[0] for h in hooks], "excess", confidence, workbench.seed,
                     workbench.n_resamples)
    claim_check("beyond-context-worst-early", subject.name, "resid_pre", iv, m.n_seqs,
                sum(n_tokens(m, 1, None) for h in hooks))


@pytest.mark.claim("encoder-off-distribution", scope="all")
def test_encoder_off_distribution(subject, hook, workbench, confidence, claim_check, not_applicable):
    """Thread (3rd comment): out of context the encoder is off distribution and does not reject
    noise. Statistic: mean L0 over O divided by mean L0 over I; holds when > 1."""
    needs_beyond_context(subject, hook, "encoder-off-distribution", not_applicable)
    m = workbench.measurements([hook])
    iv = beyond_over_inside(m, hook, "sae", "l0", confidence, workbench.seed, workbench.n_resamples)
    claim_check("encoder-off-distribution", subject.name, hook, iv, m.n_seqs, n_tokens(m, 1, None))


@pytest.mark.claim("errors-worse-than-random", scope="all")
def test_errors_worse_than_random(subject, hook, workbench, confidence, claim_check, not_applicable):
    """Follow-up: beyond the context the SAE's error hurts more than a random error of the same norm.
    Statistic: mean dCE_sae(O) / mean dCE_random_error(O); holds when > 1."""
    needs_beyond_context(subject, hook, "errors-worse-than-random", not_applicable)
    m = workbench.measurements([hook])
    check_beyond_context(m, hook)
    o = outside(m, hook)
    iv = ratio(m, Quantity("sae", hook, "dce", *o), Quantity("random_error", hook, "dce", *o), confidence,
               workbench.seed, workbench.n_resamples)
    claim_check("errors-worse-than-random", subject.name, hook, iv, m.n_seqs, n_tokens(m, *o))
