"""Peak memory of one loss-kernel call is bounded by its chunk, whatever the vocabulary.

CPU: peak resident memory (Linux VmHWM, reset through /proc/self/clear_refs; tracemalloc cannot see
torch's allocator). GPU: torch.cuda.max_memory_allocated.
"""

import os
from pathlib import Path

import pytest
import torch

from saeclaims.vocab_losses import chunked_losses

CHUNK = 16 * 2**20
SLACK = 24 * 2**20  # allocator and page granularity, independent of vocabulary


class _Unembed(torch.nn.Module):
    def __init__(self, d, vocab, device):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W_U = torch.randn(d, vocab, generator=g).to(device)
        self.b_U = torch.zeros(vocab, device=device)
        self.ln_final = torch.nn.Identity()


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def peak_bytes(vocab: int, device: str) -> int:
    model = _Unembed(32, vocab, device)
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(2, 255, 32, generator=g).to(device)
    var = torch.randn(6, 2, 255, 32, generator=g).to(device)
    tgt = torch.randint(0, vocab, (2, 255), generator=g).to(device)
    chunked_losses(model, clean, var, tgt, chunk_bytes=CHUNK)  # warm-up: allocator pools, kernels
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        chunked_losses(model, clean, var, tgt, chunk_bytes=CHUNK)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _rss("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    chunked_losses(model, clean, var, tgt, chunk_bytes=CHUNK)
    return _rss("VmHWM:") - base


def _can_measure(device) -> bool:
    if device.type == "cuda":
        return True
    return os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").exists()


@pytest.mark.gpu
def test_peak_memory_does_not_grow_with_vocabulary(device):
    if not _can_measure(device):
        pytest.skip("no way to read peak memory on this platform")
    small, large = 4096, 131072
    full_large = 4 * 6 * 2 * 255 * large  # what materialising variants x batch x positions x vocab costs
    p_small, p_large = peak_bytes(small, device.type), peak_bytes(large, device.type)
    print(f"peak bytes: vocab {small}: {p_small / 2**20:.1f} MiB, vocab {large}: {p_large / 2**20:.1f} MiB "
          f"(full materialisation {full_large / 2**20:.0f} MiB, chunk {CHUNK / 2**20:.0f} MiB)")
    assert p_large <= CHUNK + SLACK
    assert p_large - p_small <= CHUNK
