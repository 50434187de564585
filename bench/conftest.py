"""Benchmark fixtures and the side-by-side summary (naive / batched, against the FLOP bound)."""

from __future__ import annotations

import time

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--bench-gpt2", action="store_true",
                     help="also run the gpt2-small-shaped benchmarks (random weights) on CPU")


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="session")
def matmul_flops(device) -> float:
    """Measured matmul throughput of this device (FLOP/s), from a short torch.mm probe."""
    n = 2048 if torch.device(device).type == "cuda" else 512
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    by_group: dict[str, dict[str, object]] = {}
    for bench in session.benchmarks:
        if bench.stats is None or "way" not in bench.extra_info:
            continue
        by_group.setdefault(bench.group, {})[bench.extra_info["way"]] = bench
    rows = []
    for group, ways in sorted(by_group.items()):
        if {"naive", "batched"} <= set(ways):
            n, b = ways["naive"], ways["batched"]
            ratio = n.stats.min / b.stats.min
            bound = b.extra_info.get("flop_bound", float("nan"))
            rows.append(f"{group:55s} naive {n.stats.min * 1e3:9.1f} ms  batched {b.stats.min * 1e3:9.1f} ms  "
                        f"ratio {ratio:5.2f}  FLOP bound {bound:5.2f}  ({ratio / bound:.0%} of bound)")
            for way, bench in sorted(ways.items()):
                info = bench.extra_info
                if "flop_per_s" in info:
                    rows.append(f"    {way:14s} {info['flop_per_s'] / 1e9:8.1f} GFLOP/s  "
                                f"{info['matmul_share']:6.1%} of the torch.mm probe  "
                                f"{info['tokens_per_s']:9.0f} tokens/s")
            if "batched_eager" in ways:
                e = ways["batched_eager"]
                rows.append(f"    fused attention: batched_eager / batched {e.stats.min / b.stats.min:5.2f}  "
                            f"(prefix-reuse FLOP bound {b.extra_info.get('prefix_bound', float('nan')):5.2f})")
    if rows:
        terminalreporter.write_sep("-", "naive / batched, same run (min times)")
        for r in rows:
            terminalreporter.write_line(r)
