"""The pass over the vocabulary: per-token CE and KL(clean || variant) of every spliced run, a chunk of token
rows at a time, so memory never holds variants x batch x positions x vocabulary."""

from __future__ import annotations

import torch

from .budget import DEFAULT_CHUNK_BYTES, chunk_rows
from .fused_lse import linear_logsumexp


def final_resid_hook(model) -> str:
    return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"


@torch.no_grad()
def chunked_losses(model, clean_final: torch.Tensor, variant_final: torch.Tensor, targets: torch.Tensor,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, shared_final: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    dtype: the operands of the two vocabulary matmuls (h W_U and p W_U^T; precision.py's vocab_dtype). Whatever
    it is, the logits are taken to float32 before the log-softmax, so the log-sum-exp, CE and KL accumulate in
    float32; with float32 every step is as it always was.
    """
    v, b, p, d = variant_final.shape
    w_u, b_u = model.W_U.float(), model.b_U.float()
    mm = _VocabMatmuls(w_u, b_u, dtype)
    clean_flat = model.ln_final(clean_final).reshape(b * p, d).float()
    var_flat = model.ln_final(variant_final).reshape(v, b * p, d).float()
    tgt = targets.reshape(b * p)
    n_shared = 0 if shared_final is None else shared_final.shape[0]
    clean_ce = torch.empty(b * p, device=clean_final.device)
    ce = torch.empty(v + n_shared, b * p, device=clean_final.device)
    kl = torch.empty(v + n_shared, b * p, device=clean_final.device)
    # live [rows, vocab] blocks: clean logits and probabilities, one variant's logits and log-softmax
    step = chunk_rows(w_u.shape[1], chunk_bytes, n_live=4 if dtype == torch.float32 else 5)
    if n_shared:
        shared_flat = model.ln_final(shared_final).float()  # [S, P, d]
        lse_shared = torch.empty(n_shared, p, device=clean_final.device)
        for i in range(n_shared):
            for s in range(0, p, step):
                lse_shared[i, s : s + step] = torch.logsumexp(mm.logits(shared_flat[i, s : s + step]), dim=-1)
        position = torch.arange(b * p, device=clean_final.device) % p
    if n_shared or mm.rounded:
        w_t, b_t = w_u.T[tgt], b_u[tgt]  # [rows, d], [rows]: the target's unembedding column and bias (float32)
    for s in range(0, b * p, step):
        sl = slice(s, min(b * p, s + step))
        hc = clean_flat[sl]
        col = tgt[sl, None]
        z = mm.logits(hc)
        clean_ce[sl], lse_c = _target_terms(z, col)
        if mm.rounded:  # the target's logit in float32 (the rounded one would bias every CE by its rounding)
            clean_ce[sl] = lse_c - ((hc * w_t[sl]).sum(-1) + b_t[sl])
        u = mm.expected_unembedding(z)  # [rows, d]
        del z
        for i in range(v):
            hv = var_flat[i, sl]
            ce[i, sl], lse_v = _target_terms(mm.logits(hv), col)
            if mm.rounded:
                ce[i, sl] = lse_v - ((hv * w_t[sl]).sum(-1) + b_t[sl])
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


class _VocabMatmuls:
    """The two vocabulary matmuls in the operand dtype asked (weights converted once per call); results float32."""

    def __init__(self, w_u: torch.Tensor, b_u: torch.Tensor, dtype: torch.dtype):
        self.dtype = dtype
        self.rounded = dtype != torch.float32  # logits carry the operands' rounding
        self.w, self.b = (w_u, b_u) if dtype == w_u.dtype else (w_u.to(dtype), b_u.to(dtype))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h W_U + b_U [rows, vocab], float32 (with float32 operands: exactly torch.addmm's)."""
        return torch.addmm(self.b, h.to(self.dtype), self.w).float()

    def expected_unembedding(self, z: torch.Tensor) -> torch.Tensor:
        """softmax(z) W_U^T [rows, d], float32: the clean distribution's mean unembedding (the KL's u)."""
        return (torch.softmax(z, dim=-1).to(self.dtype) @ self.w.T).float()


@torch.no_grad()
def fused_losses(model, clean_final: torch.Tensor, variant_final: torch.Tensor, targets: torch.Tensor,
                 shared_final: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """chunked_losses' CE without materialised logits (fused_lse.py): every run's rows stacked, the log-sum-exp
    tile by tile in float32, the target logit a float32 dot; a shared variant's log-sum-exp once per position.
    KL is not computed (no claim reads it; it needs the clean distribution): NaN."""
    v, b, p, d = variant_final.shape
    w_u, b_u = model.W_U.to(dtype), model.b_U.float()
    tgt = targets.reshape(b * p)
    w_t, b_t = model.W_U.float()[:, tgt].T, b_u[tgt]  # [rows, d], [rows]: each token's target column, gathered once

    def target_logit(h: torch.Tensor) -> torch.Tensor:  # float32 dot, never read from rounded logits
        return (h * w_t).sum(-1) + b_t

    clean_flat = model.ln_final(clean_final).reshape(b * p, d).float()
    var_flat = model.ln_final(variant_final).reshape(v, b * p, d).float()
    clean_ce = linear_logsumexp(clean_flat.to(dtype), w_u, b_u) - target_logit(clean_flat)
    lse = linear_logsumexp(var_flat.reshape(v * b * p, d).to(dtype), w_u, b_u).reshape(v, b * p)  # one launch
    ce = [lse[i] - target_logit(var_flat[i]) for i in range(v)]
    if shared_final is not None and shared_final.shape[0]:
        shared = model.ln_final(shared_final).float()  # [S, P, d]
        lse_s = linear_logsumexp(shared.reshape(-1, d).to(dtype), w_u, b_u).reshape(-1, p)  # once per position
        position = torch.arange(b * p, device=tgt.device) % p
        ce += [lse_s[i][position] - target_logit(shared[i][position]) for i in range(shared.shape[0])]
    ce_all = torch.stack(ce)
    return clean_ce.reshape(b, p), ce_all.reshape(-1, b, p), torch.full_like(ce_all, float("nan")).reshape(-1, b, p)

