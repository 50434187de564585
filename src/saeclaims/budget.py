"""Memory budgets of the splice kernels: how many rows a forward, an SAE pass or a log-softmax chunk may take
so that no transient block exceeds the run's budget (--sae-memory-budget)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .attention import fusable
from .subjects import Subject

DEFAULT_CHUNK_BYTES = 64 * 2**20


def chunk_rows(d_vocab: int, chunk_bytes: int, n_live: int = 2) -> int:
    """Token rows per log-softmax chunk so that `n_live` [rows, vocab] float32 blocks fit."""
    return max(1, chunk_bytes // (4 * d_vocab * n_live))


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


def sae_rows(subject: Subject, keys: Sequence[str], seq_len: int, device: torch.device,
             budget_bytes: int | None = None) -> int:
    """Sequences at a time through the SAEs `keys` (and their controls), so that the codes [rows, T, d_sae]
    stay within a budget (on CPU, under glibc's largest mmap threshold: reused, not faulted in again)."""
    budget_bytes = budget_bytes or default_budget(device)
    saes = [s for k in keys for s in (subject.saes.get(k), subject.full_context_saes.get(k)) if s is not None]
    d = subject.model.cfg.d_model  # an SAE without cfg.d_sae (the protocol does not require it): d_model
    widths = [d] + [int(getattr(sae.cfg, "d_sae", None) or d) for sae in saes]
    return max(1, budget_bytes // (4 * seq_len * max(widths)))
