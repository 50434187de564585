"""Variants: shapes, BOS untouched, and the identities each one promises."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from saeclaims.variants import (
    VARIANTS,
    VariantContext,
    VariantError,
    apply_variant,
    shifted_positions,
)
from tests.conftest import tiny_sae


def _ctx(sae, w_pos, ctx=8, mean=None, seed=0):
    return VariantContext(sae=sae, w_pos=w_pos, mean=mean, ctx=ctx, seed=seed, full_sae=sae)


@given(n_pos=st.integers(2, 80), ctx=st.integers(2, 40))
def test_shifted_positions_stay_in_context_and_keep_phase(n_pos, ctx):
    q = shifted_positions(n_pos, ctx)
    p = torch.arange(n_pos)
    assert q[0] == 0
    assert ((q[1:] >= 1) & (q[1:] < ctx)).all()
    assert torch.equal(q[1:ctx], p[1:ctx])  # identity inside the context
    assert ((q[1:] - p[1:]) % (ctx - 1) == 0).all()


@given(seed=st.integers(0, 10_000), ctx=st.integers(2, 24))
def test_shift_pos_equals_sae_inside_context(seed, ctx):
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", ctx, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 24, 8, generator=g)
    w_pos = torch.randn(32, 8, generator=g)
    c = _ctx(sae, w_pos, ctx)
    a, l0a = apply_variant("sae", x, c)
    b, l0b = apply_variant("shift_pos", x, c)
    torch.testing.assert_close(a[:, :ctx], b[:, :ctx], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l0a[:, 1:ctx], l0b[:, 1:ctx])


@pytest.mark.parametrize("name", VARIANTS)
def test_bos_is_never_patched(name):
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8)
    x = torch.randn(3, 12, 8)
    keep = torch.zeros(3, 12, dtype=torch.bool)
    keep[1, 5] = True  # a BOS token inside the sequence
    out, l0 = apply_variant(name, x, _ctx(sae, torch.randn(16, 8), mean=torch.randn(8)), keep)
    assert out.shape == x.shape and l0.shape == x.shape[:2]
    assert torch.isnan(l0[:, 0]).all() and torch.isnan(l0[1, 5])
    if name == "zero":  # sae_lens's CE-score baseline ablates every position, BOS included
        assert (out == 0).all()
    else:
        assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[1, 5], x[1, 5])


def test_identity_sae_changes_nothing_in_any_sae_variant():
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8, identity=True)
    x = torch.randn(2, 20, 8)
    c = _ctx(sae, torch.randn(32, 8))
    for name in ("sae", "token_then_pos", "shift_pos", "random_error"):
        out, _ = apply_variant(name, x, c)
        torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_random_error_has_the_sae_error_norm_and_is_seeded():
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8, seed=3)
    x = torch.randn(2, 10, 8)
    rec, _ = apply_variant("sae", x, _ctx(sae, None))
    out, _ = apply_variant("random_error", x, _ctx(sae, None, seed=5))
    torch.testing.assert_close((out - x).norm(dim=-1)[:, 1:], (rec - x).norm(dim=-1)[:, 1:], atol=1e-5, rtol=1e-5)
    again, _ = apply_variant("random_error", x, _ctx(sae, None, seed=5))
    other, _ = apply_variant("random_error", x, _ctx(sae, None, seed=6))
    assert torch.equal(out, again)
    assert not torch.allclose(out, other)


def test_zero_and_mean():
    x = torch.randn(2, 6, 4)
    mu = torch.arange(4.0)
    z, _ = apply_variant("zero", x, _ctx(None, None))
    m, _ = apply_variant("mean", x, _ctx(None, None, mean=mu))
    assert (z[:, 1:] == 0).all()
    assert torch.equal(m[:, 1:], mu.expand(2, 5, 4))


def test_positional_variants_need_learned_positions():
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8)
    with pytest.raises(VariantError, match="learned absolute W_pos"):
        apply_variant("token_then_pos", torch.randn(1, 4, 8), _ctx(sae, None))
    with pytest.raises(VariantError, match="needs an SAE"):
        apply_variant("sae", torch.randn(1, 4, 8), _ctx(None, None))
    with pytest.raises(VariantError, match="unknown variant"):
        apply_variant("nope", torch.randn(1, 4, 8), _ctx(sae, None))
