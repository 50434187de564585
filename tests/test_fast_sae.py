"""The SAE fast path (fast_sae.py) against sae_lens's own SAE.encode/decode on every architecture it takes
(StandardSAE/ReLU, JumpReLUSAE, TopKSAE with and without decoder-norm rescaling, with and without b_dec applied to
the input), and the SAEs it must leave to sae_lens.

float32 on a CPU: bit-identical (the same operations in the same order), so a CPU run's reports do not change.
bf16: a latent turns on or off only where sae_lens's float32 pre-activation lies within bf16's rounding bound
(2^-7 (|x|.|W| + |b|)) of where it switches (0, the JumpReLU threshold, or for TopK the k-th against the (k+1)-th
pre-activation), and on tokens whose active latents agree the reconstruction's relative error is at most 2^-5
(16 bf16 units of 2^-9: input, weights and codes are each rounded once). Both bounds come from bf16's unit
roundoff, not from a run. A TopK swap at the k-th place moves that token's reconstruction by a whole latent, which
is what any perturbation of that size does to TopK; the guard test (test_precision.py) judges its effect on the
measured statistics.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.fast_sae import FastSAE, architecture_of, fast
from saeclaims.variants import count_active

BF16_RECON_RTOL = 2.0**-5
ARCHS = {
    "standard": ("StandardSAE", {}),
    "jumprelu": ("JumpReLUSAE", {}),
    "topk": ("TopKSAE", {"k": 8}),
    "topk_rescaled": ("TopKSAE", {"k": 8, "rescale_acts_by_decoder_norm": True}),
}


def make_sae(arch: str, d_in: int = 24, d_sae: int = 64, seed: int = 0, b_dec_in: bool = True, **cfg_extra):
    import sae_lens

    cls, extra = ARCHS[arch]
    cfg = getattr(sae_lens, f"{cls}Config")(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=b_dec_in,
                                              **extra, **cfg_extra)
    cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    sae = getattr(sae_lens, cls)(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.2))
        if arch == "jumprelu":
            sae.threshold.abs_()
    return sae.eval()


@settings(max_examples=25, deadline=None)
@given(arch=st.sampled_from(sorted(ARCHS)), seed=st.integers(0, 2**16), b_dec_in=st.booleans(),
       lead=st.sampled_from([(7,), (2, 5), (3, 1, 4)]))
def test_float32_fast_path_is_sae_lens_exactly(arch, seed, b_dec_in, lead):
    sae = make_sae(arch, seed=seed, b_dec_in=b_dec_in)
    f = fast(sae)
    assert isinstance(f, FastSAE) and f.dtype == torch.float32
    x = torch.randn(*lead, 24, generator=torch.Generator().manual_seed(seed + 1)) * 2
    with torch.no_grad():
        want_codes = sae.encode(x)
        codes = f.encode(x)
        torch.testing.assert_close(codes, want_codes, rtol=0, atol=0)  # CPU: bit-identical
        torch.testing.assert_close(f.decode(codes), sae.decode(want_codes), rtol=0, atol=0)
        assert torch.equal(f.active_count(codes), count_active(want_codes))


def _preactivation_and_bound(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sae_lens's float32 pre-activations (TopK's rescaled as it ranks them) and a bound on how far bf16 moves each:
    rounding the input and the weights (one bf16 unit, 2^-9, each) and the product (one more) moves x.W + b by at
    most 2^-7 (|x|.|W| + |b|), with room to spare."""
    with torch.no_grad():
        sae_in = sae.process_sae_in(x)
        pre = sae_in @ sae.W_enc + sae.b_enc
        bound = 2.0**-7 * (sae_in.abs() @ sae.W_enc.abs() + sae.b_enc.abs())
        if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
            norm = sae.W_dec.norm(dim=-1)
            pre, bound = pre * norm, bound * norm
    return pre, bound


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_bf16_fast_path_is_sae_lens_within_bf16_rounding(arch):
    sae = make_sae(arch, d_in=64, d_sae=512, seed=3)
    f = fast(sae, torch.bfloat16)
    x = torch.randn(400, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want_codes = sae.encode(x)
        want = sae.decode(want_codes)
        codes = f.encode(x)
        got = f.decode(codes)
    assert codes.dtype == torch.bfloat16 and got.dtype == torch.float32
    pre, bound = _preactivation_and_bound(sae, x)
    flips = (codes != 0) ^ (want_codes != 0)
    if arch.startswith("topk"):  # a token may pick another latent only where its k-th and (k+1)-th are that close
        top = pre.topk(sae.cfg.k + 1, dim=-1).values
        close = (top[:, -2] - top[:, -1]) <= 2 * bound.max(-1).values
        near_zero = ((top[:, :-1].abs() <= bound.max(-1, keepdim=True).values).any(-1))
        assert not (flips.any(-1) & ~close & ~near_zero).any()
    else:  # a code may switch only within the bound of where it switches: 0, or the JumpReLU threshold
        edge = pre.abs() <= bound
        if arch == "jumprelu":
            edge |= (pre - sae.threshold).abs() <= bound
        assert not (flips & ~edge).any(), int((flips & ~edge).sum())
    same = ~flips.any(-1)  # tokens whose active latents agree: the reconstruction within 2^-5
    assert same.float().mean() > 0.5  # the comparison below is not vacuous
    rel = ((got - want).norm(dim=-1) / want.norm(dim=-1))[same]
    assert rel.max() <= BF16_RECON_RTOL, float(rel.max())


def test_weights_are_recached_when_a_parameter_changes_in_place():
    sae = make_sae("standard")
    f = fast(sae, torch.bfloat16)
    x = torch.randn(5, 24)
    before = f.encode(x)
    with torch.no_grad():
        sae.b_enc.add_(10.0)
    assert fast(sae, torch.bfloat16) is f
    torch.testing.assert_close(f.encode(x).float(), sae.encode(x), atol=0.1, rtol=2.0**-6)
    assert not torch.equal(f.encode(x), before)


@pytest.mark.parametrize("case", ["layer_norm", "hook", "gated", "training", "hook_z", "patched"])
def test_what_the_fast_path_does_not_reproduce_stays_with_sae_lens(case):
    import sae_lens

    if case == "layer_norm":
        sae = make_sae("standard", normalize_activations="layer_norm")
    elif case == "hook":
        sae = make_sae("jumprelu")
        sae.hook_sae_acts_pre.add_hook(lambda act, hook: act * 2)
    elif case == "gated":
        sae = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=8, d_sae=16))
    elif case == "training":
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in=8, d_sae=16))
    elif case == "patched":  # encode replaced on the instance (tests count calls this way)
        sae = make_sae("standard")
        sae.encode = lambda x, orig=sae.encode: orig(x)
    else:
        cfg = sae_lens.TopKSAEConfig(d_in=8, d_sae=16, k=2, reshape_activations="hook_z")
        cfg.metadata.hook_name = "blocks.0.attn.hook_z"
        sae = sae_lens.TopKSAE(cfg)
    assert architecture_of(sae) is None
    assert fast(sae, torch.bfloat16) is sae


def test_a_hook_added_later_turns_the_fast_path_off():
    sae = make_sae("topk")
    assert isinstance(fast(sae), FastSAE)
    sae.hook_sae_recons.add_hook(lambda act, hook: act)
    assert fast(sae) is sae
    sae.reset_hooks()
    assert isinstance(fast(sae), FastSAE)
