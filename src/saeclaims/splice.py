"""Batched splicing kernels, the driver: one clean pass, then only the layers after each hook, variants stacked.

The jobs live apart: `measurements.py` (what is measured), `budget.py` (rows per step under the memory
budget), `splicing.py` (the variants' activations and the runs from each hook), `vocab_losses.py` (the pass
over the vocabulary); this module runs them per batch (`splice_batch`, options in one `SpliceOptions`) and
over the evaluation set (`measure`).

The obvious way (sae_lens's evals) runs one full hooked forward per variant per hook. Here the clean
pass caches every hook at once; for each SAE the spliced activations of all variants are stacked
along the batch and fed to TransformerLens with `start_at_layer`, so the prefix is never recomputed.
Residual hooks (resid_pre, resid_post) are the input of a block: the stack is that input. Hooks inside a
block (attn.hook_z, hook_attn_out, hook_resid_mid, hook_mlp_out) start from the block's cached clean
residual input, stacked once per variant, and a forward hook replaces the hooked activation with the
stack. hook_z activations [.., heads, d_head] are flattened for the SAE, as sae_lens's hook_z SAEs are.
Measurements are keyed by SAE id (several SAEs may read one hook).
Log-probabilities are formed a chunk of token rows at a time, so memory never holds
variants x batch x positions x vocabulary.

Attention runs fused (`attention.fused_attention`: SDPA, no [batch, heads, T, T] scores) in every forward
here: the clean passes and the suffix runs. The hook points these forwards use (residual and block
outputs, and hook_z, which the fused forward passes through) fire as in TransformerLens; a hook on the
scores or pattern makes that call run TransformerLens's attention, and configurations the fused path cannot
reproduce keep it throughout. GPT-2's tanh GELU and the layer norms run as one kernel each (`fused_ops.py`).
`fused_attention=False` keeps TransformerLens's own forward (eager attention, elementwise GELU and norms)
everywhere.

A variant whose spliced input is exactly the same in every sequence (`zero` at a residual hook: nothing of
the tokens is left) runs its suffix once, on one row, and its vocabulary pass once per position.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from . import splicing
from .attention import fused_attention
from .budget import log_softmax_chunk, sae_rows, stack_rows
from .fused_lse import uses_triton
from .fused_ops import fused_norms_and_activations
from .measurements import LOSS_METRICS, RECON_METRICS, HookStats, Measurements, warn_unconverged
from .position_means import PositionSubspace, position_subspaces
from .precision import Precision, autocast, from_autocast, matmul_scope, resolve
from .splicing import VariantsAsked, alike_in_every_sequence, block_input, flat, variant_context, variants_at, w_pos_of
from .subjects import Subject, SubjectError, hook_order
from .subjects.core import is_residual, replaced_inside_block
from .variants import CLAIM_VARIANTS, check_variant, count_active, variant
from .vocab_losses import chunked_losses, final_resid_hook, fused_losses


@contextlib.contextmanager
def _fused(model, enabled: bool):
    """The splice forwards' fused kernels: SDPA attention (attention.py), one-kernel GELUs and layer norms
    (fused_ops.py); `enabled=False` keeps TransformerLens's own forward throughout. Yields the attention's
    record (attention.FusedAttention)."""
    with fused_attention(model, enabled) as state, fused_norms_and_activations(model, enabled):
        yield state


def _bos(subject: Subject) -> int | torch.Tensor:
    """The BOS token to compare tokens with: the tokenizer's id, else the first token as a 0-d tensor on the tokens'
    device (Subject.bos_token_id reads it back to the host, a round trip per call on a GPU)."""
    tok = getattr(subject.model, "tokenizer", None)
    if tok is not None and tok.bos_token_id is not None:
        return subject.bos_token_id
    return subject.tokens[0, 0]


def attends_backwards_only(model) -> bool:
    """Whether every block attends only backwards, so activations at a position never read later tokens."""
    return all((getattr(b.attn, "_attention_dir_override", None) or model.cfg.attention_dir) == "causal"
               for b in model.blocks)


@torch.no_grad()
def in_context_stats(subject: Subject, hooks: Sequence[str], batch_size: int | None = None,
                     fused_attention: bool = True,
                     budget_bytes: int | None = None, position_means: bool = False) -> dict[str, HookStats]:
    """Mean and spread of activations over positions [1, ctx) of the whole evaluation set, per SAE id.

    Only positions below the largest context are read, and a causal model's activations there do not
    depend on later tokens, so the pass runs on the first max(ctx) tokens of each sequence (and stops after
    the deepest hook's block): a fraction ctx/T of a clean pass, not a second one. With `position_means` and
    held-out windows, each HookStats also gets its hook's position-conditional mean subspace (a clean pass over
    the held-out windows).
    """
    model = subject.model
    points = {k: subject.hook_of(k) for k in hooks}
    stop = max(hook_order(h)[0] for h in points.values()) + 1
    width = subject.seq_len
    if attends_backwards_only(model):
        width = min(width, max(subject.context_sizes[h] for h in hooks))
    # float64 sums kept on the device (one host copy at the end, not three per hook and batch)
    sums: dict = {h: 0.0 for h in hooks}
    sq: dict = {h: 0.0 for h in hooks}
    l0: dict = {h: 0.0 for h in hooks}
    counts: dict = {h: 0.0 for h in hooks}
    batch_size = batch_size or min(stack_rows(model, width, subject.tokens.device, budget_bytes, fused=fused_attention),
                                   sae_rows(subject, hooks, width, subject.tokens.device, budget_bytes))
    for i in range(0, len(subject.tokens), batch_size):
        toks = subject.tokens[i : i + batch_size, :width]
        with _fused(model, fused_attention):
            cache = _clean_cache(model, toks, sorted(set(points.values())), stop)
        for h in hooks:
            ctx = subject.context_sizes[h]
            act = flat(cache[points[h]])
            use = (toks[:, 1:ctx] != _bos(subject))[..., None].double()  # BOS is never patched
            x = act[:, 1:ctx].double() * use
            sums[h] = sums[h] + x.sum((0, 1))
            sq[h] = sq[h] + x.pow(2).sum()
            counts[h] = counts[h] + use.sum()
            sae = subject.saes.get(h)
            if sae is not None:
                active = count_active(sae.encode(act[:, 1:ctx])).double()
                l0[h] = l0[h] + (active * use[..., 0]).sum()
    subspaces = held_out_subspaces(subject, hooks, fused_attention) if position_means else {}
    out = {}
    for h in hooks:
        mu = sums[h] / counts[h]
        sub = subspaces.get(h)
        out[h] = HookStats(mean=mu.float(), variance=float(sq[h] / counts[h] - mu.pow(2).sum()),
                           sae_l0=float(l0[h] / counts[h]) if h in subject.saes else None,
                           position_basis=None if sub is None else sub.basis.float(), position_subspace=sub,
                           position_means=None if sub is None or sub.means is None else sub.means.float())
    return out


# held-out windows -> {(model id, hook point): subspace}: a run measures its SAEs in several calls (per hook group,
# per claim), and the held-out pass is as costly as a clean pass over the evaluation set
# (keyed by the tensor's identity, dropped with it: tensors compare element-wise)
_SUBSPACES: dict[int, dict[tuple[int, str], PositionSubspace]] = {}


def _subspaces_of(tokens: torch.Tensor) -> dict[tuple[int, str], PositionSubspace]:
    if id(tokens) not in _SUBSPACES:
        _SUBSPACES[id(tokens)] = {}
        weakref.finalize(tokens, _SUBSPACES.pop, id(tokens), None)
    return _SUBSPACES[id(tokens)]


def needs_position_means(subject: Subject, hooks: Sequence[str], variants: VariantsAsked) -> bool:
    """Whether a variant that applies at one of `hooks` needs the position-conditional mean (in_context_stats'
    `position_means`): callers of splice_batch outside measure() pass it on."""
    return any(variant(v).needs_position_means for h in hooks for v in variants_at(subject, h, variants))


def held_out_subspaces(subject: Subject, hooks: Sequence[str], fused: bool = True) -> dict[str, PositionSubspace]:
    """Each SAE id's position-conditional mean subspace (position_means.py) from the subject's held-out windows;
    empty without them. Each hook point is estimated once per model and held-out windows, by the splice's own
    clean forward (fused kernels unless `fused` is False, stopping after the deepest hook)."""
    if subject.held_out_tokens is None:
        return {}
    points = {k: subject.hook_of(k) for k in hooks}
    known = _subspaces_of(subject.held_out_tokens)
    todo = sorted({p for p in points.values() if (id(subject.model), p) not in known})
    if todo:
        model = subject.model
        stop = max(hook_order(p)[0] for p in todo) + 1

        def activations(toks: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
            with _fused(model, fused):
                return _clean_cache(model, toks, names, stop)

        found = position_subspaces(model, subject.held_out_tokens, todo, _bos(subject), activations=activations)
        known.update({(id(subject.model), p): sub for p, sub in found.items()})
    return {k: known[(id(subject.model), p)] for k, p in points.items()}


def to_host(pairs: list[tuple[np.ndarray, torch.Tensor]], one_copy: bool | None = None) -> None:
    """Each tensor's values (as float32) into its host array: on a GPU in one device-to-host copy (one sync per
    batch, not one per metric), on a CPU straight from each tensor (one_copy: force either way)."""
    if not pairs:
        return
    tensors = [t.float() for _, t in pairs]
    if not (tensors[0].device.type != "cpu" if one_copy is None else one_copy):
        for (dst, _), t in zip(pairs, tensors):
            dst[...] = t.numpy()
        return
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu().numpy()
    at = 0
    for dst, _ in pairs:
        dst[...] = flat[at : at + dst.size].reshape(dst.shape)
        at += dst.size


def _clean_cache(model, toks: torch.Tensor, names: list[str], stop: int | None):
    """Activations at `names`; stop_at_layer=None runs the whole model."""
    store: dict[str, torch.Tensor] = {}

    def keep(act, hook):
        store[hook.name] = act.detach()

    model.run_with_hooks(toks, fwd_hooks=[(n, keep) for n in names], return_type=None,
                         stop_at_layer=stop if stop is not None and stop < model.cfg.n_layers else None)
    return store


@dataclass(frozen=True)
class SpliceOptions:
    """How batches are spliced, one object instead of six loose arguments: the random directions' seed, the
    memory budgets (`budget_bytes` the largest transient block; `chunk_bytes` and `max_stack` override the
    log-softmax chunk and the rows per forward), the precision (precision.py: a name or a resolved Precision;
    `autocast_dtype` is its deprecated spelling, bfloat16 meaning bf16), and the fused kernels (False:
    TransformerLens's own forward)."""

    seed: int = 0
    chunk_bytes: int | None = None
    max_stack: int | None = None
    autocast_dtype: torch.dtype | None = None
    fused_attention: bool = True
    budget_bytes: int | None = None
    precision: Precision | str | None = None  # None: autocast_dtype's, else auto
    # CE by fused_lse (no materialised logits; KL not computed, NaN) where Triton runs (CUDA, or its interpreter);
    # off by default until timed on a GPU (bench/gpu_workload.py), elsewhere the chunked torch pass
    fused_vocab: bool = False

    def resolved(self, device: torch.device) -> Precision:
        """The precision these options ask for, on `device`."""
        return resolve(self.precision or from_autocast(self.autocast_dtype), device)


DEFAULT_OPTIONS = SpliceOptions()


@torch.no_grad()
def splice_batch(subject: Subject, toks: torch.Tensor, hooks: Sequence[str], variants: VariantsAsked,
                 stats: dict[str, HookStats], first_row: int = 0, options: SpliceOptions = DEFAULT_OPTIONS,
                 on_hook: Callable[[int, str], None] | None = None):
    """All hooks x variants for one batch of sequences (row b is sequence first_row + b).

    Returns (clean_ce [B, T-1], {(variant, hook): metrics}, {hook: x}). The log-softmax loop runs once
    over every hook's variants, so the clean log-probabilities of a chunk are formed once. Variants
    that start from SAE(x) share one SAE pass per SAE id (`SharedRoundtrip`). fused_attention: the clean
    and suffix forwards' attention by SDPA (attention.py) and one-kernel GELUs and norms (fused_ops.py), else
    TransformerLens's own forward. Variants alike in every sequence run one row (alike_in_every_sequence).
    Precision (options.precision, precision.py): the forwards under its autocast, the SAE round trips and the
    vocabulary matmuls in its dtypes, TF32 as it says for the rest (scoped to this call).
    """
    precision = options.resolved(toks.device)
    with matmul_scope(precision):
        return _splice_batch(subject, toks, hooks, variants, stats, first_row, options, on_hook, precision)


def _splice_batch(subject: Subject, toks: torch.Tensor, hooks: Sequence[str], variants: VariantsAsked,
                  stats: dict[str, HookStats], first_row: int, options: SpliceOptions,
                  on_hook: Callable[[int, str], None] | None, precision: Precision):
    model = subject.model
    fused_attention = options.fused_attention
    final = final_resid_hook(model)
    rows = options.max_stack or stack_rows(model, toks.shape[1], toks.device, options.budget_bytes,
                                           fused=fused_attention)
    chunk_bytes = log_softmax_chunk(toks.device, options.chunk_bytes, options.budget_bytes)
    points = {k: subject.hook_of(k) for k in hooks}
    names_needed = set(points.values()) | {final} | {block_input(h) for h in points.values()
                                                     if replaced_inside_block(h)}
    with _fused(model, fused_attention), autocast(precision):
        cache = {}
        for i in range(0, toks.shape[0], rows):
            part = _clean_cache(model, toks[i : i + rows], sorted(names_needed), None)
            for k, v in part.items():
                cache.setdefault(k, []).append(v)
        cache = {k: torch.cat(v) for k, v in cache.items()}
    keep = toks == _bos(subject)  # BOS anywhere stays clean, as in sae_lens
    finals, shared, recon, order = [], [], {}, []  # order: (variant, SAE id) in finals then shared order
    order_shared = []
    picks: dict[tuple, torch.Tensor] = {}  # row selections, one host-to-device copy per distinct selection
    for j, h in enumerate(hooks):
        if on_hook is not None:
            on_hook(j, h)
        hook = points[h]
        x = flat(cache[hook])
        b, t = x.shape[:2]
        names = variants_at(subject, h, variants)
        stack, recon_h = splicing.splice_variants(subject, h, x, keep, names, stats[h], options.seed, first_row,
                                                  options.budget_bytes, precision.sae_dtype)  # [V*B, T, d]
        recon.update(recon_h)
        resid_in = cache[block_input(hook)] if replaced_inside_block(hook) else None
        alike = alike_in_every_sequence(names, hook, b)
        own = [v for v in range(len(names)) if v not in alike]
        if alike:  # one row each for the variants whose input is the same in every sequence
            key = (tuple(own), tuple(sorted(alike)), b)
            if key not in picks:
                pick = [v * b + j for v in own for j in range(b)] + [v * b for v in sorted(alike)]
                picks[key] = torch.tensor(pick, device=stack.device)
            stack = stack[picks[key]]
        with _fused(model, fused_attention), autocast(precision):
            out = splicing.suffix_run(model, hook, stack, resid_in, rows).float()[:, :-1]
        del stack
        finals.append(out[: len(own) * b].reshape(len(own), b, t - 1, out.shape[-1]))  # own may be empty
        shared.append(out[len(own) * b :])
        order += [(names[v], h) for v in own]
        order_shared += [(names[v], h) for v in sorted(alike)]
    shared_final = torch.cat(shared) if order_shared else None
    with _fused(model, fused_attention):  # ln_final
        if options.fused_vocab and uses_triton(toks):
            clean_ce, ce, kl = fused_losses(model, cache[final][:, :-1].float(), torch.cat(finals), toks[:, 1:],
                                            shared_final, precision.vocab_dtype)
        else:
            clean_ce, ce, kl = chunked_losses(model, cache[final][:, :-1].float(), torch.cat(finals), toks[:, 1:],
                                              chunk_bytes, shared_final, precision.vocab_dtype)
    metrics = {}
    for i, key in enumerate(order + order_shared):
        m = {k: v[:, :-1] for k, v in recon[key].items()}
        m.update(ce=ce[i], dce=ce[i] - clean_ce, kl=kl[i])
        metrics[key] = m
    return clean_ce, metrics, {h: flat(cache[points[h]]) for h in hooks}


def measure(subject: Subject, hooks: Sequence[str] | None = None,
            variants: VariantsAsked = CLAIM_VARIANTS, batch_size: int = 16, seed: int = 0,
            chunk_bytes: int | None = None, max_stack: int | None = None,
            autocast_dtype: torch.dtype | None = None, progress: bool = True,
            n_seqs: int | None = None, fused_attention: bool = True,
            budget_bytes: int | None = None, on_step: Callable[[str], None] | None = None,
            precision: Precision | str | None = None, fused_vocab: bool = False) -> Measurements:
    """Run the whole splice workload for a subject and return per-token measurements.

    variants: the same at every SAE id, or a mapping from SAE id to its variants (a claims run asks at each
    hook for what its claim tests read there).

    n_seqs: measure only the first n_seqs sequences (e.g. an expensive variant such as `reencode`,
    in a call of its own with `sae` beside it so its statistics stay paired on sequences). The
    in-context statistics (the mean, the nMSE normaliser, reencode's k) still come from every
    sequence, so a subset call splices exactly what the full call would on those sequences.

    Activation statistics (`x_norm`, `wpos_share`, per token [n, T]) are NaN at BOS tokens, which
    are never patched and so never part of a claim.

    fused_attention: attention by SDPA in the statistics pass, the clean passes and the suffix runs
    (attention.py; configurations it cannot reproduce keep TransformerLens's attention by themselves), GELUs
    and layer norms as one kernel each (fused_ops.py); False: TransformerLens's own forward throughout.

    on_step: called with a line of progress before the statistics pass and at each SAE of each batch (the
    claims run shows it, progress.py); the tqdm bar (`progress`) is the library's own.

    budget_bytes: the largest transient block one step may allocate (attention or MLP activations of a
    forward, SAE codes, a log-softmax chunk); default 8 MiB on CPU (under glibc's mmap threshold), 1 GiB
    on CUDA. The run's peak memory is the model, SAEs, the per-token result arrays and a few such blocks.

    precision: `auto` (default: bf16 on CUDA, fp32 elsewhere), `fp32`, `tf32` or `bf16` (precision.py);
    autocast_dtype is its deprecated spelling (bfloat16: bf16, float16: the forwards alone in fp16).
    """
    options = SpliceOptions(seed, chunk_bytes, max_stack, autocast_dtype, fused_attention, budget_bytes, precision,
                            fused_vocab)
    with matmul_scope(options.resolved(subject.tokens.device)):
        return _measure(subject, hooks, variants, batch_size, options, progress, n_seqs, on_step)


def _measure(subject: Subject, hooks: Sequence[str] | None, variants: VariantsAsked, batch_size: int,
             options: SpliceOptions, progress: bool, n_seqs: int | None,
             on_step: Callable[[str], None] | None) -> Measurements:
    fused_attention, budget_bytes = options.fused_attention, options.budget_bytes
    hooks = list(hooks) if hooks is not None else subject.sae_ids
    missing = [h for h in hooks if h not in subject.saes]
    if missing:
        raise SubjectError(f"no SAE {missing[0]!r} in subject {subject.name}; its SAE ids: {subject.sae_ids}")
    w_pos = w_pos_of(subject.model)
    for h in hooks:
        for v in variants_at(subject, h, variants):
            check_variant(v, variant_context(subject, h, None))
    if on_step is not None:
        on_step(f"{subject.name}: in-context statistics of {len(hooks)} SAEs")
    stats = in_context_stats(subject, hooks, fused_attention=fused_attention, budget_bytes=budget_bytes,
                             position_means=needs_position_means(subject, hooks, variants))
    tokens = subject.tokens if n_seqs is None else subject.tokens[:n_seqs]
    n, t = tokens.shape
    if n < 1:
        raise ValueError(f"n_seqs must select at least one sequence, got {n_seqs}")
    asked = [v for h in hooks for v in variants.get(h, ())] if isinstance(variants, Mapping) else variants
    res = Measurements(subject=subject.name, sae_ids=hooks, variants=list(dict.fromkeys(asked)),
                       context_sizes=dict(subject.context_sizes),
                       clean_ce=np.zeros((n, t - 1), dtype=np.float32),
                       clusters=None if subject.documents is None else np.asarray(subject.documents[:n]),
                       position_subspaces={h: s.position_subspace for h, s in stats.items()
                                           if s.position_subspace is not None})
    for h in hooks:
        for v in variants_at(subject, h, variants):
            res.metrics[(v, h)] = {k: np.zeros((n, t - 1), dtype=np.float32)
                                   for k in (*LOSS_METRICS, *RECON_METRICS, *variant(v).extras)}
        res.activation[h] = {k: np.zeros((n, t), dtype=np.float32) for k in ("x_norm", "wpos_share")}
    w_pos_sq = None if w_pos is None else w_pos[:t].float().pow(2).sum(-1)
    bar = tqdm(total=n * len(hooks), desc=f"splice {subject.name}", unit="seq·hook", disable=not progress)
    for i in range(0, n, batch_size):
        toks = tokens[i : i + batch_size]
        sl = slice(i, i + toks.shape[0])
        on_hook = None if on_step is None else (
            lambda j, h, i=i, m=toks.shape[0]: on_step(f"{subject.name}: sequences {i + 1}-{i + m} of {n}, SAE {h} "
                                                       f"({j + 1}/{len(hooks)})"))
        clean_ce, metrics, xs = splice_batch(subject, toks, hooks, variants, stats, i, options, on_hook)
        out = [(res.clean_ce[sl], clean_ce)] + [(res.metrics[key][k][sl], arr) for key, m in metrics.items()
                                                 for k, arr in m.items()]
        bos = toks == _bos(subject)
        for h, x in xs.items():
            xn = x.float().pow(2).sum(-1)
            out.append((res.activation[h]["x_norm"][sl], xn.sqrt().masked_fill(bos, float("nan"))))
            if w_pos_sq is not None and is_residual(subject.hook_of(h)):
                out.append((res.activation[h]["wpos_share"][sl], (w_pos_sq / xn).masked_fill(bos, float("nan"))))
            else:
                res.activation[h]["wpos_share"][sl] = np.nan
        to_host(out)
        bar.update(toks.shape[0] * len(hooks))
    bar.close()
    warn_unconverged(res)
    return res


