"""The obvious way, as sae_lens's evals do it: one full hooked forward per variant per hook, full
log-softmax, nothing reused. The baseline the batched kernels are benchmarked and checked against."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .measurements import HookStats
from .splicing import variant_context, variants_at
from .subjects import Subject
from .variants import apply_variant


@torch.no_grad()
def naive_losses(subject: Subject, toks: torch.Tensor, hooks: Sequence[str], variants: Sequence[str],
                 stats: dict[str, HookStats], seed: int = 0) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """CE and KL(clean || variant) per token [B, T-1] for every (variant, SAE id)."""
    model = subject.model
    keep = toks == subject.bos_token_id
    tgt = toks[:, 1:, None]
    out = {}
    for h in hooks:
        clean_lp = torch.log_softmax(model(toks).float(), -1)[:, :-1]
        ctx = variant_context(subject, h, stats[h], toks.device, seed)
        for v in variants_at(subject, h, variants):
            def patch(act, hook, v=v, ctx=ctx):  # hook_z [B, T, heads, d_head] is spliced flat, as the SAE reads it
                return apply_variant(v, act.flatten(-2) if act.ndim == 4 else act, ctx, keep)[0].reshape(act.shape)

            lp = torch.log_softmax(model.run_with_hooks(toks, fwd_hooks=[(subject.hook_of(h), patch)]).float(),
                                   -1)[:, :-1]
            out[(v, h)] = {"ce": -lp.gather(-1, tgt)[..., 0],
                           "kl": (clean_lp.exp() * (clean_lp - lp)).sum(-1)}
    return out
