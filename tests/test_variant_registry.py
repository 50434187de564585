"""The variant registry: one declaration makes a variant measurable everywhere.

The whole diff of adding a variant is the `Variant(...)` below (plus its function and its tests): the
batched kernels splice it, the naive baseline agrees, the FLOP count, the reads check and the figures'
styles see it, with no table in another module to edit.
"""

import numpy as np
import pytest

from saeclaims.flops import sae_passes
from saeclaims.naive import naive_losses
from saeclaims.reads import reads_problem
from saeclaims.splice import in_context_stats, measure
from saeclaims.splicing import variants_at
from saeclaims.variants import (
    CLAIM_VARIANTS,
    REGISTRY,
    Variant,
    VariantError,
    register_variant,
    unregister_variant,
    variant_names,
)
from tests.conftest import tiny_subject


def half_sae(x, c):
    """A trivial variant: halfway between x and SAE(x)."""
    codes = c.sae.encode(x)
    return 0.5 * (x + c.sae.decode(codes)), (codes != 0).sum(-1).to(x.dtype)


HALF = Variant("half_sae", half_sae, needs_sae=True, shares_sae_input=True, style=("C6", "-", "halfway to SAE(x)"))


@pytest.fixture
def registered():
    register_variant(HALF)  # the one declaration
    yield HALF
    unregister_variant(HALF.name)


def test_a_registered_variant_is_spliced_and_agrees_with_the_naive_baseline(registered):
    subj = tiny_subject(n_layers=2, ctx=6, n_seqs=3, seq_len=16, seed=3)
    m = measure(subj, variants=("sae", "half_sae"), batch_size=2, seed=0, progress=False)
    naive = naive_losses(subj, subj.tokens, subj.sae_ids, ("sae", "half_sae"), in_context_stats(subj, subj.sae_ids), 0)
    for hook in subj.sae_ids:
        np.testing.assert_allclose(m.get("half_sae", hook, "ce"), naive[("half_sae", hook)]["ce"].numpy(), atol=1e-5)
        # halfway spliced: less loss added than SAE(x) on average
        assert np.nanmean(m.get("half_sae", hook, "dce")) <= np.nanmean(m.get("sae", hook, "dce")) + 1e-6


def test_every_table_reads_the_declaration(registered):
    subj = tiny_subject(n_layers=1, ctx=6, n_seqs=2, seq_len=12)
    key = subj.sae_ids[0]
    assert variants_at(subj, key, ("half_sae",)) == ["half_sae"]
    assert sae_passes(("sae", "half_sae")) == 2 and sae_passes(("sae", "half_sae"), shared_sae=True) == 1
    assert reads_problem(("half_sae",)) is None
    assert "half_sae" in variant_names(needs_sae=True) and "half_sae" not in CLAIM_VARIANTS
    from saeclaims.figures import _style

    assert _style("half_sae") == ("C6", "-", "halfway to SAE(x)")


def test_without_the_declaration_the_variant_is_unknown_everywhere():
    assert "half_sae" not in REGISTRY
    assert "unknown variants ['half_sae']" in reads_problem(("half_sae",))
    subj = tiny_subject(n_layers=1, ctx=6, n_seqs=2, seq_len=12)
    with pytest.raises(VariantError, match="unknown variant 'half_sae'"):
        measure(subj, variants=("half_sae",), progress=False)


def test_a_name_registered_twice_with_another_meaning_is_refused(registered):
    register_variant(HALF)  # the same declaration again: harmless
    with pytest.raises(VariantError, match="already registered"):
        register_variant(Variant("half_sae", half_sae))


def test_the_built_in_declarations():
    """The flags the kernels and claims rely on, pinned (they were separate tables before the registry)."""
    assert CLAIM_VARIANTS == ("zero", "sae", "token_then_pos", "shift_pos", "random_error", "pos_repair_out",
                              "pos_part_repair", "token_mean_pos", "pos_mean_part_repair")
    assert variant_names(shares_sae_input=True) == ("sae", "random_error", "pos_repair_out", "pos_part_repair",
                                                    "pos_mean_part_repair")
    assert variant_names(needs_position_means=True) == ("pos_mean_part_repair", "mean_shift_pos")
    assert variant_names(needs_wpos=True) == variant_names(residual_only=True) == (
        "token_then_pos", "shift_pos", "pos_repair_out", "pos_part_repair", "token_mean_pos")
    assert variant_names(alike_at_residual=True) == ("zero",)
    assert variant_names(whole_batch=True) == ("reencode", "reencode_2x", "oracle_support",
                                               "full_context_oracle_support")
    assert variant_names(needs_control=True) == ("full_context_sae", "full_context_oracle_support")
    assert variant_names(repair=True) == ("token_then_pos", "shift_pos", "pos_repair_out", "pos_part_repair",
                                          "reencode", "pos_mean_part_repair", "mean_shift_pos", "reencode_2x",
                                          "oracle_support")
    assert variant_names(position_curve=True) == ("sae", "token_then_pos", "shift_pos", "random_error",
                                                  "token_mean_pos")
    assert set(variant_names(needs_sae=False)) == {"clean", "zero", "mean"}
    assert REGISTRY["reencode"].extras == ("unconverged",)
    assert REGISTRY["oracle_support"].extras == REGISTRY["full_context_oracle_support"].extras == ("fp_mass",
                                                                                                  "unconverged")
