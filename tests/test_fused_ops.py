"""One-kernel GELUs and layer norms (fused_ops.py) against TransformerLens's own: equal to float rounding, hooks
in use never skipped, everything restored afterwards."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm
from transformer_lens.utilities.activation_functions import gelu_fast, gelu_new

from saeclaims.fused_ops import fused_norms_and_activations, tanh_gelu


def _model(act_fn="gelu_new", norm="LN", dtype=torch.float32, seed=0, n_layers=2):
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=16, n_heads=2, d_head=8, d_mlp=64, n_ctx=24, d_vocab=40,
                                  act_fn=act_fn, normalization_type=norm, seed=seed, dtype=dtype)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 0.2)).to(p.dtype))
    return model.eval()


@pytest.mark.parametrize("ref", [gelu_new, gelu_fast], ids=["gelu_new", "gelu_fast"])
def test_tanh_gelu_equals_transformer_lens_gelus(ref):
    x = torch.cat([torch.randn(10_000) * 3, torch.linspace(-30, 30, 1001), torch.tensor([0.0, -0.0, 1e-8, -1e-8])])
    torch.testing.assert_close(tanh_gelu(x), ref(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("ref", [gelu_new, gelu_fast], ids=["gelu_new", "gelu_fast"])
def test_tanh_gelu_at_the_extremes_and_under_autograd(ref):
    """The CPU sigmoid form agrees where x^3 overflows and at +-inf (NaN where TransformerLens's is NaN); with
    a gradient wanted it is the one-kernel GELU, whose backward torch knows."""
    x = torch.tensor([1e13, -1e13, 3e38, -3e38, float("inf"), float("-inf"), float("nan")])
    torch.testing.assert_close(tanh_gelu(x), ref(x), equal_nan=True)
    g = torch.linspace(-5, 5, 101, requires_grad=True)
    tanh_gelu(g).sum().backward()
    h = g.detach().clone().requires_grad_(True)
    ref(h).sum().backward()
    torch.testing.assert_close(g.grad, h.grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cls", [LayerNormPre, LayerNorm])
@pytest.mark.parametrize("shape", [(3, 7, 16), (3, 7, 2, 16)], ids=["resid", "per_head"])
def test_layer_norms_equal_transformer_lens(cls, shape):
    model = _model(norm="LN" if cls is LayerNorm else "LNPre")
    norm = model.blocks[0].ln1
    assert type(norm) is cls
    x = torch.randn(shape) * 4 + 1
    ref = norm(x)
    with fused_norms_and_activations(model) as state:
        fused = norm(x)
    assert state.norms == 2 * 2 + 1 and state.activations == 2
    torch.testing.assert_close(fused, ref, atol=1e-6, rtol=1e-6)


# float64: the same function, to rounding (measured: 9e-12 on logits up to 8 over 40 seeds). float32: rounding
# amplified by each norm's 1/scale on these large random weights; TransformerLens's own float32 forward is up to
# 1.5e-5 off its float64 one here, and the fused one up to 2.7e-5 off TransformerLens's (40 seeds).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 5e-5}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), act_fn=st.sampled_from(["gelu_new", "gelu_fast", "relu", "gelu"]),
       norm=st.sampled_from(["LN", "LNPre"]), start=st.integers(0, 2),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_model_forward_equals_transformer_lens(seed, act_fn, norm, start, dtype):
    """Logits of a whole forward and of a start_at_layer suffix run, fused vs TransformerLens (TOLERANCE,
    absolute and relative); only the tanh GELUs are swapped (relu and erf gelu stay the model's)."""
    model = _model(act_fn, norm, dtype=dtype, seed=seed)
    toks = torch.randint(0, 40, (3, 24), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        resid = model.run_with_cache(toks)[1][f"blocks.{min(start, 1)}.hook_resid_pre"]
        ref = (model(toks), model(resid, start_at_layer=min(start, 1)))
        with fused_norms_and_activations(model) as state:
            fused = (model(toks), model(resid, start_at_layer=min(start, 1)))
    assert state.activations == (2 if act_fn in ("gelu_new", "gelu_fast") else 0)
    assert state.norms == 5
    for a, b in zip(fused, ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


def test_a_hooked_norm_runs_transformer_lens_forward():
    """A hook on hook_scale or hook_normalized sees what TransformerLens computes: that call is not fused."""
    model = _model(norm="LNPre")
    toks = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    for point in ("blocks.1.ln2.hook_scale", "blocks.0.ln1.hook_normalized", "ln_final.hook_scale"):
        seen = {}

        def keep(act, hook, key=None, seen=seen):
            seen[key] = act.detach().clone()

        with torch.no_grad():
            ref = model.run_with_hooks(toks, fwd_hooks=[(point, lambda a, hook: keep(a, hook, "eager"))])
            with fused_norms_and_activations(model):
                out = model.run_with_hooks(toks, fwd_hooks=[(point, lambda a, hook: keep(a, hook, "fused"))])
        torch.testing.assert_close(seen["fused"], seen["eager"], atol=1e-5, rtol=1e-5)  # earlier layers fused
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_global_module_hooks_run_transformer_lens_forward():
    model = _model(norm="LNPre")
    norm = model.blocks[0].ln1
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    try:
        with fused_norms_and_activations(model):
            norm(torch.randn(2, 3, 16))
    finally:
        handle.remove()
    assert "HookPoint" in calls  # hook_scale / hook_normalized ran: TransformerLens's forward


def test_other_dtypes_and_norms_keep_transformer_lens(monkeypatch):
    """A bfloat16 model (TransformerLens upcasts inside its norm) and RMSNorm stay TransformerLens's own: no
    F.layer_norm call (a float32 model's norm makes one)."""
    import torch.nn.functional as F

    calls = []
    orig = F.layer_norm
    monkeypatch.setattr(F, "layer_norm", lambda *a, **kw: calls.append(a[0].dtype) or orig(*a, **kw))
    model = _model(norm="LNPre", dtype=torch.bfloat16)
    norm = model.blocks[0].ln1
    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    ref = norm(x)
    with fused_norms_and_activations(model):
        out = norm(x)
        norm(x.float())  # not the model's dtype either
    assert not calls and torch.equal(out, ref)
    f32 = _model(norm="LNPre")
    with fused_norms_and_activations(f32):
        f32.blocks[0].ln1(torch.randn(2, 5, 16))
    assert calls == [torch.float32]
    rms = _model(norm="RMS")
    assert type(rms.blocks[0].ln1) is RMSNorm
    with fused_norms_and_activations(rms) as state:
        assert state.norms == 0 and "forward" not in rms.blocks[0].ln1.__dict__


def test_everything_is_restored_and_nesting_is_harmless():
    model = _model()
    with fused_norms_and_activations(model) as outer:
        with fused_norms_and_activations(model) as inner:
            assert inner.norms == 0 and inner.activations == 0
        assert model.blocks[0].mlp.act_fn is tanh_gelu and "forward" in model.blocks[0].ln1.__dict__
    assert outer.norms == 5 and outer.activations == 2
    assert model.blocks[0].mlp.act_fn is gelu_new
    assert all("forward" not in m.__dict__ for m in model.modules())
    with fused_norms_and_activations(model, enabled=False) as off:
        assert off.norms == 0 and model.blocks[0].mlp.act_fn is gelu_new


def test_restored_after_an_error():
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        with fused_norms_and_activations(model):
            raise RuntimeError("boom")
    assert model.blocks[1].mlp.act_fn is gelu_new and "forward" not in model.ln_final.__dict__
