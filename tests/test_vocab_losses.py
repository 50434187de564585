"""The vocabulary pass (vocab_losses.py): chunking and shared rows change no loss."""


import torch

from saeclaims.budget import chunk_rows
from saeclaims.vocab_losses import chunked_losses
from tests.conftest import tiny_subject


def test_chunk_size_does_not_change_losses():
    torch.manual_seed(0)
    subj = tiny_subject(n_seqs=2, seq_len=16)
    model = subj.model
    clean = torch.randn(2, 15, 16)
    var = torch.randn(3, 2, 15, 16)
    tgt = torch.randint(0, 50, (2, 15))
    ref = chunked_losses(model, clean, var, tgt, chunk_bytes=10**9)
    small = chunked_losses(model, clean, var, tgt, chunk_bytes=4 * 50 * 4 * 7)  # 7 rows a chunk
    for r, s in zip(ref, small):
        torch.testing.assert_close(r, s)
    assert chunk_rows(50, 4 * 50 * 4 * 7, n_live=4) == 7


def test_shared_final_equals_its_rows_repeated():
    """chunked_losses with a variant given once per position (shared_final) equals the same variant repeated
    in every sequence, for chunks that do not divide the positions."""
    torch.manual_seed(0)
    model = tiny_subject(n_seqs=2, seq_len=16).model
    clean = torch.randn(3, 15, 16)
    var = torch.randn(2, 3, 15, 16)
    shared = torch.randn(2, 15, 16)
    tgt = torch.randint(0, 50, (3, 15))
    for chunk in (10**9, 4 * 50 * 4 * 7):
        ref = chunked_losses(model, clean, torch.cat([var, shared[:, None].expand(2, 3, 15, 16)]), tgt,
                             chunk_bytes=chunk)
        got = chunked_losses(model, clean, var, tgt, chunk_bytes=chunk, shared_final=shared)
        for r, g in zip(ref, got):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)
        assert got[1].shape == (4, 3, 15)
