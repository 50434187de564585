"""Cross-entropy over the vocabulary without materialising logits (issue 24, item 3): the log-sum-exp of
h W_U + b_U computed tile by tile with float32 accumulation, and the target logit as a float32 dot.

Why: the claims read per-token CE only (no claim reads KL), yet the vocabulary pass wrote [rows, 50257] float32
logits for every spliced variant, ~19 TB of memory traffic for the gpt2-shaped workload on a GPU. On CUDA a Triton
kernel keeps each [rows, vocab] tile on chip (an online log-sum-exp over vocabulary tiles); elsewhere a pure-torch
loop over vocabulary tiles computes the same numbers. Triton kernels also run on CPU tensors in Triton's
interpreter (TRITON_INTERPRET=1), which is how the tests check the kernel against a float64 reference.

The vocabulary needs no padding here: out-of-range columns are masked to -inf inside the kernel, which is exact.
"""

from __future__ import annotations

import os

import torch

VOCAB_TILE = 8192  # columns per step of the torch path (a [rows, 8192] float32 block at a time)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernel():
    """The Triton kernel (lse_triton.py), imported on first use and reloaded when TRITON_INTERPRET changes."""
    import importlib

    from . import lse_triton

    if lse_triton.INTERPRET != _interpreting():
        lse_triton = importlib.reload(lse_triton)
    return lse_triton.lse_kernel


def uses_triton(h: torch.Tensor) -> bool:
    """The Triton kernel runs on CUDA tensors, and on CPU tensors in Triton's interpreter."""
    return triton_available() and (h.is_cuda or _interpreting())


def linear_logsumexp(h: torch.Tensor, w_u: torch.Tensor, b_u: torch.Tensor, block_r: int = 64, block_v: int = 128,
                     block_d: int = 32) -> torch.Tensor:
    """log-sum-exp over the vocabulary of h W_U + b_U per row ([R, d] x [d, V] -> [R] float32), accumulated in
    float32 whatever the operands' dtype; no [R, V] block is ever formed whole."""
    if h.ndim != 2 or w_u.ndim != 2 or h.shape[1] != w_u.shape[0] or b_u.shape != (w_u.shape[1],):
        raise ValueError(f"shapes {tuple(h.shape)} x {tuple(w_u.shape)} + {tuple(b_u.shape)} do not chain")
    if uses_triton(h):
        import triton

        h, w_u = h.contiguous(), w_u.contiguous()
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        if h.shape[0]:
            _kernel()[(triton.cdiv(h.shape[0], block_r),)](
                h, w_u, b_u.contiguous(), out, h.shape[0], w_u.shape[1], h.shape[1], h.stride(0), w_u.stride(0),
                block_r, block_v, block_d)
        return out
    return _torch_logsumexp(h, w_u, b_u)


def _torch_logsumexp(h: torch.Tensor, w_u: torch.Tensor, b_u: torch.Tensor) -> torch.Tensor:
    """The same by vocabulary tiles in torch: a running max and sum of exponentials in float32."""
    m = torch.full((h.shape[0],), float("-inf"), dtype=torch.float32, device=h.device)
    s = torch.zeros_like(m)
    for v0 in range(0, w_u.shape[1], VOCAB_TILE):
        z = (h @ w_u[:, v0 : v0 + VOCAB_TILE]).float() + b_u[v0 : v0 + VOCAB_TILE].float()
        m_new = torch.maximum(m, z.amax(1))
        s = s * torch.exp(m - m_new) + torch.exp(z - m_new[:, None]).sum(1)
        m = m_new
    return m + torch.log(s)


def target_logits(h: torch.Tensor, w_u: torch.Tensor, b_u: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """z[t] = h . W_U[:, t] + b_U[t] per row, as a float32 dot (never read from low-precision logits)."""
    return (h.float() * w_u[:, targets].T.float()).sum(-1) + b_u[targets].float()


def fused_cross_entropy(h: torch.Tensor, w_u: torch.Tensor, b_u: torch.Tensor, targets: torch.Tensor
                        ) -> torch.Tensor:
    """Per-row cross-entropy -log softmax(h W_U + b_U)[target] = log-sum-exp - target logit, in float32."""
    return linear_logsumexp(h, w_u, b_u) - target_logits(h, w_u, b_u, targets)
