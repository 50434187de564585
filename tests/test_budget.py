"""Memory budgets of the splice kernels (budget.py): rows per step, chunks, defaults per device."""


import numpy as np
import torch

from saeclaims.splice import measure
from tests.conftest import tiny_subject


def test_fused_stack_rows_are_linear_in_sequence_length():
    from saeclaims.budget import stack_rows

    model = tiny_subject(n_seqs=1, seq_len=8).model
    cpu = torch.device("cpu")
    budget = 2**30
    assert stack_rows(model, 512, cpu, budget, fused=True) == 2 * stack_rows(model, 1024, cpu, budget, fused=True)
    assert stack_rows(model, 512, cpu, budget) == 4 * stack_rows(model, 1024, cpu, budget)
    model.blocks[0].attn.attn_type = "local"  # a block that keeps the eager path forms the T x T scores
    assert stack_rows(model, 512, cpu, budget, fused=True) == stack_rows(model, 512, cpu, budget)


def test_a_memory_budget_bounds_each_step_and_changes_no_result():
    """--sae-memory-budget sizes every transient block (forwards, SAE codes, log-softmax chunks); results are the
    same as with the default budget, since only how many sequences go through at a time changes."""
    from saeclaims.budget import sae_rows, stack_rows

    subj = tiny_subject(n_seqs=5, seq_len=16)
    small = 4 * 16 * 64 * 2  # two sequences' widest activation
    assert stack_rows(subj.model, 16, torch.device("cpu"), small, fused=True) == 2
    assert sae_rows(subj, subj.sae_ids, 16, torch.device("cpu"), 4 * 16 * 32) == 1
    variants = ("zero", "sae", "shift_pos", "random_error")
    a = measure(subj, variants=variants, progress=False)
    b = measure(subj, variants=variants, progress=False, budget_bytes=small)
    for key in a.metrics:
        for metric in ("ce", "kl", "l0"):
            np.testing.assert_allclose(a.metrics[key][metric], b.metrics[key][metric], atol=1e-5, err_msg=str(key))


def test_log_softmax_chunk_defaults_per_device_and_never_exceeds_the_budget():
    from saeclaims.budget import DEFAULT_CHUNK_BYTES, default_budget, log_softmax_chunk

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert log_softmax_chunk(cpu, None, None) == DEFAULT_CHUNK_BYTES
    assert log_softmax_chunk(gpu, None, None) == default_budget(gpu) == 2**30
    assert log_softmax_chunk(gpu, None, 2**20) == 2**20  # the budget caps the GPU default
    assert log_softmax_chunk(cpu, 2**20, None) == 2**20  # asked for: kept
    assert log_softmax_chunk(cpu, 2**20, 2**20) == 2**20  # equal to the budget: kept
    assert log_softmax_chunk(cpu, 2**21, 2**20) == 2**20  # over the budget: capped
