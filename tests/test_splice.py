"""Splicing kernels against the obvious way (one hooked forward per variant) on tiny random models."""

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from saeclaims.naive import naive_losses
from saeclaims.splice import in_context_stats, measure
from saeclaims.subjects import SubjectError
from saeclaims.variants import VARIANTS
from tests.conftest import tiny_subject

# reencode_2x on a tiny SAE asks for 2 x L0 >= d_model atoms: its codes fill the space, and which
# d_model-atom support an exact fit lands on can flip on the last-bit difference between a stacked and a
# single forward's input (seed 76: 5.6e-5 nats at 10 of 57 tokens; every other variant and 80 random cases
# agree to 5e-7). Splicing another sequence's or SAE's codes moves the loss by far more (sae vs reencode_2x:
# 0.07 nats median at that case).
_ATOL = {"reencode_2x": 1e-4}


@given(seed=st.integers(0, 1000), n_layers=st.integers(1, 3), ctx=st.integers(2, 12))
@example(seed=76, n_layers=3, ctx=2)
def test_stacked_variants_equal_separate_hooked_forwards(seed, n_layers, ctx):
    """Every variant, pos_repair_out and reencode included, against one run_with_hooks forward each."""
    assert {"pos_repair_out", "reencode"} <= set(VARIANTS)
    subj = tiny_subject(n_layers=n_layers, ctx=ctx, n_seqs=3, seq_len=20, seed=seed)
    m = measure(subj, variants=VARIANTS, batch_size=8, seed=seed, progress=False)
    stats = in_context_stats(subj, subj.sae_ids)
    naive = naive_losses(subj, subj.tokens, subj.sae_ids, VARIANTS, stats, seed)
    for (v, hook), ref in naive.items():
        atol = _ATOL.get(v, 1e-5)
        np.testing.assert_allclose(m.get(v, hook, "ce"), ref["ce"].numpy(), atol=atol, rtol=0)
        np.testing.assert_allclose(m.get(v, hook, "kl"), ref["kl"].numpy(), atol=atol, rtol=0)


@given(seed=st.integers(0, 1000))
def test_clean_variant_adds_no_loss(seed):
    subj = tiny_subject(seed=seed, n_seqs=2, seq_len=16)
    m = measure(subj, variants=("clean",), progress=False)
    for hook in subj.sae_ids:
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


def test_bos_tokens_inside_a_sequence_are_not_patched():
    subj = tiny_subject(n_seqs=2, seq_len=12)
    subj.tokens[0, 6] = 0  # a document boundary
    m = measure(subj, variants=("sae",), progress=False)
    for hook in subj.sae_ids:
        assert m.get("sae", hook, "sq_err")[0, 6] == 0
        assert np.isnan(m.get("sae", hook, "l0")[0, 6])
        assert m.get("sae", hook, "sq_err")[0, 5] > 0


def test_tidy_table_has_one_row_per_variant_hook_sequence_position():
    subj = tiny_subject(n_seqs=2, seq_len=10)
    m = measure(subj, variants=("sae", "zero"), progress=False)
    t = m.tidy()
    n = 2 * len(subj.sae_ids) * 2 * 9
    assert all(len(v) == n for v in t.values())
    assert set(t["variant"]) == {"sae", "zero"} and set(t["sae_id"]) == set(subj.sae_ids)


def test_measuring_a_hook_without_sae_is_an_error():
    subj = tiny_subject(n_seqs=2, seq_len=10, hooks=["blocks.0.hook_resid_pre"])
    with pytest.raises(SubjectError, match="no SAE 'blocks.1.hook_resid_pre'"):
        measure(subj, hooks=["blocks.1.hook_resid_pre"], progress=False)


HOOK_KINDS = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), layer=st.integers(0, 1))
def test_every_hook_kind_stacked_equals_separate_hooked_forwards(seed, layer):
    """attn.hook_z, attn_out, resid_mid, mlp_out start from the block's cached residual input with the
    hooked activation replaced; every variant equals one run_with_hooks forward at the hook (atol 1e-5)."""
    hooks = [f"blocks.{layer}.{k}" for k in HOOK_KINDS]
    subj = tiny_subject(n_layers=2, ctx=6, n_seqs=3, seq_len=14, seed=seed, hooks=hooks)
    m = measure(subj, variants=VARIANTS, batch_size=2, max_stack=4, seed=seed, progress=False)
    naive = naive_losses(subj, subj.tokens, subj.sae_ids, VARIANTS, in_context_stats(subj, subj.sae_ids), seed)
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
    assert m.sae_ids == ["other", "small"]
    assert not np.allclose(m.get("sae", "small", "dce"), m.get("sae", "other", "dce"))
    one = measure(subj, hooks=["small"], variants=("sae",), progress=False)
    np.testing.assert_allclose(one.get("sae", "small", "dce"), m.get("sae", "small", "dce"), atol=1e-6)


def test_activation_statistics_leave_out_bos_tokens():
    """x_norm and wpos_share are NaN at BOS (position 0 and inside a sequence), which no claim reads."""
    from saeclaims.instruments import Quantity, mean_of

    subj = tiny_subject(n_seqs=3, seq_len=12)
    subj.tokens[1, 6] = 0  # a document boundary
    m = measure(subj, variants=("sae",), progress=False)
    hook = subj.sae_ids[1]
    for stat in ("x_norm", "wpos_share"):
        arr = m.activation[hook][stat]
        assert np.isnan(arr[:, 0]).all() and np.isnan(arr[1, 6])
        assert np.isfinite(np.delete(arr[:, 1:].ravel(), 6 - 1 + 11)).all()
        iv = mean_of(m, Quantity("sae", hook, stat, 1, None))
        # positions [1, T-1): those with a loss column, as every statistic reads (instruments.Quantity)
        assert iv.estimate == pytest.approx(np.nanmean(arr[:, 1:-1]), rel=1e-6)
        assert iv.estimate != pytest.approx(np.mean(np.nan_to_num(arr[:, 1:-1])), rel=1e-3)


def _full_length_stats(subj, keys):
    """in_context_stats as first written: a clean pass over whole sequences, every hook cached."""
    from saeclaims.splicing import flat

    points = {k: subj.hook_of(k) for k in keys}
    _, cache = subj.model.run_with_cache(subj.tokens, names_filter=lambda n: n in points.values())
    out = {}
    for k, hook in points.items():
        ctx = subj.context_sizes[k]
        act = flat(cache[hook])
        use = (subj.tokens[:, 1:ctx] != subj.bos_token_id)[..., None].double()
        x = act[:, 1:ctx].double() * use
        n = use.sum()
        mu = x.sum((0, 1)) / n
        active = (subj.saes[k].encode(act[:, 1:ctx]) > 0).sum(-1).double()
        out[k] = (mu, float(x.pow(2).sum() / n - mu.pow(2).sum()), float((active * use[..., 0]).sum() / n))
    return out


@settings(max_examples=8)
@given(seed=st.integers(0, 1000), ctx=st.lists(st.integers(2, 12), min_size=3, max_size=3), fused=st.booleans())
def test_in_context_stats_read_only_the_context(seed, ctx, fused):
    """The statistics pass runs on the first max(ctx) tokens only (a causal model's activations there do not
    depend on later ones): the same mean, normaliser and L0 as a pass over whole sequences, per SAE id, at
    residual and in-block hooks (hook_z flattened), with contexts that differ between SAEs."""
    hooks = ["blocks.0.attn.hook_z", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    subj = tiny_subject(n_seqs=4, seq_len=20, seed=seed, hooks=hooks)
    subj.context_sizes = dict(zip(hooks, ctx))
    subj.tokens[1, min(ctx) // 2 + 1] = 0  # a document boundary inside the context
    from saeclaims import splice

    widths = []
    orig = splice._clean_cache
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(splice, "_clean_cache", lambda m, toks, *a: widths.append(toks.shape[1]) or orig(m, toks, *a))
        ref = _full_length_stats(subj, subj.sae_ids)
        got = in_context_stats(subj, subj.sae_ids, fused_attention=fused)
    assert widths and set(widths) == {max(ctx)}
    for h, (mu, var, l0) in ref.items():
        np.testing.assert_allclose(got[h].mean.numpy(), mu.float().numpy(), atol=2e-6, rtol=0)
        assert got[h].variance == pytest.approx(var, rel=1e-5)
        assert got[h].sae_l0 == pytest.approx(l0, rel=1e-6)


def test_in_context_stats_read_whole_sequences_of_a_model_that_looks_ahead(monkeypatch):
    from saeclaims import splice

    subj = tiny_subject(n_seqs=2, seq_len=12, ctx=4)
    subj.model.cfg.attention_dir = "bidirectional"
    widths = []
    orig = splice._clean_cache
    monkeypatch.setattr(splice, "_clean_cache", lambda m, toks, *a: widths.append(toks.shape[1]) or orig(m, toks, *a))
    in_context_stats(subj, subj.sae_ids)
    assert set(widths) == {12}


def _spy_fused(monkeypatch):
    """Record every fused_attention context the kernels open (its FusedAttention record)."""
    from saeclaims import splice

    states = []
    orig = splice._fused

    @contextlib.contextmanager
    def spy(model, enabled=True):
        with orig(model, enabled) as state:
            states.append((enabled, state))
            yield state

    monkeypatch.setattr(splice, "_fused", spy)
    return states


@settings(max_examples=5)
@given(seed=st.integers(0, 1000), layer=st.integers(0, 1))
def test_fused_attention_every_hook_kind_equals_eager_and_naive(seed, layer):
    """With fused attention on (the default), every hook kind's variants equal one run_with_hooks forward
    (TransformerLens's eager attention) and the clean pass equals the eager model's; every forward ran fused,
    hook_z's replacement included (no call fell back, none refused); fused_attention=False opens no fused
    context and agrees too."""
    hooks = [f"blocks.{layer}.{k}" for k in HOOK_KINDS]
    subj = tiny_subject(n_layers=2, ctx=6, n_seqs=3, seq_len=14, seed=seed, hooks=hooks)
    with pytest.MonkeyPatch.context() as mp:
        states = _spy_fused(mp)
        m = measure(subj, variants=VARIANTS, batch_size=2, max_stack=4, seed=seed, progress=False)
    assert states and all(enabled for enabled, _ in states)
    assert all(s.layers == [0, 1] and not s.refused and not s.fallbacks for _, s in states)
    assert sum(s.calls for _, s in states) > 0
    with pytest.MonkeyPatch.context() as mp:
        states = _spy_fused(mp)
        eager = measure(subj, variants=VARIANTS, batch_size=2, max_stack=4, seed=seed, progress=False,
                        fused_attention=False)
    assert all(not enabled and s.calls == 0 for enabled, s in states)
    with torch.no_grad():
        lp = torch.log_softmax(subj.model(subj.tokens).float(), -1)[:, :-1]
    clean = -lp.gather(-1, subj.tokens[:, 1:, None])[..., 0].numpy()
    np.testing.assert_allclose(m.clean_ce, clean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(eager.clean_ce, clean, atol=1e-5, rtol=0)
    naive = naive_losses(subj, subj.tokens, subj.sae_ids, VARIANTS, in_context_stats(subj, subj.sae_ids,
                                                                                   fused_attention=False), seed)
    assert set(naive) == set(m.metrics) == set(eager.metrics)
    for (v, hook), ref in naive.items():
        for metric in ("ce", "kl"):
            np.testing.assert_allclose(m.get(v, hook, metric), ref[metric].numpy(), atol=1e-5, rtol=0,
                                       err_msg=f"{v} {hook} {metric}")
            np.testing.assert_allclose(eager.get(v, hook, metric), ref[metric].numpy(), atol=1e-5, rtol=0,
                                       err_msg=f"eager {v} {hook} {metric}")
        for metric in ("sq_err", "l0"):
            np.testing.assert_allclose(m.get(v, hook, metric), eager.get(v, hook, metric), atol=1e-5, rtol=1e-5,
                                       err_msg=f"{v} {hook} {metric}")


def test_a_model_the_fused_path_refuses_is_measured_on_transformer_lens_attention():
    subj = tiny_subject(n_seqs=2, seq_len=12)
    subj.model.blocks[1].attn.attn_type = "local"  # any refusal: that block keeps TransformerLens's forward
    subj.model.cfg.window_size = 4
    with pytest.MonkeyPatch.context() as mp:
        states = _spy_fused(mp)
        m = measure(subj, variants=("sae", "zero"), progress=False)
    assert states and all(s.layers == [0] and 1 in s.refused for _, s in states)
    eager = measure(subj, variants=("sae", "zero"), progress=False, fused_attention=False)
    for key in eager.metrics:
        np.testing.assert_allclose(m.metrics[key]["ce"], eager.metrics[key]["ce"], atol=1e-5, rtol=0)


def test_zero_alone_runs_as_one_shared_row():
    """A call that asks only for `zero` at residual hooks has no per-sequence variant left there: it still
    measures, equal to `zero` measured beside the others."""
    subj = tiny_subject(n_seqs=3, seq_len=12)
    alone = measure(subj, variants=("zero",), progress=False)
    beside = measure(subj, variants=("zero", "sae"), progress=False)
    for hook in subj.sae_ids:
        np.testing.assert_allclose(alone.get("zero", hook, "ce"), beside.get("zero", hook, "ce"), atol=1e-5)


SYNCING = {torch.Tensor: ("cpu", "item", "tolist", "__float__", "__int__", "__bool__"), torch: ("equal", "tensor")}


def _count_syncs(monkeypatch) -> dict[str, int]:
    """Calls that wait for a CUDA device (device-to-host reads, torch.equal, a host-to-device torch.tensor), counted
    on a CPU by wrapping them: the evidence for the splice loop's host round trips where no GPU is at hand."""
    counts: dict[str, int] = {}
    for owner, names in SYNCING.items():
        for name in names:
            orig = getattr(owner, name)

            def counted(*a, name=name, orig=orig, **k):
                counts[name] = counts.get(name, 0) + 1
                return orig(*a, **k)

            monkeypatch.setattr(owner, name, counted)
    return counts


def test_a_batch_reads_nothing_back_from_the_device(monkeypatch):
    """splice_batch makes no device-to-host read: alike variants come from the registry (not torch.equal probes,
    35 per batch of the organism's 5 SAEs before), one row selection is built per distinct selection (not one per
    hook) and the random directions are one batch-wide draw; measure copies each batch's results in one go."""
    from saeclaims.splice import in_context_stats, splice_batch
    from saeclaims.variants import CLAIM_VARIANTS

    subj = tiny_subject(n_seqs=4, seq_len=16, hooks=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre",
                                                     "blocks.1.hook_resid_post"])
    stats = in_context_stats(subj, subj.sae_ids)
    splice_batch(subj, subj.tokens, subj.sae_ids, CLAIM_VARIANTS, stats)  # once per run: pos_part_repair's basis
    counts = _count_syncs(monkeypatch)
    splice_batch(subj, subj.tokens, subj.sae_ids, CLAIM_VARIANTS, stats)
    assert counts == {"tensor": 1}, counts  # the one selection of rows for `zero` (shared by the three hooks)


def test_results_reach_the_host_in_one_copy(monkeypatch):
    from saeclaims.splice import to_host

    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(3, 5, generator=g), torch.randn(3, 4, generator=g, dtype=torch.float64),
               torch.randn(3, 5, generator=g).to(torch.bfloat16)]
    for one_copy in (True, False):
        dst = [np.zeros(t.shape, dtype=np.float32) for t in tensors]
        counts = _count_syncs(monkeypatch)
        to_host(list(zip(dst, tensors)), one_copy=one_copy)
        monkeypatch.undo()
        assert counts.get("cpu", 0) == (1 if one_copy else 0)
        for d, t in zip(dst, tensors):
            np.testing.assert_array_equal(d, t.float().numpy())


def test_held_out_subspaces_are_estimated_once_per_hook_point(monkeypatch):
    """A run measures in several calls; the held-out pass (as costly as a clean pass) runs once per hook point."""
    from saeclaims import splice

    s = tiny_subject()
    s.held_out_tokens = s.tokens.clone()
    calls = []
    real = splice.position_subspaces
    monkeypatch.setattr(splice, "position_subspaces", lambda m, t, hooks, bos, **kw: calls.append(list(hooks))
                        or real(m, t, hooks, bos, **kw))
    first = splice.held_out_subspaces(s, s.sae_ids[:1])
    again = splice.held_out_subspaces(s, s.sae_ids)
    assert calls == [[s.hook_of(s.sae_ids[0])], sorted({s.hook_of(k) for k in s.sae_ids[1:]})]
    assert again[s.sae_ids[0]] is first[s.sae_ids[0]]
    splice.held_out_subspaces(s, s.sae_ids)
    assert len(calls) == 2


def test_held_out_subspaces_by_the_fused_forward_equal_the_whole_models_cache():
    """The run's own forward (fused kernels, stopped after the deepest hook) gives the subspaces TransformerLens's
    run_with_cache of the whole model gives."""
    from saeclaims.position_means import position_subspaces
    from saeclaims.splice import held_out_subspaces

    s = tiny_subject(seq_len=32, n_seqs=12)
    s.held_out_tokens = s.tokens.clone()
    fused = held_out_subspaces(s, s.sae_ids)
    plain = position_subspaces(s.model, s.held_out_tokens, sorted({s.hook_of(k) for k in s.sae_ids}), bos=0)
    for k in s.sae_ids:
        a, b = fused[k], plain[s.hook_of(k)]
        assert a.rank == b.rank and abs(a.variance_share - b.variance_share) < 1e-5
        assert torch.allclose((a.basis.T @ a.basis), (b.basis.T @ b.basis), atol=1e-4)  # the same subspace
