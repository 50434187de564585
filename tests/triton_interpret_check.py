"""Run by tests/test_fused_lse.py in a process of its own with TRITON_INTERPRET=1: Triton decides at import whether
its kernels (and its standard library) run in the interpreter, so the mode cannot change inside the test process.
Prints one line per check: `ok NAME` or `FAIL NAME: why`."""

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from saeclaims.fused_lse import linear_logsumexp, uses_triton  # noqa: E402


def check(name, fn):
    try:
        fn()
        print(f"ok {name}")
    except Exception as exc:  # the test reads the line
        print(f"FAIL {name}: {type(exc).__name__}: {exc}".replace("\n", " "))


def kernel_matches_float64(r, d, v):
    g = torch.Generator().manual_seed(r)
    h, w, b = torch.randn(r, d, generator=g), torch.randn(d, v, generator=g), torch.randn(v, generator=g)
    assert uses_triton(h)
    out = linear_logsumexp(h, w, b, block_r=16, block_v=32, block_d=16)
    ref = torch.logsumexp(h.double() @ w.double() + b.double(), -1)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-6)


def fused_batch_matches_chunked():
    from saeclaims.splice import SpliceOptions, in_context_stats, splice_batch
    from saeclaims.variants import CLAIM_VARIANTS
    from tests.conftest import tiny_subject

    subj = tiny_subject(n_seqs=2, seq_len=12)
    stats = in_context_stats(subj, subj.sae_ids)
    clean, plain, _ = splice_batch(subj, subj.tokens, subj.sae_ids, CLAIM_VARIANTS, stats)
    fused_clean, fused, _ = splice_batch(subj, subj.tokens, subj.sae_ids, CLAIM_VARIANTS, stats,
                                         options=SpliceOptions(fused_vocab=True))
    torch.testing.assert_close(fused_clean, clean, atol=1e-4, rtol=1e-5)
    assert set(fused) == set(plain)
    for key in plain:
        torch.testing.assert_close(fused[key]["ce"], plain[key]["ce"], atol=1e-4, rtol=1e-5)
        assert torch.isnan(fused[key]["kl"]).all()


for shape in [(1, 16, 5), (37, 40, 101), (70, 33, 300)]:  # none a multiple of the kernel's blocks
    check(f"kernel {shape}", lambda s=shape: kernel_matches_float64(*s))
check("fused splice batch", fused_batch_matches_chunked)
