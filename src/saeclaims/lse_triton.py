"""The Triton kernel of fused_lse.py, in a module of its own: Triton reads TRITON_INTERPRET when a kernel is
decorated and its interpreter rebinds `tl` in the kernel's module globals, so the kernel lives at module level and
this module is imported (or reloaded, when the mode changes) only where Triton runs. Importing it needs triton."""

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def lse_kernel(h_ptr, w_ptr, b_ptr, out_ptr, R, V, D, stride_hr, stride_wd,
               BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    """Per row of h: log-sum-exp over the vocabulary of h W + b, an online max and sum over vocabulary tiles,
    each tile's logits accumulated in float32 on chip; columns past V are -inf."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    m = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_R,), tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        cmask = cols < V
        acc = tl.zeros((BLOCK_R, BLOCK_V), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            h = tl.load(h_ptr + rows[:, None] * stride_hr + ds[None, :], mask=rmask[:, None] & dmask[None, :],
                        other=0.0)
            w = tl.load(w_ptr + ds[:, None] * stride_wd + cols[None, :], mask=dmask[:, None] & cmask[None, :],
                        other=0.0)
            acc += tl.dot(h, w)
        b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        z = tl.where(cmask[None, :], acc + b[None, :], float("-inf"))
        m_new = tl.maximum(m, tl.max(z, 1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), 1)
        m = m_new
    tl.store(out_ptr + rows, m + tl.log(s), mask=rmask)
