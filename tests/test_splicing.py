"""Splicing at one SAE (splicing.py): which variants apply, the shared SAE pass, rows alike in every sequence."""


import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.naive import naive_losses
from saeclaims.splice import in_context_stats, measure
from tests.conftest import tiny_subject


def test_positional_variants_are_left_out_where_w_pos_is_no_summand():
    """W_pos variants are measured only at residual hooks of learned-position models; elsewhere they are
    left out (the claims reading them are not applicable there), never a crash."""
    from tests.conftest import tiny_model

    subj = tiny_subject(n_seqs=2, seq_len=10)
    subj.model = tiny_model(positional="rotary")
    m = measure(subj, variants=("sae", "token_then_pos", "pos_repair_out", "shift_pos"), progress=False)
    assert {v for v, _ in m.metrics} == {"sae"}
    subj = tiny_subject(n_seqs=2, seq_len=10, hooks=["blocks.0.hook_mlp_out", "blocks.1.hook_resid_mid"])
    m = measure(subj, variants=("sae", "token_then_pos", "pos_repair_out", "shift_pos"), progress=False)
    assert set(m.metrics) == {("sae", "blocks.0.hook_mlp_out")} | {
        (v, "blocks.1.hook_resid_mid") for v in ("sae", "token_then_pos", "pos_repair_out", "shift_pos")}


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), kinds=st.sampled_from([("hook_resid_pre", "hook_resid_post"),
                                                         ("attn.hook_z", "hook_mlp_out")]))
def test_variants_share_one_sae_pass_per_sae(seed, kinds):
    """sae, random_error and pos_repair_out all encode x itself: one encode per SAE and chunk serves them
    all, with bit-identical results (every metric, every variant) to each variant encoding alone."""
    from saeclaims import splicing

    hooks = [f"blocks.1.{k}" for k in kinds]
    subj = tiny_subject(n_seqs=3, seq_len=16, seed=seed, hooks=hooks)
    variants = ("sae", "random_error", "pos_repair_out", "token_then_pos", "reencode")
    calls = []
    for sae in subj.saes.values():
        orig = sae.encode
        sae.encode = lambda x, orig=orig: calls.append(1) or orig(x)
    shared = measure(subj, variants=variants, progress=False, seed=seed)
    n_shared = len(calls)
    calls.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(splicing.SharedRoundtrip, "applies", staticmethod(lambda sae: False))
        alone = measure(subj, variants=variants, progress=False, seed=seed)
    sharing = sum(subj.hook_of(k).endswith("resid_pre") or subj.hook_of(k).endswith("resid_post") for k in hooks)
    # random_error (and pos_repair_out, at residual hooks) no longer re-encode x; one chunk per batch here
    assert len(calls) - n_shared == len(hooks) + sharing
    assert set(shared.metrics) == set(alone.metrics)
    for key in alone.metrics:
        for metric, arr in alone.metrics[key].items():
            np.testing.assert_array_equal(shared.metrics[key][metric], arr, err_msg=f"{key} {metric}")


def test_shared_roundtrip_only_without_runtime_normalisation():
    from saeclaims.splicing import SharedRoundtrip
    from tests.conftest import tiny_sae

    sae = tiny_sae(16, 32, "blocks.0.hook_resid_pre", 8)
    assert SharedRoundtrip.applies(sae)
    sae.cfg.normalize_activations = "layer_norm"
    assert not SharedRoundtrip.applies(sae)
    sae.cfg.normalize_activations = "none"
    x = torch.randn(2, 5, 16)
    shared = SharedRoundtrip(sae, x)
    codes = shared.encode(x)
    assert shared.encode(x) is codes and shared.decode(codes) is shared.decode(codes)
    assert shared.encode(x.clone()) is not codes and shared.decode(codes.clone()) is not shared.decode(codes)
    assert shared.W_dec is sae.W_dec


def test_splicing_a_few_sequences_at_a_time_changes_nothing(monkeypatch):
    from saeclaims import splicing

    subj = tiny_subject(n_seqs=5, seq_len=16, hooks=["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z"])
    variants = ("zero", "mean", "sae", "shift_pos", "random_error", "pos_repair_out", "reencode")
    whole = measure(subj, variants=variants, batch_size=5, progress=False)
    monkeypatch.setattr(splicing, "sae_rows", lambda *a, **k: 2)
    split = measure(subj, variants=variants, batch_size=5, progress=False)
    for key in whole.metrics:
        for metric, arr in whole.metrics[key].items():
            np.testing.assert_allclose(split.metrics[key][metric], arr, atol=1e-6, rtol=0, err_msg=f"{key} {metric}")


def test_same_in_every_sequence_edges():
    """Exact equality in every sequence, one element of one sequence off is enough to refuse; one sequence
    has nothing to share."""
    from saeclaims.splicing import same_in_every_sequence

    b = 3
    x = torch.randn(b, 5, 4)
    stack = torch.cat([torch.zeros(b, 5, 4), x, x[:1].expand(b, 5, 4), x[:1].expand(b, 5, 4).clone()])
    assert same_in_every_sequence(stack, 4, b) == {0, 2, 3}
    stack[3 * b + 2, 4, 3] += 1e-6  # the last sequence differs in one number
    assert same_in_every_sequence(stack, 4, b) == {0, 2}
    stack[b + 1] = stack[b]  # sequences 0 and 1 alike, 2 not
    assert same_in_every_sequence(stack, 4, b) == {0, 2}
    assert same_in_every_sequence(torch.zeros(2, 5, 4), 2, 1) == set()


def test_zero_at_a_residual_hook_runs_one_sequence(monkeypatch):
    """`zero` at a residual hook is the same input in every sequence: its suffix run is one row, not B; inside
    a block (hook_attn_out) the block's clean input differs per sequence and every row runs. Losses equal
    one hooked forward per variant either way."""
    from saeclaims import splicing

    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.0.hook_attn_out"]
    subj = tiny_subject(n_layers=2, ctx=6, n_seqs=4, seq_len=12, seed=3, hooks=hooks)
    rows = {}
    orig = splicing.suffix_run

    def spy(model, hook, stack, resid_in, r):
        rows[hook] = stack.shape[0]
        return orig(model, hook, stack, resid_in, r)

    monkeypatch.setattr(splicing, "suffix_run", spy)
    m = measure(subj, variants=("zero", "sae"), batch_size=4, progress=False)
    assert rows == {"blocks.0.hook_resid_pre": 4 + 1, "blocks.1.hook_resid_post": 4 + 1, "blocks.0.hook_attn_out": 8}
    stats = in_context_stats(subj, subj.sae_ids)
    naive = naive_losses(subj, subj.tokens, subj.sae_ids, ("zero", "sae"), stats, 0)
    for (v, hook), ref in naive.items():
        np.testing.assert_allclose(m.get(v, hook, "ce"), ref["ce"].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(m.get(v, hook, "kl"), ref["kl"].numpy(), atol=1e-5, rtol=0)
