"""Batched splicing kernels: one clean pass, then only the layers after each hook, variants stacked.

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
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from .attention import fusable, fused_attention
from .fused_ops import fused_norms_and_activations
from .subjects import Subject, SubjectError, hook_order, start_layer
from .subjects.core import is_residual, replaced_inside_block
from .variants import (
    CLAIM_VARIANTS,
    EXTRA_METRICS,
    NEEDS_WPOS,
    VariantContext,
    apply_variant_ex,
    check_variant,
    count_active,
)

if TYPE_CHECKING:
    from .stats import Interval

RECON_METRICS = ("sq_err", "nmse", "l0", "cos")
LOSS_METRICS = ("ce", "dce", "kl")
DEFAULT_CHUNK_BYTES = 64 * 2**20


@dataclass
class HookStats:
    """In-context statistics at a hook: the `mean` variant, the nMSE normaliser and the SAE's mean L0
    (the `reencode` variant's k), all over non-BOS tokens at positions [1, ctx)."""

    mean: torch.Tensor  # [d]
    variance: float  # mean over in-context tokens of ||x - mean||^2
    sae_l0: float | None = None  # mean number of active SAE latents; None without an SAE at the hook


@dataclass
class Measurements:
    """Per-token results. Arrays are [n_seqs, T-1]: column p belongs to position p, whose next-token
    loss is measured there. `tidy()` gives the long (variant, hook, sequence, position) table."""

    subject: str
    hooks: list[str]
    variants: list[str]
    context_sizes: dict[str, int]
    clean_ce: np.ndarray
    metrics: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    activation: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # intervals already bootstrapped from these measurements (instruments._boot): several claims gate on the
    # same excess, and the figures redraw the claims' statistics
    interval_cache: dict[tuple, Interval] = field(default_factory=dict, compare=False, repr=False)
    # called with (variant, hook) when `get` finds no such pair: the workbench measures a pair that no claim test
    # of the run declared and returns its metrics (the read costs a pass of its own instead of failing), or None
    on_missing: Callable[[str, str], dict[str, np.ndarray] | None] | None = field(default=None, compare=False,
                                                                                 repr=False)

    @property
    def n_seqs(self) -> int:
        return int(self.clean_ce.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.clean_ce.shape[1])

    def get(self, variant: str, hook: str, metric: str) -> np.ndarray:
        if (variant, hook) not in self.metrics and self.on_missing is not None:
            found = self.on_missing(variant, hook)  # the workbench may measure the pair now
            if found is not None:
                self.metrics[(variant, hook)] = found
        try:
            return self.metrics[(variant, hook)][metric]
        except KeyError:
            raise KeyError(f"no {metric} for variant {variant} at {hook}; measured: "
                           f"{sorted(self.metrics)}") from None

    def tidy(self) -> dict[str, np.ndarray]:
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("variant", "hook", "sequence", "position",
                                                             *LOSS_METRICS, *RECON_METRICS)}
        n, p = self.clean_ce.shape
        seq, pos = np.meshgrid(np.arange(n), np.arange(p), indexing="ij")
        for (variant, hook), m in self.metrics.items():
            cols["variant"].append(np.full(n * p, variant, dtype=object))
            cols["hook"].append(np.full(n * p, hook, dtype=object))
            cols["sequence"].append(seq.ravel())
            cols["position"].append(pos.ravel())
            for k in (*LOSS_METRICS, *RECON_METRICS):
                cols[k].append(m[k].ravel())
        return {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items()}


@contextlib.contextmanager
def _fused(model, enabled: bool):
    """The splice forwards' fused kernels: SDPA attention (attention.py), one-kernel GELUs and layer norms
    (fused_ops.py); `enabled=False` keeps TransformerLens's own forward throughout. Yields the attention's
    record (attention.FusedAttention)."""
    with fused_attention(model, enabled) as state, fused_norms_and_activations(model, enabled):
        yield state


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


def attends_backwards_only(model) -> bool:
    """Whether every block attends only backwards, so activations at a position never read later tokens."""
    return all((getattr(b.attn, "_attention_dir_override", None) or model.cfg.attention_dir) == "causal"
               for b in model.blocks)


@torch.no_grad()
def in_context_stats(subject: Subject, hooks: Sequence[str], batch_size: int | None = None,
                     fused_attention: bool = True,
                     budget_bytes: int | None = None) -> dict[str, HookStats]:
    """Mean and spread of activations over positions [1, ctx) of the whole evaluation set, per SAE id.

    Only positions below the largest context are read, and a causal model's activations there do not
    depend on later tokens, so the pass runs on the first max(ctx) tokens of each sequence (and stops after
    the deepest hook's block): a fraction ctx/T of a clean pass, not a second one.
    """
    model = subject.model
    points = {k: subject.hook_of(k) for k in hooks}
    stop = max(hook_order(h)[0] for h in points.values()) + 1
    width = subject.seq_len
    if attends_backwards_only(model):
        width = min(width, max(subject.context_sizes[h] for h in hooks))
    sums = {h: 0.0 for h in hooks}
    sq = {h: 0.0 for h in hooks}
    l0 = {h: 0.0 for h in hooks}
    counts = {h: 0 for h in hooks}
    batch_size = batch_size or min(stack_rows(model, width, subject.tokens.device, budget_bytes, fused=fused_attention),
                                   sae_rows(subject, hooks, width, subject.tokens.device, budget_bytes))
    for i in range(0, len(subject.tokens), batch_size):
        toks = subject.tokens[i : i + batch_size, :width]
        with _fused(model, fused_attention):
            cache = _clean_cache(model, toks, sorted(set(points.values())), stop)
        for h in hooks:
            ctx = subject.context_sizes[h]
            act = flat(cache[points[h]])
            use = (toks[:, 1:ctx] != subject.bos_token_id)[..., None].double()  # BOS is never patched
            x = act[:, 1:ctx].double() * use
            sums[h] = sums[h] + x.sum((0, 1))
            sq[h] += float(x.pow(2).sum())
            counts[h] += int(use.sum())
            sae = subject.saes.get(h)
            if sae is not None:
                active = count_active(sae.encode(act[:, 1:ctx])).double()
                l0[h] += float((active * use[..., 0]).sum())
    out = {}
    for h in hooks:
        mu = sums[h] / counts[h]
        out[h] = HookStats(mean=mu.float(), variance=float(sq[h] / counts[h] - mu.pow(2).sum()),
                           sae_l0=l0[h] / counts[h] if h in subject.saes else None)
    return out


def variant_context(subject: Subject, key: str, stats: HookStats | None, device: torch.device | None = None,
                    seed: int = 0, first_row: int = 0) -> VariantContext:
    """What the variants read for SAE `key` in a batch whose row b is sequence first_row + b. W_pos is
    offered only at residual hooks (where it is a summand of the activation)."""
    mean = None if stats is None else stats.mean if device is None else stats.mean.to(device)
    hook = subject.hook_of(key)
    return VariantContext(sae=subject.saes.get(key), w_pos=w_pos_of(subject.model) if is_residual(hook) else None,
                          mean=mean, ctx=subject.context_sizes[key], seed=seed, first_row=first_row,
                          full_sae=subject.full_context_saes.get(key), hook=hook,
                          sae_l0=None if stats is None else stats.sae_l0)


def _clean_cache(model, toks: torch.Tensor, names: list[str], stop: int | None):
    """Activations at `names`; stop_at_layer=None runs the whole model."""
    store: dict[str, torch.Tensor] = {}

    def keep(act, hook):
        store[hook.name] = act.detach()

    model.run_with_hooks(toks, fwd_hooks=[(n, keep) for n in names], return_type=None,
                         stop_at_layer=stop if stop is not None and stop < model.cfg.n_layers else None)
    return store


def final_resid_hook(model) -> str:
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


def chunk_rows(d_vocab: int, chunk_bytes: int, n_live: int = 2) -> int:
    """Token rows per log-softmax chunk so that `n_live` [rows, vocab] float32 blocks fit."""
    return max(1, chunk_bytes // (4 * d_vocab * n_live))


@torch.no_grad()
def chunked_losses(model, clean_final: torch.Tensor, variant_final: torch.Tensor, targets: torch.Tensor,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, shared_final: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CE of the clean run, CE and KL(clean || variant) per token, from final residuals.

    clean_final [B, P, d]; variant_final [V, B, P, d]; targets [B, P]; shared_final [S, P, d]: variants whose
    final residual is the same in every sequence (same_in_every_sequence), one row each. Returns clean_ce
    [B, P], ce [V+S, B, P], kl [V+S, B, P] (the shared variants last). Only a few `rows x vocab` blocks exist
    at any time.

    A variant needs one pass over the vocabulary: its log-softmax (a shared variant's log-sum-exp once per
    position, not once per token). With h the normalised residual, z = h W_U + b_U, t the target, p the clean
    distribution and u = p W_U^T (once per chunk):
        CE_v = -log_softmax(z_v)[t],  lse_v = z_v[t] - log_softmax(z_v)[t]
        KL_v = sum p (log p - log p_v) = (lse_v - lse_c) - u . (h_v - h_c)
    The KL form differences residuals rather than large logits, so it stays exact for the clean run. The
    log-sum-exp comes out of the log-softmax because torch's log_softmax is one fused pass per row chunk,
    where torch.logsumexp runs four (max, subtract, exp, sum): 1.4x faster on a CPU (`_target_terms`).
    """
    v, b, p, d = variant_final.shape
    w_u, b_u = model.W_U.float(), model.b_U.float()
    clean_flat = model.ln_final(clean_final).reshape(b * p, d).float()
    var_flat = model.ln_final(variant_final).reshape(v, b * p, d).float()
    tgt = targets.reshape(b * p)
    n_shared = 0 if shared_final is None else shared_final.shape[0]
    clean_ce = torch.empty(b * p, device=clean_final.device)
    ce = torch.empty(v + n_shared, b * p, device=clean_final.device)
    kl = torch.empty(v + n_shared, b * p, device=clean_final.device)
    # live [rows, vocab] blocks: clean logits and probabilities, one variant's logits and log-softmax
    step = chunk_rows(w_u.shape[1], chunk_bytes, n_live=4)
    if n_shared:
        shared_flat = model.ln_final(shared_final).float()  # [S, P, d]
        lse_shared = torch.empty(n_shared, p, device=clean_final.device)
        for i in range(n_shared):
            for s in range(0, p, step):
                lse_shared[i, s : s + step] = torch.logsumexp(torch.addmm(b_u, shared_flat[i, s : s + step], w_u),
                                                              dim=-1)
        position = torch.arange(b * p, device=clean_final.device) % p
        w_t, b_t = w_u.T[tgt], b_u[tgt]  # [rows, d], [rows]: the target's unembedding column and bias
    for s in range(0, b * p, step):
        sl = slice(s, min(b * p, s + step))
        hc = clean_flat[sl]
        col = tgt[sl, None]
        z = torch.addmm(b_u, hc, w_u)
        clean_ce[sl], lse_c = _target_terms(z, col)
        u = torch.softmax(z, dim=-1) @ w_u.T  # [rows, d]
        del z
        for i in range(v):
            hv = var_flat[i, sl]
            ce[i, sl], lse_v = _target_terms(torch.addmm(b_u, hv, w_u), col)
            kl[i, sl] = (lse_v - lse_c) - (u * (hv - hc)).sum(-1)
        for i in range(n_shared):
            hv = shared_flat[i][position[sl]]
            lse_v = lse_shared[i][position[sl]]
            ce[v + i, sl] = lse_v - ((hv * w_t[sl]).sum(-1) + b_t[sl])
            kl[v + i, sl] = (lse_v - lse_c) - (u * (hv - hc)).sum(-1)
    return clean_ce.reshape(b, p), ce.reshape(-1, b, p), kl.reshape(-1, b, p)


def _target_terms(z: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE of the target column `col` [rows, 1] and the log-sum-exp of each row of the logits z [rows, vocab],
    from one log-softmax: lse = z[t] - log_softmax(z)[t] holds for any column; the target's is read anyway."""
    lt = torch.log_softmax(z, dim=-1).gather(1, col)[:, 0]
    return -lt, z.gather(1, col)[:, 0] - lt


def same_in_every_sequence(stack: torch.Tensor, n_variants: int, b: int) -> set[int]:
    """The variants (indices into the variant-major stack [V*B, T, d]) whose spliced input is exactly the same
    in all B sequences, e.g. `zero` at a residual hook: a suffix run that starts there computes the same
    thing for every sequence, so one row stands for all (exact: equal inputs give equal outputs)."""
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


def default_budget(device: torch.device) -> int:
    """The largest transient block one splice step allocates unless --sae-memory-budget says otherwise: under
    glibc's mmap threshold on CPU (reused, not faulted in again every call), 1 GiB on a GPU."""
    return 2**30 if device.type == "cuda" else 8 * 2**20


def log_softmax_chunk(device: torch.device, chunk_bytes: int | None, budget_bytes: int | None) -> int:
    """Bytes of `rows x vocab` logits per log-softmax chunk: as asked, else 64 MiB on a CPU and the default
    budget (1 GiB) on a GPU, where 64 MiB is 83 rows of gpt2's vocabulary and the loop is launch-bound (an
    H100 run of the gpt2-shaped workload: 21 s of 92 s saved, bench/results/gpu.md); never over the budget."""
    if chunk_bytes is None:
        chunk_bytes = default_budget(device) if device.type == "cuda" else DEFAULT_CHUNK_BYTES
    return chunk_bytes if budget_bytes is None else min(chunk_bytes, budget_bytes)


def stack_rows(model, seq_len: int, device: torch.device, budget_bytes: int | None = None,
               fused: bool = False) -> int:
    """Sequences per forward so that one layer's largest activation stays within a budget: the attention
    scores [heads, T, T] per sequence on TransformerLens's eager path; with fused attention (when every
    block runs fused: attention.fusable) the widest of the MLP's hidden layer, q/k/v and the residual,
    [T, width] per sequence, linear in T.

    On CPU, allocations past glibc's mmap threshold are returned to the OS after every use and paid
    again in page faults; keeping them small roughly halves wall time there. GPUs get a large budget.
    """
    budget_bytes = budget_bytes or default_budget(device)
    c = model.cfg
    if fused and fusable(model):
        per_row = 4 * seq_len * max(c.d_mlp or 0, 3 * c.n_heads * c.d_head, c.d_model)
    else:
        per_row = 4 * c.n_heads * seq_len * seq_len
    return max(1, budget_bytes // per_row)


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
    return [v for v in variants if (v != "full_context_sae" or key in subject.full_context_saes)
            and (v not in NEEDS_WPOS or wpos)]


def sae_rows(subject: Subject, keys: Sequence[str], seq_len: int, device: torch.device,
             budget_bytes: int | None = None) -> int:
    """Sequences at a time through the SAEs `keys` (and their controls), so that the codes [rows, T, d_sae]
    stay within a budget (on CPU, under glibc's largest mmap threshold: reused, not faulted in again)."""
    budget_bytes = budget_bytes or default_budget(device)
    saes = [s for k in keys for s in (subject.saes.get(k), subject.full_context_saes.get(k)) if s is not None]
    d = subject.model.cfg.d_model  # an SAE without cfg.d_sae (the protocol does not require it): d_model
    widths = [d] + [int(getattr(sae.cfg, "d_sae", None) or d) for sae in saes]
    return max(1, budget_bytes // (4 * seq_len * max(widths)))


class _SharedRoundtrip:
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


# Variants that bound their own memory (reencode solves a chunk of tokens at a time) and pay a fixed cost
# per call: spliced over the whole batch at once.
WHOLE_BATCH = frozenset({"reencode"})


def _splice_variants(subject: Subject, key: str, x: torch.Tensor, keep: torch.Tensor, names: Sequence[str],
                     stats: HookStats, seed: int, first_row: int, budget_bytes: int | None = None
                     ) -> tuple[torch.Tensor, dict]:
    """Every variant of SAE `key` for a batch x [B, T, d], a few sequences at a time (`sae_rows`;
    WHOLE_BATCH variants at once): the stacked spliced activations [V*B, T, d] (variant-major) and each
    variant's reconstruction metrics. Row b keeps its sequence index first_row + b, so nothing depends
    on the split. Within a chunk the variants that start from SAE(x) share one SAE pass (_SharedRoundtrip)."""
    b = x.shape[0]
    step = sae_rows(subject, [key], x.shape[1], x.device, budget_bytes)
    stack = torch.empty((len(names) * b, *x.shape[1:]), dtype=x.dtype, device=x.device)
    parts: dict[str, list[dict]] = {name: [] for name in names}
    split = [(v, name) for v, name in enumerate(names) if name not in WHOLE_BATCH]
    whole = [(v, name) for v, name in enumerate(names) if name in WHOLE_BATCH]
    chunks = [(i, step, split) for i in range(0, b, step)] if split else []
    if whole:
        chunks.append((0, b, whole))
    for i, rows, todo in chunks:
        xi = x[i : i + rows]
        vctx = variant_context(subject, key, stats, x.device, seed, first_row + i)
        if vctx.sae is not None and _SharedRoundtrip.applies(vctx.sae):
            vctx.sae = _SharedRoundtrip(vctx.sae, xi)
        for v, name in todo:
            xs, l0, extras = apply_variant_ex(name, xi, vctx, keep[i : i + rows])
            stack[v * b + i : v * b + i + xi.shape[0]] = xs
            parts[name].append({**_recon_metrics(xi, xs, l0, stats.variance), **extras})
    recon = {(name, key): {k: torch.cat([p[k] for p in ps]) for k in ps[0]} for name, ps in parts.items()}
    return stack, recon


def _suffix_run(model, hook: str, stack: torch.Tensor, resid_in: torch.Tensor | None, rows: int) -> torch.Tensor:
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


@torch.no_grad()
def splice_batch(subject: Subject, toks: torch.Tensor, hooks: Sequence[str], variants: VariantsAsked,
                 stats: dict[str, HookStats], seed: int = 0, first_row: int = 0,
                 chunk_bytes: int | None = None, max_stack: int | None = None,
                 autocast_dtype: torch.dtype | None = None, fused_attention: bool = True,
                 budget_bytes: int | None = None):
    """All hooks x variants for one batch of sequences.

    Returns (clean_ce [B, T-1], {(variant, hook): metrics}, {hook: x}). The log-softmax loop runs once
    over every hook's variants, so the clean log-probabilities of a chunk are formed once. Variants
    that start from SAE(x) share one SAE pass per SAE id (`_SharedRoundtrip`). fused_attention: the clean
    and suffix forwards' attention by SDPA (attention.py) and one-kernel GELUs and norms (fused_ops.py), else
    TransformerLens's own forward. Variants alike in every sequence run one row (same_in_every_sequence).
    """
    model = subject.model
    final = final_resid_hook(model)
    rows = max_stack or stack_rows(model, toks.shape[1], toks.device, budget_bytes, fused=fused_attention)
    chunk_bytes = log_softmax_chunk(toks.device, chunk_bytes, budget_bytes)
    points = {k: subject.hook_of(k) for k in hooks}
    names_needed = set(points.values()) | {final} | {block_input(h) for h in points.values()
                                                     if replaced_inside_block(h)}
    with _fused(model, fused_attention), _autocast(toks.device, autocast_dtype):
        cache = {}
        for i in range(0, toks.shape[0], rows):
            part = _clean_cache(model, toks[i : i + rows], sorted(names_needed), None)
            for k, v in part.items():
                cache.setdefault(k, []).append(v)
        cache = {k: torch.cat(v) for k, v in cache.items()}
    keep = toks == subject.bos_token_id  # BOS anywhere stays clean, as in sae_lens
    finals, shared, recon, order = [], [], {}, []  # order: (variant, SAE id) in finals then shared order
    order_shared = []
    for h in hooks:
        hook = points[h]
        x = flat(cache[hook])
        b, t = x.shape[:2]
        names = variants_at(subject, h, variants)
        stack, recon_h = _splice_variants(subject, h, x, keep, names, stats[h], seed, first_row,
                                          budget_bytes)  # [V*B, T, d]
        recon.update(recon_h)
        resid_in = cache[block_input(hook)] if replaced_inside_block(hook) else None
        alike = set() if resid_in is not None else same_in_every_sequence(stack, len(names), b)
        own = [v for v in range(len(names)) if v not in alike]
        if alike:  # one row each for the variants whose input is the same in every sequence
            pick = [v * b + j for v in own for j in range(b)] + [v * b for v in sorted(alike)]
            stack = stack[torch.tensor(pick, device=stack.device)]
        with _fused(model, fused_attention), _autocast(toks.device, autocast_dtype):
            out = _suffix_run(model, hook, stack, resid_in, rows).float()[:, :-1]
        del stack
        finals.append(out[: len(own) * b].reshape(len(own), b, t - 1, out.shape[-1]))  # own may be empty
        shared.append(out[len(own) * b :])
        order += [(names[v], h) for v in own]
        order_shared += [(names[v], h) for v in sorted(alike)]
    shared_final = torch.cat(shared) if order_shared else None
    with _fused(model, fused_attention):  # ln_final
        clean_ce, ce, kl = chunked_losses(model, cache[final][:, :-1].float(), torch.cat(finals), toks[:, 1:],
                                          chunk_bytes, shared_final)
    metrics = {}
    for i, key in enumerate(order + order_shared):
        m = {k: v[:, :-1] for k, v in recon[key].items()}
        m.update(ce=ce[i], dce=ce[i] - clean_ce, kl=kl[i])
        metrics[key] = m
    return clean_ce, metrics, {h: flat(cache[points[h]]) for h in hooks}


class _autocast:
    def __init__(self, device: torch.device, dtype: torch.dtype | None):
        self.ctx = (torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None
                    else torch.autocast(device_type=device.type, enabled=False))

    def __enter__(self):
        return self.ctx.__enter__()

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def measure(subject: Subject, hooks: Sequence[str] | None = None,
            variants: VariantsAsked = CLAIM_VARIANTS, batch_size: int = 16, seed: int = 0,
            chunk_bytes: int | None = None, max_stack: int | None = None,
            autocast_dtype: torch.dtype | None = None, progress: bool = True,
            n_seqs: int | None = None, fused_attention: bool = True,
            budget_bytes: int | None = None) -> Measurements:
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

    budget_bytes: the largest transient block one step may allocate (attention or MLP activations of a
    forward, SAE codes, a log-softmax chunk); default 8 MiB on CPU (under glibc's mmap threshold), 1 GiB
    on CUDA. The run's peak memory is the model, SAEs, the per-token result arrays and a few such blocks.
    """
    hooks = list(hooks) if hooks is not None else subject.hooks
    missing = [h for h in hooks if h not in subject.saes]
    if missing:
        raise SubjectError(f"no SAE {missing[0]!r} in subject {subject.name}; its SAE ids: {subject.hooks}")
    w_pos = w_pos_of(subject.model)
    for h in hooks:
        for v in variants_at(subject, h, variants):
            check_variant(v, variant_context(subject, h, None))
    stats = in_context_stats(subject, hooks, fused_attention=fused_attention, budget_bytes=budget_bytes)
    tokens = subject.tokens if n_seqs is None else subject.tokens[:n_seqs]
    n, t = tokens.shape
    if n < 1:
        raise ValueError(f"n_seqs must select at least one sequence, got {n_seqs}")
    asked = [v for h in hooks for v in variants.get(h, ())] if isinstance(variants, Mapping) else variants
    res = Measurements(subject=subject.name, hooks=hooks, variants=list(dict.fromkeys(asked)),
                       context_sizes=dict(subject.context_sizes),
                       clean_ce=np.zeros((n, t - 1), dtype=np.float32))
    for h in hooks:
        for v in variants_at(subject, h, variants):
            res.metrics[(v, h)] = {k: np.zeros((n, t - 1), dtype=np.float32)
                                   for k in (*LOSS_METRICS, *RECON_METRICS, *EXTRA_METRICS.get(v, ()))}
        res.activation[h] = {k: np.zeros((n, t), dtype=np.float32) for k in ("x_norm", "wpos_share")}
    w_pos_sq = None if w_pos is None else w_pos[:t].float().pow(2).sum(-1)
    bar = tqdm(total=n * len(hooks), desc=f"splice {subject.name}", unit="seq·hook", disable=not progress)
    for i in range(0, n, batch_size):
        toks = tokens[i : i + batch_size]
        sl = slice(i, i + toks.shape[0])
        clean_ce, metrics, xs = splice_batch(subject, toks, hooks, variants, stats, seed, i, chunk_bytes,
                                             max_stack, autocast_dtype, fused_attention, budget_bytes)
        res.clean_ce[sl] = clean_ce.cpu().numpy()
        for key, m in metrics.items():
            for k, arr in m.items():
                res.metrics[key][k][sl] = arr.float().cpu().numpy()
        bos = toks == subject.bos_token_id
        for h, x in xs.items():
            xn = x.float().pow(2).sum(-1)
            res.activation[h]["x_norm"][sl] = xn.sqrt().masked_fill(bos, float("nan")).cpu().numpy()
            if w_pos_sq is not None and is_residual(subject.hook_of(h)):
                res.activation[h]["wpos_share"][sl] = (w_pos_sq / xn).masked_fill(bos, float("nan")).cpu().numpy()
            else:
                res.activation[h]["wpos_share"][sl] = np.nan
        bar.update(toks.shape[0] * len(hooks))
    bar.close()
    _warn_unconverged(res)
    return res


def _warn_unconverged(m: Measurements) -> None:
    for (v, h), metrics in m.metrics.items():
        flags = metrics.get("unconverged")
        if flags is not None and np.nansum(flags) > 0:
            warnings.warn(f"variant {v} at {h}: the solver did not converge on {int(np.nansum(flags))} of "
                          f"{int(np.isfinite(flags).sum())} tokens; statistics reading them refuse to "
                          "(instruments.UnconvergedError)", RuntimeWarning, stacklevel=3)
