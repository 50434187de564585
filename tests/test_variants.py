"""Variants: shapes, BOS untouched, and the identities each one promises."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from saeclaims.positional import decoded_positions
from saeclaims.variants import (
    CLAIM_VARIANTS,
    VARIANTS,
    VariantContext,
    VariantError,
    apply_variant,
    apply_variant_ex,
    reencode_k,
    shifted_positions,
)
from tests.conftest import tiny_model, tiny_sae


def _ctx(sae, w_pos, ctx=8, mean=None, seed=0, sae_l0=None, hook=None, position_basis=None, position_means=None):
    return VariantContext(sae=sae, w_pos=w_pos, mean=mean, ctx=ctx, seed=seed, full_sae=sae, sae_l0=sae_l0, hook=hook,
                          position_basis=position_basis, position_means=position_means)


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
    ctx = _ctx(sae, torch.randn(16, 8), mean=torch.randn(8), sae_l0=3.0, position_basis=torch.eye(8)[:2],
               position_means=torch.randn(16, 8))
    out, l0 = apply_variant(name, x, ctx, keep)
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
    for name in ("sae", "token_then_pos", "shift_pos", "random_error", "pos_repair_out"):
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


class _ShiftingSAE:
    """A stand-in SAE whose reconstruction of W_E[t] + W_pos[p] is exact except that it carries the
    position `shift[p]`: the failure pos_repair_out is meant to undo."""

    def __init__(self, w_pos, shift, hook="blocks.0.hook_resid_pre"):
        self.w_pos, self.shift = w_pos, shift

        class cfg:
            class metadata:
                hook_name = hook

        self.cfg = cfg

    def encode(self, x):
        return x

    def decode(self, acts):
        n = acts.shape[1]
        return acts - self.w_pos[:n] + self.w_pos[self.shift[:n]]


def _layer0(n_ctx=32, d=16, n_seqs=3, seed=0):
    model = tiny_model(n_ctx=n_ctx, d_model=d, seed=seed)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, model.cfg.d_vocab, (n_seqs, n_ctx), generator=g)
    w_e, w_pos = model.W_E.detach(), model.W_pos.detach()
    return model, tokens, w_e, w_pos, w_e[tokens] + w_pos[:n_ctx]


def test_pos_repair_out_undoes_a_wrong_position_in_the_reconstruction():
    _, tokens, w_e, w_pos, x = _layer0()
    shift = torch.arange(32)
    shift[8:] = 1 + (shift[8:] - 1) % 7  # beyond position 8 the 'SAE' reports an earlier position
    sae = _ShiftingSAE(w_pos, shift)
    c = _ctx(sae, w_pos)
    rec, _ = apply_variant("sae", x, c)
    out, _ = apply_variant("pos_repair_out", x, c)
    assert not torch.allclose(rec[:, 8:], x[:, 8:], atol=1e-3)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)
    # not SAE(x) + W_pos[p]: that counts the position twice
    assert not torch.allclose(out[:, 1:], (rec + w_pos[:32])[:, 1:], atol=1e-3)


def test_pos_repair_out_is_the_sae_where_the_reconstruction_carries_the_true_position():
    """A shift that leaves position p alone inside the context: there the repair changes nothing, and
    a perfect SAE is never 'repaired', at any hook (x here is not W_E[t] + W_pos[p])."""
    _, _, _, w_pos, x = _layer0()
    shift = torch.arange(32)
    shift[8:] = 1 + (shift[8:] - 1) % 7
    c = _ctx(_ShiftingSAE(w_pos, shift), w_pos)
    out, _ = apply_variant("pos_repair_out", x, c)
    rec, _ = apply_variant("sae", x, c)
    torch.testing.assert_close(out[:, :8], rec[:, :8])
    identity = tiny_sae(16, 32, "blocks.1.hook_resid_pre", 8, identity=True)
    later = torch.randn(3, 32, 16) * 5
    torch.testing.assert_close(apply_variant("pos_repair_out", later, _ctx(identity, w_pos))[0], later,
                               atol=1e-5, rtol=1e-5)


@given(seed=st.integers(0, 10_000))
def test_pos_repair_out_swaps_the_decoded_position_for_the_true_one(seed):
    """The position removed is the one positional.decoded_positions reads off the reconstruction."""
    model, tokens, w_e, w_pos, x = _layer0(seed=seed)
    sae = tiny_sae(16, 64, "blocks.0.hook_resid_pre", 8, seed=seed)
    c = _ctx(sae, w_pos)
    rec, _ = apply_variant("sae", x, c)
    out, _ = apply_variant("pos_repair_out", x, c)
    q = torch.as_tensor(decoded_positions(model, sae, tokens))
    torch.testing.assert_close((out - rec + w_pos[q])[:, 1:], w_pos[:32].expand_as(x)[:, 1:], atol=1e-4, rtol=1e-4)


def test_pos_repair_out_needs_learned_positions_and_a_residual_hook():
    _, _, _, w_pos, x = _layer0()
    sae = tiny_sae(16, 32, "blocks.0.hook_resid_pre", 8)
    with pytest.raises(VariantError, match="learned absolute W_pos"):
        apply_variant("pos_repair_out", x, _ctx(sae, None))
    for hook in ("blocks.0.hook_mlp_out", "blocks.0.attn.hook_z"):
        other = tiny_sae(16, 32, hook, 8)
        with pytest.raises(VariantError, match="needs a residual-stream hook"):
            apply_variant("pos_repair_out", x, _ctx(other, w_pos))
    with pytest.raises(VariantError, match="needs a residual-stream hook"):  # the context's hook wins
        apply_variant("pos_repair_out", x, _ctx(sae, w_pos, hook="blocks.0.hook_mlp_out"))
    apply_variant("pos_repair_out", x, _ctx(tiny_sae(16, 32, "blocks.2.hook_resid_mid", 8), w_pos))


def test_pos_repair_out_is_measured_by_default():
    assert "pos_repair_out" in CLAIM_VARIANTS and "reencode" in VARIANTS


def test_reencode_with_an_identity_dictionary_reconstructs_and_reports_convergence():
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8, identity=True)
    x = torch.randn(2, 10, 8)
    keep = torch.zeros(2, 10, dtype=torch.bool)
    keep[1, 4] = True
    out, l0, extras = apply_variant_ex("reencode", x, _ctx(sae, None, sae_l0=8.2), keep)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)
    flags = extras["unconverged"]
    assert torch.isnan(flags[:, 0]).all() and torch.isnan(flags[1, 4]) and torch.isnan(l0[1, 4])
    assert (flags[~torch.isnan(flags)] == 0).all()
    assert (l0[~torch.isnan(l0)] <= 8).all()


def test_reencode_needs_the_in_context_l0():
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8)
    for name in ("reencode", "reencode_2x"):
        with pytest.raises(VariantError, match="mean in-context L0"):
            apply_variant(name, torch.randn(1, 4, 8), _ctx(sae, None))


def test_reencode_2x_may_use_twice_the_atoms_and_never_does_worse():
    """k = 2 in context: reencode reaches at most 2 atoms, reencode_2x at most 4 and an error no larger."""
    torch.manual_seed(0)
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8, identity=True)
    x = torch.randn(2, 10, 8).abs()
    ctx = _ctx(sae, None, sae_l0=2.2)
    out1, l01 = apply_variant("reencode", x, ctx)
    out2, l02 = apply_variant("reencode_2x", x, ctx)
    assert l01[:, 1:].max() <= 2 and l02[:, 1:].max() <= 4 and l02[:, 1:].max() > 2
    err1, err2 = (out1 - x).norm(dim=-1)[:, 1:], (out2 - x).norm(dim=-1)[:, 1:]
    assert (err2 <= err1 + 1e-5).all() and (err2 < err1 - 1e-3).any()


def test_reencode_k_is_the_rounded_l0_at_least_one():
    assert reencode_k(0.2) == 1 and reencode_k(24.4) == 24 and reencode_k(24.6) == 25


def test_every_claim_variant_is_read_by_a_claim_or_a_figure():
    """Each measured variant costs a suffix run and a pass over the vocabulary: none is measured for nothing."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readers = "".join(p.read_text() for p in [*(root / "claims").glob("test_*.py"),
                                             root / "src" / "saeclaims" / "instruments.py",
                                             root / "src" / "saeclaims" / "workbench.py"])
    for v in CLAIM_VARIANTS:
        assert f'"{v}"' in readers, v


def test_random_directions_are_shared_across_hooks_and_equal_a_fresh_draw():
    from saeclaims import variants

    variants._unit_directions.cache_clear()
    a = variants._unit_directions(3, 8, (2, 5, 4), torch.device("cpu"), torch.float32)
    b = variants._unit_directions(3, 8, (2, 5, 4), torch.device("cpu"), torch.float32)
    assert a is b  # a second hook of the same width reuses the draw
    variants._unit_directions.cache_clear()
    fresh = variants._unit_directions(3, 9, (1, 5, 4), torch.device("cpu"), torch.float32)
    assert torch.equal(fresh[0], a[1])  # row 9 is row 9, whichever batch it is drawn in
    assert torch.allclose(a.norm(dim=-1), torch.ones(2, 5))


def test_count_active_counts_non_zero_codes_exactly():
    from saeclaims.variants import count_active

    codes = torch.tensor([[0.0, 0.0, 0.0], [0.5, -2.0, 0.0], [-0.0, 0.0, 1e-30], [float("inf"), -1.0, 3.0]])
    assert count_active(codes).tolist() == [0.0, 2.0, 1.0, 3.0]
    assert torch.isnan(count_active(torch.tensor([float("nan"), 1.0]))).item()  # garbage stays visible
    many = torch.ones(2, 3000, dtype=torch.bfloat16)  # bfloat16 holds integers exactly only up to 256
    many[1, :1000] = 0
    out = count_active(many)
    assert out.dtype == torch.float32 and out.tolist() == [3000.0, 2000.0]
    x = torch.randn(4, 7, 50)
    assert torch.equal(count_active(torch.relu(x)), (torch.relu(x) != 0).sum(-1).float())


def test_token_mean_pos_feeds_the_sae_the_mean_in_context_position_and_adds_the_true_one_after():
    """With an identity SAE every variant returns x; with an SAE that records its input, the input is the token
    part plus the mean of W_pos over [1, ctx), whatever the token's position."""
    torch.manual_seed(0)
    d, n, ctx = 8, 12, 4
    w_pos = torch.randn(n, d)
    tok = torch.randn(2, n, d)
    x = tok + w_pos[None]
    ident = tiny_sae(d, 2 * d, "blocks.0.hook_resid_pre", ctx, identity=True)
    out, _ = apply_variant("token_mean_pos", x, _ctx(ident, w_pos, ctx=ctx))
    torch.testing.assert_close(out[:, 1:], x[:, 1:], atol=1e-5, rtol=1e-5)
    seen = []

    class Recording:
        def encode(self, v):
            seen.append(v.clone())
            return ident.encode(v)

        def decode(self, a):
            return ident.decode(a)
    apply_variant("token_mean_pos", x, _ctx(Recording(), w_pos, ctx=ctx, hook="blocks.0.hook_resid_pre"))
    torch.testing.assert_close(seen[0], tok + w_pos[1:ctx].mean(0), atol=1e-5, rtol=1e-5)


def test_random_directions_drawn_for_the_batch_equal_each_chunk_s_own_draw():
    """random_error reads its rows of one batch-wide draw (every chunk and hook of a batch): bit-identical to
    drawing for the chunk alone, since row b is sequence first_row + b's own seeded draw."""
    from saeclaims import variants

    variants._unit_directions.cache_clear()
    x = torch.randn(3, 6, 4)
    chunk = variants.VariantContext(sae=None, w_pos=None, mean=None, ctx=4, seed=5, first_row=12)
    in_batch = variants.VariantContext(sae=None, w_pos=None, mean=None, ctx=4, seed=5, first_row=12,
                                       batch_first_row=10, batch_rows=7)
    assert torch.equal(variants._directions_for(in_batch, x), variants._directions_for(chunk, x))
    assert variants._unit_directions.cache_info().currsize == 2


def _linear_sae(m: torch.Tensor, hook: str = "blocks.0.hook_resid_pre"):
    """A StandardSAE computing SAE(x) = M x (tests/planted_subjects.linear_sae)."""
    from tests.planted_subjects import linear_sae

    return linear_sae(m, hook, 8)


def test_pos_part_repair_repairs_the_positional_part_of_the_error_only():
    """Token part in coordinates [0, 4), one coordinate per position in [4, 16): a position error is repaired
    exactly, a token-part error is kept exactly, and an exact SAE is left alone."""
    d_tok, n_ctx = 4, 12
    w_pos = torch.eye(n_ctx, d_tok + n_ctx).roll(d_tok, dims=1)
    x = torch.cat([torch.randn(2, n_ctx, d_tok), torch.zeros(2, n_ctx, n_ctx)], -1) + w_pos
    swap = torch.eye(d_tok + n_ctx)
    swap[:, d_tok + 9], swap[d_tok + 3, d_tok + 9] = 0.0, 1.0  # position 9 carried as position 3
    out, _ = apply_variant("pos_part_repair", x, _ctx(_linear_sae(swap), w_pos))
    torch.testing.assert_close(out, x)
    shrink = torch.eye(d_tok + n_ctx)
    shrink[:d_tok, :d_tok] *= 0.5
    sae = _linear_sae(shrink)
    out, _ = apply_variant("pos_part_repair", x, _ctx(sae, w_pos))
    torch.testing.assert_close(out[:, 1:], sae.decode(sae.encode(x))[:, 1:])
    exact = _linear_sae(torch.eye(d_tok + n_ctx))
    torch.testing.assert_close(apply_variant("pos_part_repair", x, _ctx(exact, w_pos))[0], x)


def test_positional_basis_holds_the_energy_asked_for():
    """The fewest singular directions of W_pos rows 1.. holding 99% of their squared norm, orthonormal."""
    from saeclaims.variants import positional_basis

    g = torch.Generator().manual_seed(0)
    w_pos = torch.randn(40, 3, generator=g) @ torch.randn(3, 16, generator=g) + 1e-3 * torch.randn(40, 16, generator=g)
    basis = positional_basis(w_pos)
    assert basis.shape == (3, 16)
    torch.testing.assert_close(basis @ basis.T, torch.eye(3), atol=1e-5, rtol=0)
    kept = (w_pos[1:] @ basis.T).pow(2).sum() / w_pos[1:].pow(2).sum()
    assert kept >= 0.99
    assert positional_basis(w_pos) is basis  # cached per W_pos
    assert positional_basis(torch.eye(10, 12)).shape == (9, 12)  # equal energies: every row's direction


def test_pos_mean_part_repair_repairs_the_error_inside_the_position_subspace_only():
    """SAE(x) + P(x - SAE(x)): the error's part in the basis is repaired (an all-space basis gives x back, an empty
    one SAE(x)); without a basis the variant says what it needs."""
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8, seed=1)
    x = torch.randn(2, 6, 8)
    rec, _ = apply_variant("sae", x, _ctx(sae, None))
    whole, _ = apply_variant("pos_mean_part_repair", x, _ctx(sae, None, position_basis=torch.eye(8)))
    none, _ = apply_variant("pos_mean_part_repair", x, _ctx(sae, None, position_basis=torch.zeros(0, 8)))
    two, _ = apply_variant("pos_mean_part_repair", x, _ctx(sae, None, position_basis=torch.eye(8)[:2]))
    torch.testing.assert_close(whole[:, 1:], x[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(none, rec)
    torch.testing.assert_close(two[..., :2], x[..., :2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(two[:, 1:, 2:], rec[:, 1:, 2:])
    with pytest.raises(VariantError, match="position-conditional mean subspace"):
        apply_variant("pos_mean_part_repair", x, _ctx(sae, None))


def test_mean_shift_pos_is_shift_pos_with_the_mean_by_position_in_place_of_w_pos():
    """Given W_pos as the means by position it is shift_pos exactly; in context (q = p) it is the SAE; without
    means the variant says what it needs."""
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 4, seed=1)
    x = torch.randn(2, 10, 8)
    w_pos = torch.randn(10, 8)
    shifted, _ = apply_variant("shift_pos", x, _ctx(sae, w_pos, ctx=4))
    mean_shifted, _ = apply_variant("mean_shift_pos", x, _ctx(sae, None, ctx=4, position_means=w_pos))
    torch.testing.assert_close(mean_shifted, shifted)
    rec, _ = apply_variant("sae", x, _ctx(sae, None, ctx=4))
    torch.testing.assert_close(mean_shifted[:, 1:4], rec[:, 1:4], atol=1e-5, rtol=1e-5)
    with pytest.raises(VariantError, match="mean by position"):
        apply_variant("mean_shift_pos", x, _ctx(sae, None))


def test_oracle_support_keeps_the_code_inside_the_pursuit_support_and_reports_fp_mass():
    """On an exact [I | -I] SAE the pursuit at each token's own L0 picks the SAE's own latents: nothing is cut
    (out = SAE(x), fp_mass 0, l0 the SAE's); unpatched positions are clean with NaN l0 and extras. The control's
    twin reads the control (VariantContext.full_sae)."""
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8, identity=True)
    x = torch.randn(2, 10, 8, generator=torch.Generator().manual_seed(1))
    keep = torch.zeros(2, 10, dtype=torch.bool)
    keep[0, 3] = True
    for name in ("oracle_support", "full_context_oracle_support"):
        out, l0, extras = apply_variant_ex(name, x, _ctx(sae, None, sae_l0=8.0), keep)
        with torch.no_grad():
            rec = sae.decode(sae.encode(x))
            own_l0 = (sae.encode(x) > 0).sum(-1).to(x.dtype)
        patched = ~keep
        patched[:, 0] = False
        torch.testing.assert_close(out[patched], rec[patched], atol=1e-5, rtol=1e-5)
        assert set(extras) == {"fp_mass", "unconverged"}
        assert (extras["fp_mass"][patched] == 0).all() and (extras["unconverged"][patched] == 0).all()
        assert torch.equal(l0[patched], own_l0[patched])
        assert torch.isnan(extras["fp_mass"][0, 3]) and torch.isnan(l0[:, 0]).all()
        assert torch.equal(out[0, 3], x[0, 3])


def test_oracle_support_of_the_control_needs_a_control_and_both_need_the_in_context_l0():
    sae = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8)
    ctx = VariantContext(sae=sae, w_pos=None, mean=None, ctx=8, sae_l0=4.0)
    with pytest.raises(VariantError, match="needs a full-context SAE"):
        apply_variant("full_context_oracle_support", torch.randn(1, 4, 8), ctx)
    for name in ("oracle_support", "full_context_oracle_support"):
        with pytest.raises(VariantError, match="mean in-context L0"):
            apply_variant(name, torch.randn(1, 4, 8), _ctx(sae, None))
