"""Fused attention for TransformerLens models: `scaled_dot_product_attention` instead of the materialised
[batch, heads, T, T] scores and pattern.

TransformerLens's eager attention forms the scores and the pattern as full tensors so that hooks can read
them. A forward that hooks neither can compute the same attention with
`torch.nn.functional.scaled_dot_product_attention(is_causal=True)`, whose memory per layer is linear in T
(a flash / memory-efficient kernel where the device has one) and which skips the masked upper triangle (on a
CPU, where the flash kernel masks inside 512-key blocks, by running the queries in chunks: `sdpa`).

`fused_attention(model)` temporarily replaces the forward of each block's attention module that it can
reproduce exactly; everything else stays TransformerLens's own code, called in TransformerLens's order:

- q, k, v: the module's own `calculate_qkv_matrices` (per-head inputs of `use_split_qkv_input` /
  `use_attn_in`, grouped key/value heads, `use_qk_norm`; `hook_q`, `hook_k`, `hook_v` and the q/k norms'
  hooks run there), then `clip_qkv`;
- rotary: the module's own `apply_rotary` (GPT-J or NeoX pairing, partial `rotary_dim`, NTK-by-parts,
  YaRN, dynamic NTK), through `hook_rot_q` / `hook_rot_k`; Qwen's log-n query scaling by the module's own
  `_apply_logn_scaling`;
- grouped-query attention: keys and values repeated per query head with `repeat_interleave`, as
  `GroupedQueryAttention` does (unless `ungroup_grouped_query_attention`);
- the scale: `1 / attn.attn_scale` whatever it is (`use_attn_scale`, `attn_scale`,
  `scale_attn_by_inverse_layer_idx`), as SDPA's `scale`; causal or bidirectional (`attention_dir`);
- `hook_z`, then the output projection exactly as TransformerLens writes it (`F.linear` with W_O laid out
  as d_model x (head d_head), or per-head results through `hook_result` with `use_attn_result`).

Hooks: every hook point the fused forward passes through fires as in TransformerLens (a hook on `hook_z`,
the splice kernels' replacement for hook_z SAEs, stays fused). `hook_attn_scores` and `hook_pattern` have
no counterpart: a call in which any hook is attached to them (or to any other hook point of the module the
fused forward does not pass through), or in which torch has global module hooks, runs TransformerLens's
forward instead, so a hook in use is never skipped. So does a call with a key/value cache, an attention
mask, an additive mask or a position bias (padding, generation, T5).

Refused (the module keeps TransformerLens's forward; `fused_refusal` gives the reason): attention classes
other than exactly `Attention` / `GroupedQueryAttention`; `load_in_4bit`; ALiBi and relative position
biases; local / sliding-window attention; a scores soft-cap; OLMo-family q/k norms; attention sinks; a
non-positive or non-finite scale. Numerically the fused path equals TransformerLens's to float rounding
(SDPA sums in another order and multiplies by 1/scale rather than dividing): ~1e-6 on float32 logits.
One documented difference: TransformerLens zeroes NaN entries of the pattern; where the input already holds
NaN or inf the two paths may differ (both are then garbage).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.modules import module

_OLMO_QK_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
_MARK = "_saeclaims_fused"
# Hook points (names relative to the attention module) that the fused forward passes through, as
# TransformerLens's does; hook_attn_input is never called by TransformerLens either. q_norm./k_norm.
# prefixes: the use_qk_norm RMSNorms' own hook points, run inside calculate_qkv_matrices.
PASSED_THROUGH = frozenset({"hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_z", "hook_result",
                            "hook_attn_input"})
_PASSED_PREFIXES = ("q_norm.", "k_norm.")


def _attention_classes() -> tuple[type, ...]:
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens.components import Attention, GroupedQueryAttention

    return Attention, GroupedQueryAttention


def _direction(attn) -> str:
    return getattr(attn, "_attention_dir_override", None) or attn.cfg.attention_dir


def fused_refusal(attn) -> str | None:
    """Why `attn` (a TransformerLens attention module) cannot run fused, or None when it can."""
    if type(attn) not in _attention_classes():
        return f"attention class {type(attn).__name__} is not TransformerLens's Attention/GroupedQueryAttention"
    cfg = attn.cfg
    soft_cap = getattr(cfg, "attn_scores_soft_cap", None)
    scale = attn.attn_scale
    checks = (
        (getattr(cfg, "load_in_4bit", False), "load_in_4bit"),
        (cfg.positional_embedding_type not in ("standard", "rotary", "shortformer"),
         f"positional_embedding_type {cfg.positional_embedding_type!r} (a bias on the scores; only standard, "
         "rotary and shortformer)"),
        (_direction(attn) not in ("causal", "bidirectional"), f"attention_dir {_direction(attn)!r}"),
        (attn.attn_type != "global", "local / sliding-window attention"),
        (soft_cap is not None and soft_cap > 0, "attn_scores_soft_cap (a soft-cap on the scores)"),
        (cfg.original_architecture in _OLMO_QK_NORM, "OLMo-family query/key normalisation"),
        (getattr(cfg, "use_attention_sinks", False), "use_attention_sinks"),
        (not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0), f"attention scale {scale!r}"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def fusable(model) -> bool:
    """Whether every block of `model` would run fused (so no layer forms [batch, heads, T, T] scores)."""
    return all(fused_refusal(b.attn) is None for b in model.blocks)


@dataclass
class FusedAttention:
    """What `fused_attention` did: the blocks it runs fused, the ones it refused (with the reason), the
    number of fused calls and, by reason, the calls that fell back to TransformerLens's forward."""

    layers: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    calls: int = 0
    fallbacks: Counter = field(default_factory=Counter)


def _skipped_points(attn) -> list:
    """The module's hook points that the fused forward does not pass through (scores, pattern, ...)."""
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens.hook_points import HookPoint

    return [m for name, m in attn.named_modules() if isinstance(m, HookPoint)
            and name not in PASSED_THROUGH and not name.startswith(_PASSED_PREFIXES)]


def any_hooked(points) -> bool:
    """Whether any of these hook points (modules) carries a forward or backward hook."""
    return any(p._forward_hooks or p._forward_pre_hooks or p._backward_hooks or p._backward_pre_hooks
               for p in points)


def global_module_hooks() -> bool:
    """Whether torch has global module hooks (they would see every module a fused forward skips)."""
    return bool(module._global_forward_hooks or module._global_forward_pre_hooks
                or module._global_backward_hooks or module._global_backward_pre_hooks)


def _make_forward(attn, eager, state: FusedAttention):
    skipped = _skipped_points(attn)
    cfg = attn.cfg
    rotary = cfg.positional_embedding_type == "rotary"
    repeat = 1 if cfg.ungroup_grouped_query_attention else getattr(attn, "repeat_kv_heads", 1)
    causal = _direction(attn) == "causal"

    def forward(query_input, key_input, value_input, past_kv_cache_entry=None, additive_attention_mask=None,
                attention_mask=None, position_bias=None):
        reason = ("kv cache" if past_kv_cache_entry is not None
                  else "attention mask" if attention_mask is not None or additive_attention_mask is not None
                  else "position bias" if position_bias is not None
                  else "hooks on the scores or pattern" if any_hooked(skipped)
                  else "global module hooks" if global_module_hooks() else None)
        if reason is not None:
            state.fallbacks[reason] += 1
            return eager(query_input, key_input, value_input, past_kv_cache_entry=past_kv_cache_entry,
                         additive_attention_mask=additive_attention_mask, attention_mask=attention_mask,
                         position_bias=position_bias)
        state.calls += 1
        q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)  # [batch, pos, head, d_head]
        if cfg.clip_qkv is not None:
            q = q.clamp(min=-cfg.clip_qkv, max=cfg.clip_qkv)
            k = k.clamp(min=-cfg.clip_qkv, max=cfg.clip_qkv)
            v = v.clamp(min=-cfg.clip_qkv, max=cfg.clip_qkv)
        if rotary:
            q = attn.hook_rot_q(attn.apply_rotary(q, 0, None))
            k = attn.hook_rot_k(attn.apply_rotary(k, 0, None))
        if cfg.use_logn_attn and not attn.training:
            q = attn._apply_logn_scaling(q, 0)
        if repeat > 1:
            k = torch.repeat_interleave(k, dim=2, repeats=repeat)
            v = torch.repeat_interleave(v, dim=2, repeats=repeat)
        if q.dtype != v.dtype or k.dtype != v.dtype:  # TransformerLens casts the pattern to v's dtype
            q, k = q.to(v.dtype), k.to(v.dtype)
        k, v = k.to(q.device), v.to(q.device)
        z = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal, 1.0 / attn.attn_scale)
        z = attn.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]
        return _output(attn, z)

    setattr(forward, _MARK, True)
    return forward


# On a CPU, SDPA's flash kernel walks keys in blocks of 512 and masks the causal upper triangle inside them, so at
# T <= 512 causal costs what full attention does. Queries in chunks of CPU_QUERY_CHUNK, each against only the
# keys it may see, skip most of the triangle: 20-30% less time at T 256-512 on this project's CPU.
CPU_QUERY_CHUNK = 64


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float) -> torch.Tensor:
    """`F.scaled_dot_product_attention` on [batch, heads, pos, d_head]; causal self-attention on a CPU runs a
    chunk of queries at a time (the same result: each query's softmax is over the same keys)."""
    t = q.shape[-2]
    if not causal or q.device.type != "cpu" or t <= CPU_QUERY_CHUNK or k.shape[-2] != t:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    for s in range(0, t, CPU_QUERY_CHUNK):
        e = min(t, s + CPU_QUERY_CHUNK)
        mask = None if s == 0 else _visible(s, e, q.device)
        out[..., s:e, :] = F.scaled_dot_product_attention(q[..., s:e, :], k[..., :e, :], v[..., :e, :],
                                                          attn_mask=mask, is_causal=s == 0, scale=scale)
    return out


@functools.lru_cache(maxsize=64)
def _visible(start: int, end: int, device: torch.device) -> torch.Tensor:
    """Which of keys [0, end) queries [start, end) may attend to (True: visible)."""
    return torch.ones(end - start, end, dtype=torch.bool, device=device).tril(start)


def _output(attn, z: torch.Tensor) -> torch.Tensor:
    """TransformerLens's output projection (AbstractAttention.forward after hook_z, without 4-bit)."""
    cfg = attn.cfg
    if not cfg.use_attn_result:
        w = attn.W_O.permute(2, 0, 1).reshape(cfg.d_model, cfg.n_heads * cfg.d_head)  # d_model (head d_head)
        b_o = attn.b_O
        if w.device != z.device:
            w = w.to(z.device)
        if b_o.device != z.device:
            b_o = b_o.to(z.device)
        if z.dtype != w.dtype:
            z = z.to(w.dtype)
        z = z.reshape(z.shape[0], z.shape[1], cfg.d_head * cfg.n_heads)
        if z.device.type == "mps":
            return torch.matmul(z, w.T) + b_o
        return F.linear(z, w, b_o)
    w = attn.W_O[None, None]  # 1 1 head d_head d_model
    if w.device != z.device:
        w = w.to(z.device)
    if z.dtype != w.dtype:
        z = z.to(w.dtype)
    result = attn.hook_result((z[..., None] * w).sum(-2))  # [batch, pos, head, d_model]
    return result.sum(2) + attn.b_O


@contextlib.contextmanager
def fused_attention(model, enabled: bool = True) -> Iterator[FusedAttention]:
    """Within the block, every supported attention module of `model` computes attention with SDPA.

    Yields a `FusedAttention` record. `enabled=False` changes nothing (and records nothing), so callers
    can switch the path with one flag. Nested use is harmless: modules already fused are left to the
    outer context.
    """
    state = FusedAttention()
    if not enabled:
        yield state
        return
    patched = []
    try:
        for i, block in enumerate(model.blocks):
            attn = block.attn
            own = attn.__dict__.get("forward")
            if own is not None and getattr(own, _MARK, False):
                state.layers.append(i)  # fused by an outer context
                continue
            reason = fused_refusal(attn)
            if reason is not None:
                state.refused[i] = reason
                continue
            attn.forward = _make_forward(attn, attn.forward, state)
            patched.append((attn, own))
            state.layers.append(i)
        yield state
    finally:
        for attn, own in reversed(patched):
            if own is None:
                del attn.__dict__["forward"]
            else:
                attn.forward = own
