"""The fused attention path (attention.py) against TransformerLens's own attention: equal outputs on the
configurations it supports, TransformerLens's forward untouched on those it refuses, every hook in use
either fired in place or answered by a per-call fallback, and no [batch, heads, T, T] tensor when fused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.attention import PASSED_THROUGH, fusable, fused_attention, fused_refusal

ATOL = 1e-5


def make_model(seed: int = 0, scale: float = 0.2, **overrides):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_ctx=24, d_vocab=40, act_fn="gelu_new",
               normalization_type="LN", positional_embedding_type="standard", seed=seed)
    cfg.update(overrides)
    if cfg.get("attn_only"):
        cfg.pop("d_mlp", None)
    model = HookedTransformer(HookedTransformerConfig(**cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w") and p.ndim == 1:  # norm gains near 1
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (scale if p.ndim > 1 else 0.05))
    return model.eval()


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}")


def _not_patched(model) -> bool:
    return all("forward" not in b.attn.__dict__ for b in model.blocks)


def check_equal(model, batch: int, t: int, seed: int) -> None:
    """Logits of a full forward and final residuals of every start_at_layer suffix run, fused vs eager;
    every block fused, no call fallen back, TransformerLens's forward restored afterwards."""
    n = model.cfg.n_layers
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, model.cfg.d_vocab, (batch, t), generator=g)
    with torch.no_grad():
        ref = model(toks)
        with fused_attention(model) as state:
            out = model(toks)
        _close(out, ref, "logits")
        assert state.layers == list(range(n)) and not state.refused
        assert state.calls == n and not state.fallbacks, state
        for start in range(n):
            x = torch.randn(batch, t, model.cfg.d_model, generator=g)
            ref = model(x, start_at_layer=start, stop_at_layer=n)
            with fused_attention(model):
                out = model(x, start_at_layer=start, stop_at_layer=n)
            _close(out, ref, f"suffix from layer {start}")
    assert _not_patched(model)


configs = st.fixed_dictionaries({
    "n_layers": st.integers(1, 3),
    "n_heads": st.sampled_from([1, 2, 4]),
    "d_head": st.sampled_from([4, 8, 16]),
    "d_model": st.sampled_from([8, 16, 24]),
    "n_ctx": st.integers(2, 20),
    # without any normalisation (and with the scale off) random weights blow the residual up layer after
    # layer and attention becomes ill-conditioned: any two summation orders differ by more than 1e-5 there
    "normalization_type": st.sampled_from(["LN", "LNPre", "RMS", "RMSPre"]),
    "act_fn": st.sampled_from(["gelu_new", "relu", "silu", "gelu"]),
    "positional_embedding_type": st.sampled_from(["standard", "rotary", "shortformer"]),
    "attention_dir": st.sampled_from(["causal", "causal", "bidirectional"]),
    "attn_only": st.booleans(),
    "parallel_attn_mlp": st.booleans(),
    "gated_mlp": st.booleans(),
    "gqa": st.sampled_from(["none", "grouped", "ungrouped"]),
    "scale": st.sampled_from(["default", "off", "custom", "by_layer"]),
    "qkv_input": st.sampled_from(["plain", "plain", "split", "attn_in"]),
    "use_attn_result": st.booleans(),
    "use_qk_norm": st.booleans(),
    "clip_qkv": st.sampled_from([None, None, 0.4]),
    "rotary_adjacent_pairs": st.booleans(),
    "partial_rotary": st.booleans(),
    "qwen": st.booleans(),  # log-n query scaling and dynamic NTK past a short training length
})


def build(cfg: dict, seed: int):
    cfg = dict(cfg)
    gqa, scale, partial = cfg.pop("gqa"), cfg.pop("scale"), cfg.pop("partial_rotary")
    qkv_input, qwen = cfg.pop("qkv_input"), cfg.pop("qwen")
    if gqa != "none" and cfg["n_heads"] > 1:
        cfg["n_key_value_heads"] = cfg["n_heads"] // 2
        cfg["ungroup_grouped_query_attention"] = gqa == "ungrouped"
    if scale == "off":
        cfg["use_attn_scale"] = False
    elif scale == "custom":
        cfg["attn_scale"] = 3.7
    elif scale == "by_layer":
        cfg["scale_attn_by_inverse_layer_idx"] = True
    if gqa == "grouped" and (qkv_input == "attn_in" or qkv_input == "split" and cfg["positional_embedding_type"]
                             == "shortformer"):  # TransformerLens itself cannot run these
        qkv_input = "plain"
    if qkv_input == "split":
        cfg["use_split_qkv_input"] = True
    elif qkv_input == "attn_in":
        cfg["use_attn_in"] = True
    if cfg["positional_embedding_type"] == "rotary":
        if partial and cfg["d_head"] >= 8:
            cfg["rotary_dim"] = cfg["d_head"] // 2
        if qwen:
            cfg.update(use_logn_attn=True, use_dynamic_ntk_rope=True, train_seq_length=3)
    if cfg["gated_mlp"] and cfg["act_fn"] not in ("silu", "gelu"):
        cfg["gated_mlp"] = False
    if cfg["attn_only"] or cfg["gated_mlp"]:
        cfg["parallel_attn_mlp"] = False
    return make_model(seed, d_mlp=2 * cfg["d_model"], d_vocab=30, **cfg)


@settings(max_examples=30, deadline=None)
@given(cfg=configs, seed=st.integers(0, 10_000), batch=st.integers(1, 3), data=st.data())
def test_fused_equals_transformer_lens(cfg, seed, batch, data):
    """Random models over every option the fused path reproduces, combined at random; on a CPU the causal
    queries go in chunks of a drawn size (attention.sdpa), so chunk boundaries fall anywhere."""
    from saeclaims import attention

    model = build(cfg, seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention, "CPU_QUERY_CHUNK", data.draw(st.integers(1, 30), label="query chunk"))
        check_equal(model, batch, data.draw(st.integers(1, model.cfg.n_ctx), label="seq_len"), seed)


@pytest.mark.parametrize("t,chunk", [(64, 64), (65, 64), (130, 64), (200, 64), (512, 64), (7, 3)])
def test_cpu_query_chunks_equal_one_sdpa_call(monkeypatch, t, chunk):
    """Causal self-attention in query chunks equals one SDPA call (uneven last chunk included); bidirectional
    attention and queries against a longer key sequence are one call."""
    import torch.nn.functional as F

    from saeclaims import attention

    monkeypatch.setattr(attention, "CPU_QUERY_CHUNK", chunk)
    g = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(2, 3, t, 8, generator=g) for _ in range(3))
    for causal in (True, False):
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3)
        torch.testing.assert_close(attention.sdpa(q, k, v, causal, 0.3), ref, atol=1e-6, rtol=1e-6)
    calls = []
    orig = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(kw.get("attn_mask")) or orig(*a, **kw))
    attention.sdpa(q, k, v, True, 0.3)
    assert len(calls) == (1 if t <= chunk else -(-t // chunk)) and calls[0] is None
    calls.clear()
    attention.sdpa(q, k, v, False, 0.3)
    assert len(calls) == 1


SUPPORTED = {
    "gpt2-like": {},
    "no scale": dict(use_attn_scale=False),
    "attn_scale": dict(attn_scale=3.7),
    "scale by layer": dict(scale_attn_by_inverse_layer_idx=True),
    "rotary neox partial": dict(positional_embedding_type="rotary", rotary_dim=4),
    "rotary gpt-j": dict(positional_embedding_type="rotary", rotary_adjacent_pairs=True),
    "rotary yarn": dict(positional_embedding_type="rotary", use_yarn_rope=True, yarn_factor=4.0,
                        yarn_original_max_position_embeddings=8),
    "qwen log-n + dynamic ntk": dict(positional_embedding_type="rotary", use_logn_attn=True,
                                     use_dynamic_ntk_rope=True, train_seq_length=4),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "gqa": dict(n_heads=4, d_head=4, n_key_value_heads=2),
    "gqa ungrouped": dict(n_heads=4, d_head=4, n_key_value_heads=2, ungroup_grouped_query_attention=True),
    "gqa split qkv": dict(n_heads=4, d_head=4, n_key_value_heads=2, use_split_qkv_input=True),
    "use_split_qkv_input": dict(use_split_qkv_input=True),
    "use_attn_in": dict(use_attn_in=True),
    "use_attn_result": dict(use_attn_result=True),
    "use_qk_norm": dict(use_qk_norm=True, normalization_type="RMS"),
    "clip_qkv": dict(clip_qkv=0.3),
    "bidirectional": dict(attention_dir="bidirectional"),
    "parallel attn mlp": dict(parallel_attn_mlp=True),
    "attn only": dict(attn_only=True),
}


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_each_supported_option_equals_transformer_lens(name):
    """Each option on its own (the property test combines them at random)."""
    model = make_model(seed=3, **SUPPORTED[name])
    assert fusable(model)
    check_equal(model, batch=2, t=14, seed=4)


REFUSED = {
    "alibi": (dict(positional_embedding_type="alibi"), "positional_embedding_type"),
    "local_window": (dict(use_local_attn=True, window_size=3, attn_types=["local", "local"]), "local"),
    "softcap": (dict(attn_scores_soft_cap=5.0), "soft-cap"),
    "olmo_qk_norm": (dict(original_architecture="Olmo2ForCausalLM"), "OLMo"),
    "sinks": (dict(use_attention_sinks=True), "use_attention_sinks"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_configuration_keeps_transformer_lens_attention(name):
    overrides, reason = REFUSED[name]
    model = make_model(**overrides)
    assert not fusable(model)
    toks = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(toks)
        with fused_attention(model) as state:
            assert _not_patched(model)
            out = model(toks)
    assert state.layers == [] and state.calls == 0
    assert set(state.refused) == {0, 1} and all(reason in r for r in state.refused.values()), state.refused
    assert fused_refusal(model.blocks[0].attn) == state.refused[0]
    assert torch.equal(out, ref)


def test_other_attention_classes_and_local_layers_are_refused_per_block():
    from transformer_lens.components import Attention

    class Custom(Attention):
        pass

    model = make_model()
    model.blocks[1].attn.__class__ = Custom
    with fused_attention(model) as state:
        assert "forward" in model.blocks[0].attn.__dict__ and "forward" not in model.blocks[1].attn.__dict__
    assert state.layers == [0] and "Custom" in state.refused[1]
    assert not fusable(model)
    mixed = make_model(use_local_attn=True, window_size=3, attn_types=["global", "local"])  # GPT-Neo style
    toks = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = mixed(toks)
        with fused_attention(mixed) as state:
            out = mixed(toks)
    assert state.layers == [0] and "local" in state.refused[1] and state.calls == 1
    _close(out, ref, "logits")


def _all_hook_model():
    """Rotary, use_attn_result and q/k norms: an attention module with every kind of hook point."""
    return make_model(positional_embedding_type="rotary", use_attn_result=True, use_qk_norm=True,
                      normalization_type="RMS")


ATTN_POINTS = sorted(n for n, m in _all_hook_model().blocks[0].attn.named_modules()
                     if type(m).__name__ == "HookPoint")


@pytest.mark.parametrize("point", ATTN_POINTS)
def test_a_hook_in_use_is_never_skipped(point):
    """A hook that records and changes its activation, on each hook point inside block 0's attention: the
    fused run fires it exactly as TransformerLens does (same activations seen, same output), either in
    place (the points the fused forward passes through, hook_z among them: block 0 stays fused) or by
    running TransformerLens's forward for that call (scores, pattern)."""
    model = _all_hook_model()
    toks = torch.randint(0, 40, (2, 11), generator=torch.Generator().manual_seed(5))
    seen = {True: [], False: []}

    def run(fused):
        def hook(act, hook):
            seen[fused].append(act.detach().clone())
            return act * 1.5

        with torch.no_grad(), fused_attention(model, enabled=fused) as state:
            out = model.run_with_hooks(toks, fwd_hooks=[(f"blocks.0.attn.{point}", hook)])
        return out, state

    ref, _ = run(False)
    out, state = run(True)
    passed = point in PASSED_THROUGH or point.startswith(("q_norm.", "k_norm."))
    assert len(seen[True]) == len(seen[False]) >= 1
    for a, b in zip(seen[True], seen[False]):
        _close(a, b, f"{point} activation")
    _close(out, ref, "logits")
    assert state.calls == (2 if passed else 1), state
    assert state.fallbacks == ({} if passed else {"hooks on the scores or pattern": 1})
    assert _not_patched(model)


def test_run_with_cache_reads_the_true_pattern():
    """run_with_cache hooks every point: every block falls back, the cache holds TransformerLens's pattern."""
    model = make_model()
    toks = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_logits, ref = model.run_with_cache(toks)
        with fused_attention(model) as state:
            logits, cache = model.run_with_cache(toks)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(cache["blocks.1.attn.hook_pattern"], ref["blocks.1.attn.hook_pattern"])
    assert state.calls == 0 and state.fallbacks == {"hooks on the scores or pattern": 2}


def test_global_module_hooks_fall_back():
    model = make_model()
    toks = torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(2))
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m)))
    try:
        with torch.no_grad(), fused_attention(model) as state:
            model(toks)
    finally:
        handle.remove()
    assert state.calls == 0 and state.fallbacks == {"global module hooks": 2}
    assert sum(c.__name__ == "HookPoint" for c in calls) > 0


def test_masks_and_kv_cache_fall_back_per_call():
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    model = make_model()
    toks = torch.randint(1, 40, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(toks)
    mask[0, :3] = 0
    with torch.no_grad():
        ref_mask = model(toks, attention_mask=mask)
        kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 2)
        ref_kv = model(toks, past_kv_cache=kv, attention_mask=torch.ones_like(toks))
        with fused_attention(model) as state:
            out_mask = model(toks, attention_mask=mask)
            kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 2)
            out_kv = model(toks, past_kv_cache=kv, attention_mask=torch.ones_like(toks))
    assert torch.equal(out_mask, ref_mask) and torch.equal(out_kv, ref_kv)
    assert state.fallbacks == {"attention mask": 2, "kv cache": 2} and state.calls == 0


def test_switch_off_and_nesting():
    model = make_model()
    with fused_attention(model, enabled=False) as off:
        assert _not_patched(model)
    assert off.layers == [] and off.refused == {}
    with fused_attention(model) as outer:
        fwd = model.blocks[0].attn.forward
        with fused_attention(model) as inner:
            assert model.blocks[0].attn.forward is fwd
        assert model.blocks[0].attn.forward is fwd  # the inner context leaves the outer one's patch
    assert outer.layers == inner.layers == [0, 1]
    assert _not_patched(model)
    with pytest.raises(RuntimeError, match="boom"), fused_attention(model):
        raise RuntimeError("boom")
    assert _not_patched(model)


def test_no_attention_scores_are_formed_when_fused():
    """TransformerLens forms [batch, heads, T, T] in calculate_attention_scores (and the pattern from
    it); the fused path never calls it, in a suffix run as in a full one."""
    model = make_model(n_layers=3)
    calls = []
    for b in model.blocks:
        orig = b.attn.calculate_attention_scores

        def counted(q, k, orig=orig):
            calls.append(q.shape)
            return orig(q, k)

        b.attn.calculate_attention_scores = counted
    x = torch.randn(4, 16, 16)
    with torch.no_grad():
        with fused_attention(model):
            model(x, start_at_layer=1, stop_at_layer=3)
            model(torch.randint(0, 40, (4, 16)))
        assert calls == []
        model(x, start_at_layer=1, stop_at_layer=3)
    assert len(calls) == 2


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _peak(fn) -> int:
    fn()  # warm-up: allocator pools, kernels
    base = _rss("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    fn()
    return _rss("VmHWM:") - base


@pytest.mark.skipif(not (os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").exists()),
                    reason="no way to read peak resident memory on this platform")
def test_fused_suffix_peak_memory_is_linear_in_t():
    """One block on 8 x 1024 tokens: the eager path's scores alone are 8 x 4 x 1024^2 floats (128 MiB);
    the fused path's peak stays a small fraction of that."""
    model = make_model(n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=1024)
    x = torch.randn(8, 1024, 32)
    scores = 4 * 8 * 4 * 1024 * 1024

    def run(fused):
        def go():
            with torch.no_grad(), fused_attention(model, enabled=fused):
                model(x, start_at_layer=0, stop_at_layer=1)
        return go

    eager, fused = _peak(run(False)), _peak(run(True))
    assert eager >= scores, f"eager {eager / 2**20:.1f} MiB"
    assert fused < scores / 8, f"fused {fused / 2**20:.1f} MiB"
