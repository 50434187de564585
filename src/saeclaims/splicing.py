"""Splicing: the variants' activations at one SAE, stacked along the batch, and the runs from the hook onwards.

Variants that start from SAE(x) share one SAE pass (SharedRoundtrip); `whole_batch` variants splice the whole
batch at once; a hook inside a block starts its suffix runs from the block's clean residual input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .budget import sae_rows
from .fast_sae import fast
from .measurements import HookStats
from .subjects import Subject, hook_order, start_layer
from .subjects.core import is_residual, replaced_inside_block
from .variants import VariantContext, apply_variant_ex, variant


def w_pos_of(model) -> torch.Tensor | None:
    """W_pos after the model's weight processing, or None without learned absolute positions."""
    if model.cfg.positional_embedding_type != "standard":
        return None
    return model.W_pos.detach()


def flat(act: torch.Tensor) -> torch.Tensor:
    """[B, T, d] as the SAE reads it: hook_z's [B, T, heads, d_head] flattened over heads."""
    return act.flatten(-2) if act.ndim == 4 else act


def block_input(hook: str) -> str:
    """The residual stream entering the hook's block: where a spliced run inside that block starts."""
    return f"blocks.{hook_order(hook)[0]}.hook_resid_pre"


def variant_context(subject: Subject, key: str, stats: HookStats | None, device: torch.device | None = None,
                    seed: int = 0, first_row: int = 0) -> VariantContext:
    """What the variants read for SAE `key` in a batch whose row b is sequence first_row + b. W_pos is
    offered only at residual hooks (where it is a summand of the activation)."""
    mean = None if stats is None else stats.mean if device is None else stats.mean.to(device)
    hook = subject.hook_of(key)
    return VariantContext(sae=subject.saes.get(key), w_pos=w_pos_of(subject.model) if is_residual(hook) else None,
                          mean=mean, ctx=subject.context_sizes[key], seed=seed, first_row=first_row,
                          full_sae=subject.full_context_saes.get(key), hook=hook,
                          sae_l0=None if stats is None else stats.sae_l0,
                          position_basis=None if stats is None or stats.position_basis is None
                          else stats.position_basis if device is None else stats.position_basis.to(device),
                          position_means=None if stats is None or stats.position_means is None
                          else stats.position_means if device is None else stats.position_means.to(device))


def alike_in_every_sequence(names: Sequence[str], hook: str, b: int) -> set[int]:
    """The variants (indices into `names`) whose spliced input at `hook` is the same in all b sequences, by what
    the registry declares (`Variant.alike_at_residual`: `zero` at a residual hook between blocks): a suffix run
    that starts there computes the same thing for every sequence, so one row stands for all. A static fact,
    where same_in_every_sequence compares rows on the device (a host round trip per variant)."""
    if b < 2 or replaced_inside_block(hook):
        return set()
    return {v for v, name in enumerate(names) if variant(name).alike_at_residual}


def same_in_every_sequence(stack: torch.Tensor, n_variants: int, b: int) -> set[int]:
    """The variants (indices into the variant-major stack [V*B, T, d]) whose spliced input is exactly the same
    in all B sequences, e.g. `zero` at a residual hook: a suffix run that starts there computes the same
    thing for every sequence, so one row stands for all (exact: equal inputs give equal outputs). Compares rows
    on the device; the kernels use alike_in_every_sequence, what the registry declares."""
    if b < 2:
        return set()
    out = set()
    for v in range(n_variants):
        rows = stack[v * b : (v + 1) * b]
        if torch.equal(rows[1], rows[0]) and torch.equal(rows, rows[:1].expand_as(rows)):
            out.add(v)
    return out


def _recon_metrics(x: torch.Tensor, spliced: torch.Tensor, l0: torch.Tensor, variance: float) -> dict:
    err = (spliced - x).float().pow(2).sum(-1)
    cos = torch.nn.functional.cosine_similarity(spliced.float(), x.float(), dim=-1)
    return {"sq_err": err, "nmse": err / variance, "l0": l0.float(), "cos": cos}


# The variants to splice: the same at every SAE, or per SAE id (what the run's claim tests read there; an id
# not in the mapping gets none).
VariantsAsked = Sequence[str] | Mapping[str, Sequence[str]]


def variants_at(subject: Subject, key: str, variants: VariantsAsked) -> list[str]:
    """The variants that apply to SAE `key`: of those asked (for `key`, when asked per SAE id), the control only
    where there is one; W_pos variants only at residual hooks of models with learned absolute positions
    (claims reading them are not applicable elsewhere, and say why)."""
    if isinstance(variants, Mapping):
        variants = variants.get(key, ())
    wpos = subject.has_learned_positions and is_residual(subject.hook_of(key))
    held_out = subject.held_out_tokens is not None
    return [v for v in variants if (not variant(v).needs_control or key in subject.full_context_saes)
            and (not variant(v).needs_wpos or wpos) and (not variant(v).needs_position_means or held_out)]


class SharedRoundtrip:
    """The SAE of one SAE id, for the variants of one chunk of a batch: `encode(x)` of the hook's activation
    `x` itself (sae, random_error and pos_repair_out all start from SAE(x)) and `decode` of those very codes
    run once and are handed to every variant that asks again; any other input goes straight to the SAE, so
    every variant gets exactly what it would alone. Used only for SAEs without run-time input
    normalisation, whose decode could otherwise depend on the last encode. Everything else is the SAE's
    (attribute access falls through)."""

    def __init__(self, sae, x: torch.Tensor):
        self._sae, self._x = sae, x
        self._codes: torch.Tensor | None = None
        self._decoded: torch.Tensor | None = None

    @staticmethod
    def applies(sae) -> bool:
        return getattr(getattr(sae, "cfg", None), "normalize_activations", "none") in (None, "none")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x is not self._x:
            return self._sae.encode(x)
        if self._codes is None:
            self._codes = self._sae.encode(x)
        return self._codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self._codes is None or codes is not self._codes:
            return self._sae.decode(codes)
        if self._decoded is None:
            self._decoded = self._sae.decode(codes)
        return self._decoded

    def __getattr__(self, name):
        return getattr(self._sae, name)


def splice_variants(subject: Subject, key: str, x: torch.Tensor, keep: torch.Tensor, names: Sequence[str],
                     stats: HookStats, seed: int, first_row: int, budget_bytes: int | None = None,
                     sae_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict]:
    """Every variant of SAE `key` for a batch x [B, T, d], a few sequences at a time (`sae_rows`;
    `Variant.whole_batch` ones at once): the stacked spliced activations [V*B, T, d] (variant-major) and each
    variant's reconstruction metrics. Row b keeps its sequence index first_row + b, so nothing depends
    on the split. Within a chunk the variants that start from SAE(x) share one SAE pass (SharedRoundtrip). SAE round
    trips take the fast path (fast_sae.py) in `sae_dtype` (None: the SAE's own) where it reproduces the SAE;
    `whole_batch` variants (reencode, which reads the SAE's own preprocessing) keep the SAE itself."""
    b = x.shape[0]
    step = sae_rows(subject, [key], x.shape[1], x.device, budget_bytes)
    stack = torch.empty((len(names) * b, *x.shape[1:]), dtype=x.dtype, device=x.device)
    parts: dict[str, list[dict]] = {name: [] for name in names}
    split = [(v, name) for v, name in enumerate(names) if not variant(name).whole_batch]
    whole = [(v, name) for v, name in enumerate(names) if variant(name).whole_batch]
    chunks = [(i, step, split) for i in range(0, b, step)] if split else []
    if whole:
        chunks.append((0, b, whole))
    for i, rows, todo in chunks:
        xi = x[i : i + rows]
        vctx = variant_context(subject, key, stats, x.device, seed, first_row + i)
        vctx.batch_first_row, vctx.batch_rows = first_row, b
        if todo is split:
            vctx.sae, vctx.full_sae = fast(vctx.sae, sae_dtype), fast(vctx.full_sae, sae_dtype)
        if vctx.sae is not None and SharedRoundtrip.applies(vctx.sae):
            vctx.sae = SharedRoundtrip(vctx.sae, xi)
        for v, name in todo:
            xs, l0, extras = apply_variant_ex(name, xi, vctx, keep[i : i + rows])
            stack[v * b + i : v * b + i + xi.shape[0]] = xs
            parts[name].append({**_recon_metrics(xi, xs, l0, stats.variance), **extras})
    recon = {(name, key): {k: torch.cat([p[k] for p in ps]) for k in ps[0]} for name, ps in parts.items()}
    return stack, recon


def suffix_run(model, hook: str, stack: torch.Tensor, resid_in: torch.Tensor | None, rows: int) -> torch.Tensor:
    """Final residuals [V*B, T, d] of runs from the hook onwards with the hooked activation replaced by `stack`.

    resid_in [B, T, d] is the block's clean residual input (hooks inside a block); each chunk of the stack
    starts from its rows' sequences there (indexed, never copied once per variant), and a forward hook
    substitutes the chunk's spliced activations."""
    n = model.cfg.n_layers
    start = start_layer(hook)
    if not replaced_inside_block(hook):
        if start >= n:
            return stack
        return torch.cat([model(stack[i : i + rows], start_at_layer=start, stop_at_layer=n)
                          for i in range(0, stack.shape[0], rows)])
    b = resid_in.shape[0]  # stack row v*B + j is variant v on sequence j: its input is resid_in[j]
    outs = []
    for i in range(0, stack.shape[0], rows):
        part = stack[i : i + rows]
        resid = resid_in[torch.arange(i, i + part.shape[0], device=resid_in.device) % b]

        def replace(act, hook=None, part=part):
            return part.reshape(act.shape).to(act.dtype)

        with model.hooks(fwd_hooks=[(hook, replace)]):
            outs.append(model(resid, start_at_layer=start, stop_at_layer=n))
    return torch.cat(outs)
