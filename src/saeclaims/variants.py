"""What gets spliced in at a hook: small pure functions of the activation and its positions.

Each variant maps x [batch, pos, d] to (x_spliced, l0) where l0 [batch, pos] is the SAE's number of
active latents on the input it actually saw (NaN for variants that use no SAE).

As in sae_lens's evals, position 0 and every other BOS token are never patched (the SAEs were trained
without them), except by `zero`, which is sae_lens's CE-score baseline exactly: it ablates every
position, BOS included.

A variant may also report per-token diagnostics (`Variant.extras`): `apply_variant_ex` returns them,
NaN at unpatched positions, and the splice kernels store them next to the loss metrics.

Every variant is one `Variant` declaration in `REGISTRY` (in the manner of sae_lens's architecture
registry): its function, what it needs (an SAE, W_pos, a residual hook, the control), how the batched
kernels may treat it, its figure style. splice, flops, figures, reads and the workbench read their tables
from the registry, so adding a variant is one `register_variant(Variant(...))`, its function and its tests.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .positional import position_of
from .reencode import oracle_split
from .reencode import reencode as reencode_with_omp

RESID_HOOK = re.compile(r"(^|\.)hook_resid_(pre|mid|post)$")


class VariantError(ValueError):
    """A variant cannot be applied to this subject or hook."""


@dataclass(frozen=True)
class Variant:
    """One splice variant: its function `apply(x, ctx) -> (x_spliced, l0[, extras])` and what it needs and allows."""

    name: str
    apply: Callable
    needs_sae: bool = False  # an SAE at the hook
    needs_wpos: bool = False  # a learned absolute W_pos
    residual_only: bool = False  # a residual-stream hook (W_pos[p] is a summand of the residual stream only)
    needs_control: bool = False  # the control family's full-context SAE at the hook
    needs_position_means: bool = False  # held-out windows to estimate the position-conditional mean from
    shares_sae_input: bool = False  # starts from SAE(x) of the hook's own activation: one shared SAE pass
    # at a residual hook between blocks its input is the same in every sequence (a static fact, so the kernels run one
    # row for it without comparing rows on the device)
    alike_at_residual: bool = False
    whole_batch: bool = False  # bounds its own memory and pays a fixed cost per call: spliced per whole batch
    measured_by_default: bool = False  # what the claims read (CLAIM_VARIANTS); others are measured when asked
    position_curve: bool = False  # drawn in the loss-by-position figure
    repair: bool = False  # a repair whose recovery of the beyond-context excess the recovery figure shows
    extras: tuple[str, ...] = ()  # per-token diagnostics it reports besides the loss metrics
    style: tuple[str, str, str] | None = None  # figure colour, line style, legend label


REGISTRY: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Add a variant (a name registered with another declaration is an error)."""
    have = REGISTRY.get(variant.name)
    if have is not None and have != variant:
        raise VariantError(f"variant {variant.name!r} is already registered; pick another name")
    REGISTRY[variant.name] = variant
    return variant


def unregister_variant(name: str) -> None:
    REGISTRY.pop(name, None)


def variant(name: str) -> Variant:
    if name not in REGISTRY:
        raise VariantError(f"unknown variant {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def variant_names(**flags: bool) -> tuple[str, ...]:
    """Registered variants, in registration order, whose flags have the given values."""
    return tuple(n for n, v in REGISTRY.items() if all(getattr(v, f) == want for f, want in flags.items()))


@dataclass
class VariantContext:
    """What a variant may read besides x: the SAE, W_pos (after weight processing), the in-context
    mean at this hook, the SAE's training context, a seed for random directions (row b of the batch
    is sequence first_row + b, so directions do not depend on batching), the control family's
    full-context SAE at this hook, if any, the hook's name (default: the SAE's cfg.metadata.hook_name)
    and the SAE's mean in-context L0 at this hook (reencode's k; HookStats.sae_l0). batch_first_row and
    batch_rows name the whole batch x is a chunk of (random directions are drawn for it once)."""

    sae: object | None
    w_pos: torch.Tensor | None
    mean: torch.Tensor | None
    ctx: int
    seed: int = 0
    first_row: int = 0
    full_sae: object | None = None
    hook: str | None = None
    sae_l0: float | None = None
    batch_first_row: int | None = None
    batch_rows: int | None = None
    position_basis: torch.Tensor | None = None  # [k, d] (HookStats.position_basis): where the residual's mean
    # moves with position, estimated on held-out windows
    position_means: torch.Tensor | None = None  # [T, d] that mean by position itself, centred (mean_shift_pos)

    @property
    def hook_name(self) -> str | None:
        if self.hook is not None:
            return self.hook
        meta = getattr(getattr(self.sae, "cfg", None), "metadata", None)
        return getattr(meta, "hook_name", None)


def count_active(codes: torch.Tensor) -> torch.Tensor:
    """L0: the number of non-zero codes along the last axis (AbsTopK codes may be negative), as float32.
    min(ceil|c|, 1) summed as float32: exact (counts below 2^24, whatever the codes' dtype) and several times
    faster on a CPU than summing a boolean mask; a NaN code makes the token's L0 NaN (garbage stays visible)."""
    return codes.abs().ceil_().clamp_(max=1).sum(-1, dtype=torch.float32)


def _sae_roundtrip(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    acts = sae.encode(x)
    count = getattr(sae, "active_count", None) or count_active  # the fast path's own count (fast_sae.py)
    return sae.decode(acts), count(acts).to(x.dtype)


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


def token_mean_pos(x, c):
    """SAE(x - W_pos[p] + w̄) - w̄ + W_pos[p], w̄ the mean of W_pos over the in-context positions [1, ctx): the
    SAE fed the token embedding with the average position it saw in training instead of the token's own, and
    the true position added after. Beside token_then_pos (no position at all) it separates the two reasons
    token-only input goes poorly: an input off the training distribution (the missing mean position, which
    this restores) and the loss of token-position mixing (which it does not)."""
    wp = c.w_pos[: x.shape[1]]
    w_bar = c.w_pos[1 : c.ctx].mean(0)
    rec, l0 = _sae_roundtrip(c.sae, x - wp + w_bar)
    return rec - w_bar + wp, l0


def shift_pos(x, c):
    n = x.shape[1]
    wp = c.w_pos[:n]
    wq = c.w_pos[shifted_positions(n, c.ctx, x.device)]
    rec, l0 = _sae_roundtrip(c.sae, x - wp + wq)
    return rec - wq + wp, l0


def mean_shift_pos(x, c):
    """SAE(x - mu_p + mu_q) - mu_q + mu_p, mu the mean by position (token held fixed, held-out windows) and q
    shift_pos's in-context position: the issue's mean-shift form of shift_pos, for any model (rotary ones too).
    Measured only when asked: like shift_pos it shows the SAE an in-context position, which removes whatever the
    out-of-context position triggers, positional error or not (blind on the planted controls,
    tests/test_planted_instruments.py)."""
    if c.position_means is None:
        raise VariantError("variant mean_shift_pos needs the hook's mean by position (VariantContext.position_means, "
                           "estimated on the subject's held-out windows)")
    n = x.shape[1]
    means = c.position_means.to(device=x.device, dtype=x.dtype)
    mu, mq = means[:n], means[shifted_positions(n, c.ctx, x.device)]
    rec, l0 = _sae_roundtrip(c.sae, x - mu + mq)
    return rec - mq + mu, l0


def random_error(x, c):
    """x plus a seeded random direction with the norm of the SAE's error at that token."""
    rec, l0 = _sae_roundtrip(c.sae, x)
    err_norm = (x - rec).norm(dim=-1, keepdim=True)
    return x + err_norm * _directions_for(c, x), l0


def _directions_for(c: VariantContext, x: torch.Tensor) -> torch.Tensor:
    """x's rows of the unit random directions: drawn for the whole batch once (c.batch_first_row, c.batch_rows),
    which every chunk and every hook of that width reads, else for x's rows alone. Row b is always sequence
    first_row + b's own draw, so the values do not depend on the split."""
    if c.batch_rows is None or c.batch_first_row is None:
        return _unit_directions(c.seed, c.first_row, tuple(x.shape), x.device, x.dtype)
    full = _unit_directions(c.seed, c.batch_first_row, (c.batch_rows, *x.shape[1:]), x.device, x.dtype)
    start = c.first_row - c.batch_first_row
    return full[start : start + x.shape[0]]


@functools.lru_cache(maxsize=4)
def _unit_directions(seed: int, first_row: int, shape: tuple[int, ...], device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    """Unit random directions, one CPU-seeded draw per sequence (so batched equals one-by-one on every
    device). They depend on no hook, so every hook of one width in a batch reuses them: drawn once, not
    once per hook (on an H100 the per-hook CPU draws were a large share of the variants' time). On CUDA the
    draws land in pinned memory and go over in one asynchronous copy (no host round trip)."""
    g = torch.Generator(device="cpu")
    host = torch.empty(shape, dtype=torch.float32, pin_memory=torch.device(device).type == "cuda")
    for b in range(shape[0]):
        torch.randn(shape[1:], generator=g.manual_seed(seed * 1_000_003 + first_row + b), out=host[b])
    direction = host.to(device, dtype, non_blocking=True)
    return direction / direction.norm(dim=-1, keepdim=True)


def full_context_sae(x, c):
    """The control family: an SAE of the same hook trained at the model's full context."""
    return _sae_roundtrip(c.full_sae, x)


def pos_repair_out(x, c):
    """SAE(x) - W_pos[q] + W_pos[p]: the reconstruction with the position it carries swapped for the
    true one. p is the token's position; q the position the reconstruction carries,
    argmax over q in [1, n_ctx) of cos(SAE(x) - x + W_pos[p], W_pos[q]) (positional.position_of),
    computed for all tokens at once on x's device.

    The thread's 1st comment read literally: "manually adding the positional embedding vector when
    you patch in the SAE reconstruction". Not SAE(x) + W_pos[p]: the reconstruction already carries
    a position (beyond the context, an earlier one), so adding W_pos[p] on top would count position
    twice; the repair removes the position the SAE put there and adds the true one. Unlike
    token_then_pos and shift_pos it leaves the SAE's input alone: only its output is repaired.

    Decoding q: at blocks.0.hook_resid_pre, x = W_E[t] + W_pos[p], so SAE(x) - x + W_pos[p] is
    SAE(x) - W_E[t], exactly the decoding of positional.decoded_positions (the `sae-thinks-earlier`
    claim). At later hooks x also holds what the blocks wrote; SAE(x) - W_E[t] would read that as
    position too (already for the clean x), and a perfect SAE would be 'repaired' away from x.
    SAE(x) - x + W_pos[p] = W_pos[p] - error reads only the position the SAE's error moves the
    token to: where the reconstruction carries the true position (a perfect SAE) q = p and the
    variant is SAE(x) unchanged.
    """
    rec, l0 = _sae_roundtrip(c.sae, x)
    w_pos = c.w_pos.to(rec.dtype)
    wp = w_pos[: x.shape[1]]
    q = position_of(rec - x + wp, w_pos)
    return rec - w_pos[q] + wp, l0


POSITIONAL_ENERGY = 0.99  # pos_part_repair's subspace holds this share of W_pos's squared norm
_POSITIONAL_BASES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def positional_basis(w_pos: torch.Tensor, energy: float = POSITIONAL_ENERGY) -> torch.Tensor:
    """Orthonormal rows [k, d] spanning W_pos's positional subspace: the fewest right singular vectors of W_pos
    rows 1..n_ctx-1 (BOS's row excluded, as in position_of) holding `energy` of their squared norm.

    Not centred: an SAE that drops a token's position errs by W_pos[p] itself, mean row included. Computed once
    per W_pos (cached by storage and version; a run asks at every batch and hook)."""
    key = (w_pos.data_ptr(), tuple(w_pos.shape), w_pos.dtype, w_pos.device, w_pos._version, energy)
    hit = _POSITIONAL_BASES.get(key)
    if hit is not None:
        return hit[1]
    rows = w_pos[1:].double()
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)
    share = (s**2).cumsum(0) / (s**2).sum()
    k = min(int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype, device=share.device))) + 1, len(s))
    basis = vh[:k].to(w_pos.dtype)
    if len(_POSITIONAL_BASES) >= 4:
        _POSITIONAL_BASES.clear()
    _POSITIONAL_BASES[key] = (w_pos, basis)  # the tensor is kept, so its storage (the key) is not reused
    return basis


def pos_part_repair(x, c):
    """SAE(x) + P(x - SAE(x)), P the projection onto W_pos's positional subspace (positional_basis): the
    reconstruction with the positional part of its error repaired, every other part of the error kept.

    Its recovery is the share of the excess loss the positional part of the SAE's error causes: the reading of
    "positional embedding is most of what the SAE gets wrong" that the planted controls validate
    (tests/test_planted_instruments.py). shift_pos cannot tell that from an error anywhere that the
    out-of-context position triggers (it shows the SAE an in-context position, removing both); pos_repair_out
    repairs only an error that is a clean swap of positions it can decode. This variant needs neither: it reads
    where the error lies. At later hooks the subspace still holds W_pos[p] (a summand of the residual), but
    also whatever the blocks wrote into it; it is a repair of W_pos's directions, not of every positional
    signal."""
    rec, l0 = _sae_roundtrip(c.sae, x)
    basis = positional_basis(c.w_pos).to(rec.dtype)
    return rec + ((x - rec) @ basis.T) @ basis, l0


def pos_mean_part_repair(x, c):
    """SAE(x) + P(x - SAE(x)), P the projection onto the hook's position-conditional mean subspace
    (VariantContext.position_basis, estimated on held-out windows; position_means.py): pos_part_repair for the
    position a model computes, at any hook of any model, rotary ones included. Its recovery is the share of the
    excess loss the positional part of the SAE's error causes, position read as whatever moves the activation's
    mean with position."""
    if c.position_basis is None:
        raise VariantError("variant pos_mean_part_repair needs the hook's position-conditional mean subspace "
                           "(VariantContext.position_basis, estimated on the subject's held-out windows)")
    rec, l0 = _sae_roundtrip(c.sae, x)
    basis = c.position_basis.to(device=rec.device, dtype=rec.dtype)
    return rec + ((x - rec) @ basis.T) @ basis, l0


def reencode(x, c):
    """The SAE's decoder with codes re-inferred by non-negative OMP at k = round(mean in-context L0)
    atoms (reencode.py); l0 is the number of atoms used. Reports `unconverged` per token."""
    if c.sae_l0 is None or not math.isfinite(c.sae_l0):
        raise VariantError("variant reencode needs the SAE's mean in-context L0 at this hook "
                           "(VariantContext.sae_l0, from splice.in_context_stats)")
    res = reencode_with_omp(c.sae, x, reencode_k(c.sae_l0))
    return res.out, res.l0, {"unconverged": (~res.converged).to(x.dtype)}


def reencode_2x(x, c):
    """reencode with twice the atoms (k = 2 x the rounded in-context L0): beyond the context an activation
    may need more atoms than the SAE spends in context, so 'better codes' are sought up to twice as dense
    (the `reencoding-recovers` claim judges the better of k and 2k)."""
    if c.sae_l0 is None or not math.isfinite(c.sae_l0):
        raise VariantError("variant reencode_2x needs the SAE's mean in-context L0 at this hook "
                           "(VariantContext.sae_l0, from splice.in_context_stats)")
    res = reencode_with_omp(c.sae, x, 2 * reencode_k(c.sae_l0))
    return res.out, res.l0, {"unconverged": (~res.converged).to(x.dtype)}


def oracle_support(x, c):
    """decode(a restricted to S): the SAE's own code a, with every active latent outside the oracle support S
    zeroed, S the atoms non-negative OMP picks from the SAE's decoder at the token's own L0
    (reencode.oracle_split). l0 counts the latents kept; extras: `fp_mass`, the share of the code's decoded
    mass outside S (reencode.false_positive_mass), and the pursuit's `unconverged`.

    The causal test of the compressed-sensing reading of the thread's 3rd comment: if beyond the context the
    encoder fails by turning on latents that are not part of the true sparse code, removing them (keeping the
    SAE's own values on the rest) removes most of the excess loss."""
    res = oracle_split(c.sae, x, _oracle_cap(c, "oracle_support"))
    return res.out, res.l0, {"fp_mass": res.fp_mass, "unconverged": (~res.converged).to(x.dtype)}


def full_context_oracle_support(x, c):
    """oracle_support for the control family's full-context SAE at the hook: its `fp_mass` is the control's
    false-positive mass, the position trend the `false-positives-beyond-context` claim is judged against. The
    pursuit's cap is the SAE's (the same construction on both sides of the ratio)."""
    res = oracle_split(c.full_sae, x, _oracle_cap(c, "full_context_oracle_support"))
    return res.out, res.l0, {"fp_mass": res.fp_mass, "unconverged": (~res.converged).to(x.dtype)}


def _oracle_cap(c: VariantContext, name: str) -> int:
    """The oracle pursuit's largest k: reencode_2x's, twice the SAE's rounded in-context L0 (a bounded cost)."""
    if c.sae_l0 is None or not math.isfinite(c.sae_l0):
        raise VariantError(f"variant {name} needs the SAE's mean in-context L0 at this hook "
                           "(VariantContext.sae_l0, from splice.in_context_stats)")
    return 2 * reencode_k(c.sae_l0)


def reencode_k(sae_l0: float) -> int:
    """reencode's k: the SAE's mean in-context L0, rounded, at least 1."""
    return max(1, round(sae_l0))


for _v in (
    Variant("clean", clean),
    Variant("zero", zero, alike_at_residual=True, measured_by_default=True),
    Variant("mean", mean),
    Variant("sae", sae, needs_sae=True, shares_sae_input=True, measured_by_default=True, position_curve=True,
            style=("C0", "-", "SAE(x): the reconstruction as trained")),
    Variant("token_then_pos", token_then_pos, needs_sae=True, needs_wpos=True, residual_only=True,
            measured_by_default=True, position_curve=True, repair=True,
            style=("C1", "--", "token_then_pos: SAE(x - W_pos[p]) + W_pos[p]")),
    Variant("shift_pos", shift_pos, needs_sae=True, needs_wpos=True, residual_only=True, measured_by_default=True,
            position_curve=True, repair=True,
            style=("C2", "-.", "shift_pos: SAE sees an in-context position, swapped back")),
    Variant("random_error", random_error, needs_sae=True, shares_sae_input=True, measured_by_default=True,
            position_curve=True, style=("C3", ":", "x + random error of the SAE error's norm")),
    Variant("full_context_sae", full_context_sae, needs_sae=True, needs_control=True),
    Variant("pos_repair_out", pos_repair_out, needs_sae=True, needs_wpos=True, residual_only=True,
            shares_sae_input=True, measured_by_default=True, repair=True,
            style=("C4", ":", "pos_repair_out: SAE(x) - W_pos[q] + W_pos[p], q decoded")),
    Variant("pos_part_repair", pos_part_repair, needs_sae=True, needs_wpos=True, residual_only=True,
            shares_sae_input=True, measured_by_default=True, repair=True,
            style=("C7", "-", "pos_part_repair: SAE(x) + P_pos(x - SAE(x))")),
    Variant("reencode", reencode, needs_sae=True, whole_batch=True, repair=True, extras=("unconverged",),
            style=("C5", "--", "reencode: same dictionary, codes re-inferred at the SAE's L0")),
):
    register_variant(_v)
register_variant(Variant("token_mean_pos", token_mean_pos, needs_sae=True, needs_wpos=True, residual_only=True,
                         measured_by_default=True, position_curve=True,
                         style=("C7", "--", "token_mean_pos: SAE(x - W_pos[p] + mean W_pos) + W_pos[p] - mean")))
register_variant(Variant("pos_mean_part_repair", pos_mean_part_repair, needs_sae=True, needs_position_means=True,
                         shares_sae_input=True, repair=True, measured_by_default=True,
                         style=("C8", "-", "pos_mean_part_repair: SAE(x) + P_mean-by-position(x - SAE(x))")))
register_variant(Variant("mean_shift_pos", mean_shift_pos, needs_sae=True, needs_position_means=True, repair=True,
                         style=("C8", ":", "mean_shift_pos: SAE(x - mu_p + mu_q) - mu_q + mu_p")))
register_variant(Variant("reencode_2x", reencode_2x, needs_sae=True, whole_batch=True, repair=True,
                         extras=("unconverged",),
                         style=("C6", "--", "reencode_2x: same dictionary, codes re-inferred at twice the SAE's L0")))
# The compressed-sensing instrument (issue 23): the SAE's code cut to the oracle support, and the control's, each
# reporting its false-positive mass; measured on the first --reencode-seqs sequences (Workbench.oracle_measurements)
register_variant(Variant("oracle_support", oracle_support, needs_sae=True, whole_batch=True, repair=True,
                         extras=("fp_mass", "unconverged"),
                         style=("C8", "-.", "oracle_support: the SAE's code cut to the pursuit's support")))
register_variant(Variant("full_context_oracle_support", full_context_oracle_support, needs_sae=True,
                         needs_control=True, whole_batch=True, extras=("fp_mass", "unconverged")))

# The built-in variants' names, as registered above (tests and benchmarks enumerate them); the library's own
# decisions read REGISTRY, so a variant registered later is seen everywhere.
VARIANTS = variant_names()
# What the claims (and the report's figures) read; `mean` (mean ablation) stays available but no claim reads it,
# and every measured variant costs a suffix run and a pass over the vocabulary.
CLAIM_VARIANTS = variant_names(measured_by_default=True)


def check_variant(name: str, ctx: VariantContext) -> None:
    v = variant(name)
    if v.residual_only:
        hook = ctx.hook_name
        if hook is None or not RESID_HOOK.search(hook):
            raise VariantError(f"variant {name} needs a residual-stream hook (hook_resid_pre/mid/post), where "
                               f"W_pos[p] is a summand of the activation; got {hook!r}")
    if v.needs_wpos and ctx.w_pos is None:
        raise VariantError(f"variant {name} needs a learned absolute W_pos; this model has none "
                           "(rotary or no positional embedding)")
    if v.needs_sae and ctx.sae is None:
        raise VariantError(f"variant {name} needs an SAE at this hook")
    if v.needs_control and ctx.full_sae is None:
        raise VariantError(f"variant {name} needs a full-context SAE at this hook")


def apply_variant_ex(name: str, x: torch.Tensor, ctx: VariantContext, keep: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The spliced activation, the SAE's L0 and the variant's per-token diagnostics
    (`Variant.extras`, [batch, pos]). Positions in `keep` [batch, pos] (BOS tokens) and
    position 0 stay clean, except under `zero`; L0 and diagnostics are NaN there."""
    check_variant(name, ctx)
    res = REGISTRY[name].apply(x, ctx)
    out, l0, extras = res if len(res) == 3 else (*res, {})
    if keep is None:
        keep = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    keep = keep.clone()
    keep[:, 0] = True
    if name != "zero":
        out = torch.where(keep[..., None], x, out)
    l0 = l0.masked_fill(keep, float("nan"))
    return out, l0, {k: v.masked_fill(keep, float("nan")) for k, v in extras.items()}


def apply_variant(name: str, x: torch.Tensor, ctx: VariantContext,
                  keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The spliced activation and the SAE's L0 (apply_variant_ex without the diagnostics)."""
    out, l0, _ = apply_variant_ex(name, x, ctx, keep)
    return out, l0
