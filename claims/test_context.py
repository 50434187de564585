"""Claims about performance within and beyond the SAE's training context.

Source: Anders & Bloom, "Examining Language Model Performance with Reconstructed Activations using
Sparse Autoencoders" (LessWrong, 2024), https://www.lesswrong.com/posts/8QRH8wKcnKGhpAu2o, and its
comment thread; Gurnee, "SAE reconstruction errors are (empirically) pathological" (2024).

Instrument: splice a variant of the activation at one hook (BOS never patched) and compare next-token
cross-entropy with the clean model, token by token; I = positions [1, ctx), O = [ctx, T-1) of T tokens (the
last token predicts nothing, so it has no loss column; every statistic, norms included, reads these positions).
Every threshold is taken from the registered claim (`saeclaims.thread`), which says why the words imply it.
"""

import pytest

from saeclaims.instruments import (
    Quantity,
    best_removed_share,
    beyond_over_inside,
    ce_score,
    contrast,
    control_ratio,
    excess,
    excess_floor,
    excess_removed_share,
    inside,
    mean_of,
    outside,
    ratio,
)

pytestmark = pytest.mark.gpu


def require_positive_denominator(claim, m, q: Quantity, what: str) -> None:
    """A ratio is judged only where its denominator is significantly positive (an SAE that adds no loss in
    context, e.g. at an attention output, has no 'degradation factor'); else not applicable, shown."""
    claim.require_positive(mean_of(m, q, claim.boot), what)


@pytest.mark.claim("beyond-context-degrades", reads=("sae",))
def test_beyond_context_degrades(claim):
    """mean dCE_sae over O divided by mean dCE_sae over I (> 0)."""
    claim.require_beyond_context()
    m = claim.measurements()
    i = inside(m, claim.sae_id)
    require_positive_denominator(claim, m, Quantity("sae", claim.sae_id, "dce", *i), "mean dCE_sae(I)")
    claim.check(beyond_over_inside(m, claim.sae_id, "sae", "dce", claim.boot))


@pytest.mark.claim("in-context-performs-well", reads=("zero", "sae"))
def test_in_context_performs_well(claim):
    """sae_lens's CE-loss score (against zero ablation) over I."""
    claim.check(ce_score(claim.measurements(), claim.sae_id, claim.boot))


def _layer_contrast(claim, region: str, first_minus_last: bool):
    """The contrast of absolute dCE_sae between the first and the last resid_pre hook, with the adjacent
    pairs' contrasts (estimate and interval) in the row's extra."""
    s = claim.subject
    hooks = claim.one_sae_per_hook([i for i in s.sae_ids if s.hook_of(i).endswith("hook_resid_pre")])
    if len(hooks) < 2:
        claim.not_applicable(f"a contrast between layers needs 2 resid_pre hooks, the subject has {len(hooks)}")
    if region == "outside":
        for h in hooks:
            claim.require_beyond_context(h)
    m = claim.measurements(hooks)
    a, b = (hooks[-1], hooks[0]) if first_minus_last else (hooks[0], hooks[-1])
    pairs = {}
    for lo, hi in zip(hooks, hooks[1:]):
        x, y = (hi, lo) if first_minus_last else (lo, hi)
        iv = contrast(m, x, y, region, claim.boot)
        pairs[f"{y} - {x}"] = f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]"
    claim.check(contrast(m, a, b, region, claim.boot), adjacent_pairs=pairs, first=hooks[0], last=hooks[-1])


@pytest.mark.claim("later-layers-worse-in-context", reads=("sae",))
def test_later_layers_worse_in_context(claim):
    """mean dCE_sae(I) at the last resid_pre hook minus at the first."""
    _layer_contrast(claim, "inside", first_minus_last=False)


@pytest.mark.claim("beyond-context-worst-early", reads=("sae",))
def test_beyond_context_worst_early(claim):
    """mean dCE_sae(O) at the first resid_pre hook minus at the last."""
    _layer_contrast(claim, "outside", first_minus_last=True)


@pytest.mark.claim("reencoding-recovers", reads=("sae",))
def test_reencoding_recovers(claim):
    """1 - excess_reencode / excess_sae on the first --reencode-seqs sequences, where the SAE's excess is > 0, at
    k = the SAE's in-context L0 and at 2k atoms (a k sweep: later positions may need more atoms); the better."""
    claim.require_beyond_context()
    # the premise on every sequence first (cheap: the shared splice), so no excess costs no sparse coding
    claim.require_something_to_explain(claim.measurements())
    m = claim.reencode_measurements()
    claim.require_substantial(excess(m, claim.sae_id, boot=claim.boot),
                              f"excess dCE_sae(O) - dCE_sae(I) on the first {m.n_seqs} sequences",
                              excess_floor(m, claim.sae_id))
    best, each = best_removed_share(m, claim.sae_id, ("reencode", "reencode_2x"), claim.boot)
    shown = {v: f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]" for v, iv in each.items()}
    claim.check(best, share_at_k=shown["reencode"], share_at_2k=shown["reencode_2x"])


@pytest.mark.claim("encoder-off-distribution", reads=("sae", "full_context_sae", "zero"))
def test_encoder_off_distribution(claim):
    """L0's beyond/inside ratio over the control's (not applicable to fixed-L0 architectures such as TopK, or
    without a control of like quality: the raw ratio mixes L0's position trend with the encoder's failure)."""
    claim.require_free_l0()
    claim.require_full_context_sae()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_matched_control(m)
    claim.check(control_ratio(m, claim.sae_id, claim.boot, metric="l0"))


def require_identifiable_supports(claim, m, variants: tuple[str, ...] = ("sae",)) -> None:
    """The oracle support stands in for the true sparse code only where a sparse code is identifiable: a k-sparse
    code is the unique sparsest one only for k < spark(D) / 2 <= (d + 1) / 2 (Donoho & Elad 2003). An SAE (or
    control) whose mean in-context L0 is d_in / 2 or more fills the space: a pursuit at that L0 fits exactly with
    many supports, and any latent could be called a false positive. Not applicable there, with the L0 shown."""
    d = int(claim.subject.saes[claim.sae_id].cfg.d_in)
    for variant in variants:
        l0 = mean_of(m, Quantity(variant, claim.sae_id, "l0", *inside(m, claim.sae_id)), claim.boot).estimate
        if not l0 < d / 2:
            claim.not_applicable(f"the {variant} code is too dense for a true sparse code to be identifiable: mean "
                                 f"in-context L0 {l0:.4g} >= d_in / 2 = {d / 2:g}", **{f"l0_{variant}": f"{l0:.4g}"})


@pytest.mark.claim("false-positives-beyond-context", reads=("sae", "full_context_sae", "zero"))
def test_false_positives_beyond_context(claim):
    """The false-positive mass's beyond/inside ratio over the control's, on the first --reencode-seqs sequences
    (not applicable without a control of like in-context quality, or where the codes are too dense for a sparse
    code to be identifiable)."""
    claim.require_full_context_sae()
    claim.require_beyond_context()
    m = claim.measurements()
    claim.require_matched_control(m)
    require_identifiable_supports(claim, m, ("sae", "full_context_sae"))
    o = claim.oracle_measurements()
    i, out = inside(o, claim.sae_id), outside(o, claim.sae_id)
    for variant, where, name in (("oracle_support", i, "mean FP_sae(I)"),
                                 ("full_context_oracle_support", i, "mean FP_ctl(I)"),
                                 ("full_context_oracle_support", out, "mean FP_ctl(O)")):
        require_positive_denominator(claim, o, Quantity(variant, claim.sae_id, "fp_mass", *where), name)
    claim.check(control_ratio(o, claim.sae_id, claim.boot, variant="oracle_support",
                              control="full_context_oracle_support", metric="fp_mass"))


@pytest.mark.claim("false-positives-cause-failure", reads=("sae",))
def test_false_positives_cause_failure(claim):
    """1 - excess_oracle_support / excess_sae on the first --reencode-seqs sequences, where the SAE's excess is
    substantial there (the hook's premise on every sequence first, as reencoding-recovers asks it)."""
    claim.require_beyond_context()
    claim.require_something_to_explain(claim.measurements())
    require_identifiable_supports(claim, claim.measurements())
    o = claim.oracle_measurements()
    claim.require_substantial(excess(o, claim.sae_id, boot=claim.boot),
                              f"excess dCE_sae(O) - dCE_sae(I) on the first {o.n_seqs} sequences",
                              excess_floor(o, claim.sae_id))
    fp = mean_of(o, Quantity("oracle_support", claim.sae_id, "fp_mass", *outside(o, claim.sae_id)), claim.boot)
    claim.check(excess_removed_share(o, claim.sae_id, "oracle_support", claim.boot),
                fp_mass_beyond=f"{fp.estimate:.4g} [{fp.low:.4g}, {fp.high:.4g}]")


def _errors_vs_random(claim, region) -> None:
    m = claim.measurements()
    where = region(m, claim.sae_id)
    require_positive_denominator(claim, m, Quantity("random_error", claim.sae_id, "dce", *where),
                                 f"mean dCE_random_error({'I' if region is inside else 'O'})")
    claim.check(ratio(m, Quantity("sae", claim.sae_id, "dce", *where),
                      Quantity("random_error", claim.sae_id, "dce", *where), claim.boot))


@pytest.mark.claim("errors-worse-than-random", reads=("sae", "random_error"))
def test_errors_worse_than_random(claim):
    """mean dCE_sae(I) / mean dCE_random_error(I), the error of the same norm in a random direction (Gurnee's
    claim is about SAEs within their training context)."""
    claim.require_hook()
    _errors_vs_random(claim, inside)


@pytest.mark.claim("errors-worse-than-random-beyond", reads=("sae", "random_error"))
def test_errors_worse_than_random_beyond(claim):
    """mean dCE_sae(O) / mean dCE_random_error(O)."""
    claim.require_beyond_context()
    _errors_vs_random(claim, outside)
