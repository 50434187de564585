"""Batched splice kernels against the naive way (sae_lens's evals: a full hooked forward per
variant per hook), side by side in one run. Timings are recorded, never asserted.

The batched way runs fused attention (attention.py); `batched_eager` (the whole-workload benchmarks
only) is the same kernels on TransformerLens's eager attention, for the fused path's share of the gain.
FLOPs count what each way executes (flops.workload_flops: causal attention, the shared SAE pass and one row
for `zero` at residual hooks for the batched kernels); `prefix_bound` is the bound from prefix reuse alone
(both ways counted alike)."""

from __future__ import annotations

import pytest
import torch

from saeclaims.flops import Shape, workload_flops
from saeclaims.naive import naive_losses
from saeclaims.splice import SpliceOptions, in_context_stats, needs_position_means, splice_batch
from saeclaims.subjects import Subject, load_organism
from saeclaims.variants import CLAIM_VARIANTS

from .conftest import sync

pytestmark = pytest.mark.gpu
N_SEQS = 4
VARIANT_SETS = {"1": ("sae",), "4": ("zero", "sae", "token_then_pos", "shift_pos"), "all": CLAIM_VARIANTS}


@pytest.fixture(scope="module", params=[128, 512], ids=lambda t: f"T{t}")
def organism(request, device):
    return load_organism(device=str(device), n_seqs=N_SEQS, seq_len=request.param)


def run_batched(subject: Subject, hooks, variants, stats):
    for _ in splice_batch(subject, subject.tokens, hooks, variants, stats):
        pass
    sync(subject.tokens.device)


def run_batched_eager(subject: Subject, hooks, variants, stats):
    for _ in splice_batch(subject, subject.tokens, hooks, variants, stats,
                            options=SpliceOptions(fused_attention=False)):
        pass
    sync(subject.tokens.device)


def run_naive(subject: Subject, hooks, variants, stats):
    naive_losses(subject, subject.tokens, hooks, variants, stats)
    sync(subject.tokens.device)


WAYS = {"batched": run_batched, "naive": run_naive, "batched_eager": run_batched_eager}
ATTENTION = {"batched": "causal", "batched_eager": "square", "naive": "square"}


def _record(benchmark, subject, hooks, variants, way, matmul_flops):
    n_tok = subject.tokens.numel()
    shape = Shape.of(subject)
    points = [subject.hook_of(h) for h in hooks]  # SAE ids -> hook names
    batch = subject.tokens.shape[0]  # the batched ways splice every sequence in one call
    f = workload_flops(shape, points, variants, n_tok, attention=ATTENTION[way], shared_sae=True,
                       batch_seqs=1 if way == "naive" else batch)
    executed = f["naive"] if way == "naive" else f["batched"]
    stats = in_context_stats(subject, hooks, position_means=needs_position_means(subject, hooks, variants))
    WAYS[way](subject, hooks, variants, stats)  # warm-up outside the timed region
    bound = workload_flops(shape, points, variants, n_tok, attention="causal", shared_sae=True,
                           batch_seqs=batch)["bound"]
    benchmark.extra_info.update(way=way, flop_bound=bound,
                                prefix_bound=workload_flops(shape, points, variants, n_tok)["bound"],
                                flops=executed, tokens=n_tok, hooks=list(hooks), variants=list(variants))
    benchmark.pedantic(WAYS[way], args=(subject, hooks, variants, stats), rounds=3, iterations=1)
    if benchmark.stats is not None:
        t = benchmark.stats.stats.min
        benchmark.extra_info.update(tokens_per_s=n_tok / t, flop_per_s=executed / t,
                                    matmul_share=executed / t / matmul_flops)


@pytest.mark.parametrize("way", ["batched", "naive"])
@pytest.mark.parametrize("variants", list(VARIANT_SETS), ids=lambda v: f"V{v}")
@pytest.mark.parametrize("depth", ["first", "middle", "last"])
def test_kernel(benchmark, organism, depth, variants, way, matmul_flops):
    hooks = organism.sae_ids
    hook = {"first": hooks[0], "middle": hooks[len(hooks) // 2], "last": hooks[-1]}[depth]
    benchmark.group = f"kernel T{organism.seq_len} {depth} V{variants}"
    _record(benchmark, organism, [hook], VARIANT_SETS[variants], way, matmul_flops)


@pytest.mark.parametrize("way", ["batched", "naive", "batched_eager"])
def test_claim_workload(benchmark, device, way, matmul_flops):
    """The whole claim workload on the organism: every hook x every variant, 512-token sequences."""
    subject = load_organism(device=str(device), n_seqs=N_SEQS, seq_len=512)
    benchmark.group = "workload organism T512 all hooks x all variants"
    _record(benchmark, subject, subject.sae_ids, CLAIM_VARIANTS, way, matmul_flops)


@pytest.fixture(scope="module")
def gpt2_shaped(device, request):
    """gpt2-small's shapes with random weights (no hub): 12 layers, d 768, vocab 50257, n_ctx 1024,
    random SAEs of width 24576 on every resid_pre and the last resid_post."""
    if torch.device(device).type != "cuda" and not request.config.getoption("--bench-gpt2"):
        pytest.skip("gpt2-shaped benchmarks need a GPU or --bench-gpt2")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from tests.conftest import tiny_sae

    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024,
                                  d_vocab=50257, act_fn="gelu_new", normalization_type="LNPre", seed=0)
    model = HookedTransformer(cfg).to(device).eval()
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(12)] + ["blocks.11.hook_resid_post"]
    saes = {h: tiny_sae(768, 24576, h, 128, i).to(device) for i, h in enumerate(hooks)}
    tokens = torch.randint(1, 50257, (2, 1024), device=device)
    tokens[:, 0] = 50256
    return Subject("gpt2-shaped", model, saes, tokens, {h: 128 for h in hooks})


@pytest.mark.parametrize("way", ["batched", "naive", "batched_eager"])
def test_gpt2_shaped_workload(benchmark, gpt2_shaped, way, matmul_flops):
    benchmark.group = "workload gpt2-shaped T1024 13 hooks x all variants"
    _record(benchmark, gpt2_shaped, gpt2_shaped.sae_ids, CLAIM_VARIANTS, way, matmul_flops)
