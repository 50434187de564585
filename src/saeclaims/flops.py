"""Floating-point operation counts for the splice workload, batched and naive.

Matrix products only (2 FLOPs per multiply-add). Attention scores and pattern-times-values are counted
over the full T x T square that TransformerLens's eager attention computes before masking, or, for the
fused path (attention.py: SDPA with is_causal, which skips the masked blocks), over the (T + 1) / 2 keys
a query sees on average. The ratio naive/batched is the speed-up that prefix reuse allows (and, with
`attention="causal"`, `shared_sae=True` and `batch_seqs`, what the batched kernels actually execute: causal
attention, one SAE pass shared by the variants that encode x itself, and one row for a variant alike in
every sequence of a batch); the unembedding is paid by every variant, so it stays well under the number of
variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .subjects import start_layer
from .subjects.core import replaced_inside_block
from .variants import variant

# From the variant registry: `shares_sae_input` (the batched kernels encode the hook's activation once for all
# of them, splicing.SharedRoundtrip) and `alike_at_residual` (at a residual hook between blocks nothing of the
# tokens is left: one row per batch, splicing.same_in_every_sequence).


@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    seq_len: int
    d_sae: int

    @classmethod
    def of(cls, subject) -> Shape:
        c = subject.model.cfg
        d_sae = next(iter(subject.saes.values())).cfg.d_sae
        return cls(c.n_layers, c.d_model, c.d_mlp, c.d_vocab, subject.seq_len, d_sae)


def layer_flops(s: Shape, attention: str = "square") -> float:
    """One transformer block, per token: q, k, v, o projections, the MLP, and attention over the full
    square ("square", TransformerLens's eager path) or the causal triangle ("causal", fused SDPA)."""
    d, t = s.d_model, s.seq_len
    keys = {"square": t, "causal": (t + 1) / 2}[attention]
    return 2 * (4 * d * d + 2 * d * s.d_mlp + 2 * keys * d)


def attention_share(s: Shape, attention: str = "square") -> float:
    """The share of a block's FLOPs that grows with T (scores and pattern-times-values)."""
    keys = {"square": s.seq_len, "causal": (s.seq_len + 1) / 2}[attention]
    return 2 * 2 * keys * s.d_model / layer_flops(s, attention)


def unembed_flops(s: Shape) -> float:
    return 2 * s.d_model * s.d_vocab


def sae_flops(s: Shape) -> float:
    return 2 * 2 * s.d_model * s.d_sae


def sae_passes(variants: Sequence[str], shared_sae: bool = False) -> int:
    """SAE encode/decode round trips per hook: one per SAE variant, or with the batched kernels' sharing
    one for all that share the SAE's input."""
    n = sum(variant(v).needs_sae for v in variants)
    if shared_sae:
        n -= max(0, sum(variant(v).shares_sae_input for v in variants) - 1)
    return n


def workload_flops(s: Shape, hooks: Sequence[str], variants: Sequence[str], n_tokens: int,
                   attention: str = "square", shared_sae: bool = False, batch_seqs: int = 1) -> dict[str, float]:
    """FLOPs of the whole workload both ways, for n_tokens tokens; `hooks` are hook names (one per SAE:
    Subject.hook_of). The naive way is always TransformerLens's eager attention with one SAE pass per
    variant and a clean forward per hook; `attention`, `shared_sae` and `batch_seqs` (sequences per batched
    call: a variant alike at residual hooks runs one of them there) describe the batched way, which
    forms the clean pass and its unembedding once. A hook inside a block counts that whole block (its suffix
    run starts at the block's input)."""
    naive_saes = len(hooks) * sae_passes(variants) * sae_flops(s)
    full = s.n_layers * layer_flops(s) + unembed_flops(s)
    naive = len(hooks) * (1 + len(variants)) * full + naive_saes
    layer = layer_flops(s, attention)
    batched = s.n_layers * layer + unembed_flops(s) + len(hooks) * sae_passes(variants, shared_sae) * sae_flops(s)
    for h in hooks:
        for v in variants:
            rows = 1 / batch_seqs if variant(v).alike_at_residual and not replaced_inside_block(h) else 1
            batched += rows * ((s.n_layers - start_layer(h)) * layer + unembed_flops(s))
    return {"naive": naive * n_tokens, "batched": batched * n_tokens, "bound": naive / batched}
