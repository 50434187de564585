"""The vocabulary pass without materialised logits (fused_lse.py): the torch tile loop and the Triton kernel (in
Triton's interpreter on this CPU) against a float64 reference, and the fused losses against the chunked pass."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saeclaims.fused_lse import fused_cross_entropy, linear_logsumexp, target_logits, triton_available, uses_triton

SHAPES = [(1, 16, 5), (37, 40, 101), (70, 33, 300)]  # rows, d, vocab: none a multiple of the kernel's blocks


def _reference(h, w, b):
    return torch.logsumexp(h.double() @ w.double() + b.double(), -1)


@pytest.mark.parametrize(("r", "d", "v"), SHAPES)
def test_the_torch_tiles_equal_a_float64_log_sum_exp(r, d, v, monkeypatch):
    monkeypatch.setattr("saeclaims.fused_lse.VOCAB_TILE", 64)  # several tiles, the last one short
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    g = torch.Generator().manual_seed(r)
    h, w, b = torch.randn(r, d, generator=g), torch.randn(d, v, generator=g), torch.randn(v, generator=g)
    assert not uses_triton(h)
    torch.testing.assert_close(linear_logsumexp(h, w, b).double(), _reference(h, w, b), atol=1e-5, rtol=1e-6)


def test_cross_entropy_is_log_sum_exp_minus_the_float32_target_logit():
    g = torch.Generator().manual_seed(0)
    h, w, b = torch.randn(9, 12, generator=g), torch.randn(12, 50, generator=g), torch.randn(50, generator=g)
    t = torch.randint(0, 50, (9,), generator=g)
    ref = torch.nn.functional.cross_entropy(h.double() @ w.double() + b.double(), t, reduction="none")
    torch.testing.assert_close(fused_cross_entropy(h, w, b, t).double(), ref, atol=1e-5, rtol=1e-6)
    assert target_logits(h.bfloat16(), w, b, t).dtype == torch.float32


def test_bf16_operands_accumulate_in_float32():
    """bf16 operands: the log-sum-exp differs from float64's by the operands' rounding only (no bf16 sums)."""
    g = torch.Generator().manual_seed(1)
    h, w, b = torch.randn(20, 64, generator=g), torch.randn(64, 700, generator=g) / 8, torch.randn(700, generator=g)
    out = linear_logsumexp(h.bfloat16(), w.bfloat16(), b)
    assert out.dtype == torch.float32
    ref = _reference(h.bfloat16().float(), w.bfloat16().float(), b)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=0)


@pytest.mark.skipif(not triton_available(), reason="triton is not installed (pip install triton)")
def test_the_triton_kernel_in_the_interpreter_equals_float64_and_the_chunked_pass():
    """In a process with TRITON_INTERPRET=1 (tests/triton_interpret_check.py): the kernel against a float64
    log-sum-exp on ragged shapes, and a whole splice batch through fused_losses against chunked_losses (the same
    CE for the clean run and every variant, shared ones included; KL not computed, NaN)."""
    script = Path(__file__).with_name("triton_interpret_check.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 4, done.stdout + done.stderr[-3000:]
    assert all(line.startswith("ok ") for line in lines), "\n".join(lines)
