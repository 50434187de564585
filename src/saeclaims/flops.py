"""Floating-point operation counts for the splice workload, batched and naive.

Matrix products only (2 FLOPs per multiply-add); attention scores are counted over the full T x T
square that TransformerLens computes before masking. The ratio naive/batched is the speed-up that
prefix reuse allows; the unembedding is paid by every variant, so it stays well under the number of
variants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .subjects import start_layer
from .variants import NEEDS_SAE


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


def layer_flops(s: Shape) -> float:
    """One transformer block, per token."""
    d, t = s.d_model, s.seq_len
    return 2 * (4 * d * d + 2 * d * s.d_mlp + 2 * t * d)


def unembed_flops(s: Shape) -> float:
    return 2 * s.d_model * s.d_vocab


def sae_flops(s: Shape) -> float:
    return 2 * 2 * s.d_model * s.d_sae


def workload_flops(s: Shape, hooks: Sequence[str], variants: Sequence[str], n_tokens: int) -> dict[str, float]:
    """FLOPs of the whole workload both ways, for n_tokens tokens."""
    n_sae = sum(v in NEEDS_SAE for v in variants)
    saes = len(hooks) * n_sae * sae_flops(s)
    full = s.n_layers * layer_flops(s) + unembed_flops(s)
    naive = len(hooks) * (1 + len(variants)) * full + saes
    batched = s.n_layers * layer_flops(s) + saes
    for h in hooks:
        batched += len(variants) * (s.n_layers - start_layer(h)) * layer_flops(s)
        batched += (1 + len(variants)) * unembed_flops(s)
    return {"naive": naive * n_tokens, "batched": batched * n_tokens, "bound": naive / batched}
