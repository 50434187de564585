"""What gets spliced in at a hook: small pure functions of the activation and its positions.

Each variant maps x [batch, pos, d] to (x_spliced, l0) where l0 [batch, pos] is the SAE's number of
active latents on the input it actually saw (NaN for variants that use no SAE).

As in sae_lens's evals, position 0 and every other BOS token are never patched (the SAEs were trained
without them), except by `zero`, which is sae_lens's CE-score baseline exactly: it ablates every
position, BOS included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

VARIANTS = ("clean", "zero", "mean", "sae", "token_then_pos", "shift_pos", "random_error", "full_context_sae")
NEEDS_WPOS = frozenset({"token_then_pos", "shift_pos"})
NEEDS_SAE = frozenset({"sae", "token_then_pos", "shift_pos", "random_error", "full_context_sae"})
CLAIM_VARIANTS = ("zero", "mean", "sae", "token_then_pos", "shift_pos", "random_error")


class VariantError(ValueError):
    """A variant cannot be applied to this subject or hook."""


@dataclass
class VariantContext:
    """What a variant may read besides x: the SAE, W_pos (after weight processing), the in-context
    mean at this hook, the SAE's training context, a seed for random directions (row b of the batch
    is sequence first_row + b, so directions do not depend on batching) and the control family's
    full-context SAE at this hook, if any."""

    sae: object | None
    w_pos: torch.Tensor | None
    mean: torch.Tensor | None
    ctx: int
    seed: int = 0
    first_row: int = 0
    full_sae: object | None = None


def _sae_roundtrip(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acts = sae.encode(x)
    return sae.decode(acts), (acts > 0).sum(-1).to(x.dtype)


def shifted_positions(n_pos: int, ctx: int, device=None) -> torch.Tensor:
    """q = 1 + (p - 1) mod (ctx - 1): an in-context position with the same phase; q = p for p < ctx."""
    p = torch.arange(n_pos, device=device)
    q = 1 + (p - 1).remainder(ctx - 1)
    q[0] = 0
    return q


def _nan_l0(x: torch.Tensor) -> torch.Tensor:
    return torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)


def clean(x, c):
    return x, _nan_l0(x)


def zero(x, c):
    return torch.zeros_like(x), _nan_l0(x)


def mean(x, c):
    if c.mean is None:
        raise VariantError("the mean variant needs the in-context mean activation")
    return c.mean.to(x.dtype).expand_as(x).clone(), _nan_l0(x)


def sae(x, c):
    return _sae_roundtrip(c.sae, x)


def token_then_pos(x, c):
    wp = c.w_pos[: x.shape[1]]
    rec, l0 = _sae_roundtrip(c.sae, x - wp)
    return rec + wp, l0


def shift_pos(x, c):
    n = x.shape[1]
    wp = c.w_pos[:n]
    wq = c.w_pos[shifted_positions(n, c.ctx, x.device)]
    rec, l0 = _sae_roundtrip(c.sae, x - wp + wq)
    return rec - wq + wp, l0


def random_error(x, c):
    """x plus a seeded random direction with the norm of the SAE's error at that token."""
    rec, l0 = _sae_roundtrip(c.sae, x)
    err_norm = (x - rec).norm(dim=-1, keepdim=True)
    g = torch.Generator(device="cpu")
    rows = [torch.randn(x.shape[1:], generator=g.manual_seed(c.seed * 1_000_003 + c.first_row + b))
            for b in range(x.shape[0])]
    direction = torch.stack(rows).to(x.device, x.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    return x + err_norm * direction, l0


def full_context_sae(x, c):
    """The control family: an SAE of the same hook trained at the model's full context."""
    return _sae_roundtrip(c.full_sae, x)


FUNCTIONS: dict[str, Callable] = {
    "clean": clean, "zero": zero, "mean": mean, "sae": sae,
    "token_then_pos": token_then_pos, "shift_pos": shift_pos, "random_error": random_error,
    "full_context_sae": full_context_sae,
}


def check_variant(name: str, ctx: VariantContext) -> None:
    if name not in FUNCTIONS:
        raise VariantError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    if name in NEEDS_WPOS and ctx.w_pos is None:
        raise VariantError(f"variant {name} needs a learned absolute W_pos; this model has none "
                           "(rotary or no positional embedding)")
    if name in NEEDS_SAE and ctx.sae is None:
        raise VariantError(f"variant {name} needs an SAE at this hook")
    if name == "full_context_sae" and ctx.full_sae is None:
        raise VariantError("variant full_context_sae needs a full-context SAE at this hook")


def apply_variant(name: str, x: torch.Tensor, ctx: VariantContext,
                  keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The spliced activation and the SAE's L0. Positions in `keep` [batch, pos] (BOS tokens) and
    position 0 stay clean, except under `zero`."""
    check_variant(name, ctx)
    out, l0 = FUNCTIONS[name](x, ctx)
    if keep is None:
        keep = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    keep = keep.clone()
    keep[:, 0] = True
    if name != "zero":
        out = torch.where(keep[..., None], x, out)
    l0 = l0.masked_fill(keep, float("nan"))
    return out, l0
