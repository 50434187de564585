"""Splicing kernels against the obvious way (one hooked forward per variant) on tiny random models."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.naive import naive_losses
from saeclaims.splice import chunk_rows, chunked_losses, in_context_stats, measure
from saeclaims.subjects import SubjectError
from saeclaims.variants import VARIANTS
from tests.conftest import tiny_subject


@given(seed=st.integers(0, 1000), n_layers=st.integers(1, 3), ctx=st.integers(2, 12))
def test_stacked_variants_equal_separate_hooked_forwards(seed, n_layers, ctx):
    """Every variant, pos_repair_out and reencode included, against one run_with_hooks forward each."""
    assert {"pos_repair_out", "reencode"} <= set(VARIANTS)
    subj = tiny_subject(n_layers=n_layers, ctx=ctx, n_seqs=3, seq_len=20, seed=seed)
    m = measure(subj, variants=VARIANTS, batch_size=8, seed=seed, progress=False)
    stats = in_context_stats(subj, subj.hooks)
    naive = naive_losses(subj, subj.tokens, subj.hooks, VARIANTS, stats, seed)
    for (v, hook), ref in naive.items():
        np.testing.assert_allclose(m.get(v, hook, "ce"), ref["ce"].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(m.get(v, hook, "kl"), ref["kl"].numpy(), atol=1e-5, rtol=0)


@given(seed=st.integers(0, 1000))
def test_clean_variant_adds_no_loss(seed):
    subj = tiny_subject(seed=seed, n_seqs=2, seq_len=16)
    m = measure(subj, variants=("clean",), progress=False)
    for hook in subj.hooks:
        np.testing.assert_allclose(m.get("clean", hook, "dce"), 0, atol=1e-5)
        np.testing.assert_allclose(m.get("clean", hook, "kl"), 0, atol=1e-5)
        np.testing.assert_allclose(m.get("clean", hook, "sq_err"), 0, atol=1e-10)


@given(seed=st.integers(0, 1000))
def test_identity_sae_changes_nothing(seed):
    subj = tiny_subject(seed=seed, identity=True, n_seqs=2, seq_len=16)
    m = measure(subj, variants=("sae", "token_then_pos", "shift_pos", "pos_repair_out", "reencode"), progress=False)
    for key, metrics in m.metrics.items():
        np.testing.assert_allclose(metrics["dce"], 0, atol=1e-4, err_msg=str(key))
        np.testing.assert_allclose(metrics["kl"], 0, atol=1e-5, err_msg=str(key))


@given(seed=st.integers(0, 1000), batch=st.integers(1, 5))
def test_batched_equals_one_by_one(seed, batch):
    """Batch size and stack splitting are implementation details: results must not depend on them
    (random_error's directions are drawn per sequence, not per batch)."""
    subj = tiny_subject(seed=seed, n_seqs=5, seq_len=16)
    variants = ("zero", "mean", "sae", "token_then_pos", "shift_pos", "random_error", "pos_repair_out", "reencode")
    a = measure(subj, variants=variants, batch_size=1, progress=False)
    b = measure(subj, variants=variants, batch_size=batch, max_stack=3, progress=False)
    for key in a.metrics:
        for metric in ("ce", "kl", "sq_err", "l0"):
            np.testing.assert_allclose(a.metrics[key][metric], b.metrics[key][metric], atol=1e-5,
                                       err_msg=f"{key} {metric}")


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


def test_bos_tokens_inside_a_sequence_are_not_patched():
    subj = tiny_subject(n_seqs=2, seq_len=12)
    subj.tokens[0, 6] = 0  # a document boundary
    m = measure(subj, variants=("sae",), progress=False)
    for hook in subj.hooks:
        assert m.get("sae", hook, "sq_err")[0, 6] == 0
        assert np.isnan(m.get("sae", hook, "l0")[0, 6])
        assert m.get("sae", hook, "sq_err")[0, 5] > 0


def test_tidy_table_has_one_row_per_variant_hook_sequence_position():
    subj = tiny_subject(n_seqs=2, seq_len=10)
    m = measure(subj, variants=("sae", "zero"), progress=False)
    t = m.tidy()
    n = 2 * len(subj.hooks) * 2 * 9
    assert all(len(v) == n for v in t.values())
    assert set(t["variant"]) == {"sae", "zero"}


def test_measuring_a_hook_without_sae_is_an_error():
    subj = tiny_subject(n_seqs=2, seq_len=10, hooks=["blocks.0.hook_resid_pre"])
    with pytest.raises(SubjectError, match="no SAE 'blocks.1.hook_resid_pre'"):
        measure(subj, hooks=["blocks.1.hook_resid_pre"], progress=False)


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


HOOK_KINDS = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), layer=st.integers(0, 1))
def test_every_hook_kind_stacked_equals_separate_hooked_forwards(seed, layer):
    """attn.hook_z, attn_out, resid_mid, mlp_out start from the block's cached residual input with the
    hooked activation replaced; every variant equals one run_with_hooks forward at the hook (atol 1e-5)."""
    hooks = [f"blocks.{layer}.{k}" for k in HOOK_KINDS]
    subj = tiny_subject(n_layers=2, ctx=6, n_seqs=3, seq_len=14, seed=seed, hooks=hooks)
    m = measure(subj, variants=VARIANTS, batch_size=2, max_stack=4, seed=seed, progress=False)
    naive = naive_losses(subj, subj.tokens, subj.hooks, VARIANTS, in_context_stats(subj, subj.hooks), seed)
    assert set(naive) == set(m.metrics)
    for (v, hook), ref in naive.items():
        np.testing.assert_allclose(m.get(v, hook, "ce"), ref["ce"].numpy(), atol=1e-5, rtol=0, err_msg=f"{v} {hook}")
        np.testing.assert_allclose(m.get(v, hook, "kl"), ref["kl"].numpy(), atol=1e-5, rtol=0, err_msg=f"{v} {hook}")


def test_two_saes_on_one_hook_are_measured_separately_by_id():
    from tests.conftest import tiny_sae

    hook = "blocks.1.hook_attn_out"
    subj = tiny_subject(n_seqs=2, seq_len=12, hooks=[hook])
    subj.saes = {"small": tiny_sae(16, 32, hook, 8, seed=1), "other": tiny_sae(16, 32, hook, 8, seed=2)}
    subj.context_sizes = {"small": 8, "other": 8}
    assert subj.sae_ids == ["other", "small"] and subj.ids_at(hook) == ["other", "small"]
    m = measure(subj, variants=("sae",), progress=False)
    assert m.hooks == ["other", "small"]
    assert not np.allclose(m.get("sae", "small", "dce"), m.get("sae", "other", "dce"))
    one = measure(subj, hooks=["small"], variants=("sae",), progress=False)
    np.testing.assert_allclose(one.get("sae", "small", "dce"), m.get("sae", "small", "dce"), atol=1e-6)


def test_activation_statistics_leave_out_bos_tokens():
    """x_norm and wpos_share are NaN at BOS (position 0 and inside a sequence), which no claim reads."""
    from saeclaims.instruments import Quantity, mean_of

    subj = tiny_subject(n_seqs=3, seq_len=12)
    subj.tokens[1, 6] = 0  # a document boundary
    m = measure(subj, variants=("sae",), progress=False)
    hook = subj.hooks[1]
    for stat in ("x_norm", "wpos_share"):
        arr = m.activation[hook][stat]
        assert np.isnan(arr[:, 0]).all() and np.isnan(arr[1, 6])
        assert np.isfinite(np.delete(arr[:, 1:].ravel(), 6 - 1 + 11)).all()
        iv = mean_of(m, Quantity("sae", hook, stat, 1, None))
        assert iv.estimate == pytest.approx(np.nanmean(arr[:, 1:]), rel=1e-6)
        assert iv.estimate != pytest.approx(np.mean(np.nan_to_num(arr[:, 1:])), rel=1e-3)
