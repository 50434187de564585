"""Splicing kernels against the obvious way (one hooked forward per variant) on tiny random models."""

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.budget import chunk_rows
from saeclaims.naive import naive_losses
from saeclaims.splice import in_context_stats, measure
from saeclaims.subjects import SubjectError
from saeclaims.variants import VARIANTS
from saeclaims.vocab_losses import chunked_losses
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
        ref = _full_length_stats(subj, subj.hooks)
        got = in_context_stats(subj, subj.hooks, fused_attention=fused)
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
    in_context_stats(subj, subj.hooks)
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
    naive = naive_losses(subj, subj.tokens, subj.hooks, VARIANTS, in_context_stats(subj, subj.hooks,
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


def test_fused_stack_rows_are_linear_in_sequence_length():
    from saeclaims.budget import stack_rows

    model = tiny_subject(n_seqs=1, seq_len=8).model
    cpu = torch.device("cpu")
    budget = 2**30
    assert stack_rows(model, 512, cpu, budget, fused=True) == 2 * stack_rows(model, 1024, cpu, budget, fused=True)
    assert stack_rows(model, 512, cpu, budget) == 4 * stack_rows(model, 1024, cpu, budget)
    model.blocks[0].attn.attn_type = "local"  # a block that keeps the eager path forms the T x T scores
    assert stack_rows(model, 512, cpu, budget, fused=True) == stack_rows(model, 512, cpu, budget)


def test_flop_counts_follow_what_the_kernels_execute():
    from saeclaims.flops import Shape, attention_share, layer_flops, sae_passes, workload_flops

    s = Shape(n_layers=4, d_model=128, d_mlp=512, d_vocab=4096, seq_len=512, d_sae=2048)
    assert layer_flops(s) == 2 * (4 * 128**2 + 2 * 128 * 512 + 2 * 512 * 128)  # the full T x T square
    assert layer_flops(s, "causal") < layer_flops(s)
    assert 0 < attention_share(s, "causal") < attention_share(s) < 1
    variants = ("zero", "sae", "random_error", "pos_repair_out", "token_then_pos")
    assert sae_passes(variants) == 4 and sae_passes(variants, shared_sae=True) == 2
    hooks = ["blocks.0.hook_resid_pre", "blocks.3.hook_resid_post"]
    plain = workload_flops(s, hooks, variants, 100)
    fused = workload_flops(s, hooks, variants, 100, attention="causal", shared_sae=True)
    assert fused["naive"] == plain["naive"] and fused["batched"] < plain["batched"]
    assert fused["bound"] > plain["bound"] > 1
    # the clean pass and its unembedding once; `zero` at a residual hook one row per batch of 4, inside a block all
    layer, unembed = layer_flops(s, "causal"), 2 * 128 * 4096
    for hook, layers, rows in (("blocks.0.hook_resid_pre", 4, 1 / 4), ("blocks.3.hook_resid_post", 0, 1 / 4),
                               ("blocks.0.hook_attn_out", 4, 1), ("blocks.1.hook_resid_mid", 3, 1)):
        suffix = layers * layer + unembed
        got = workload_flops(s, [hook], ("zero",), 1, attention="causal", batch_seqs=4)["batched"]
        assert got == 4 * layer + unembed + rows * suffix, hook
        assert workload_flops(s, [hook], ("zero",), 1, attention="causal")["batched"] == 4 * layer + unembed + suffix
        sae = workload_flops(s, [hook], ("sae",), 1, attention="causal", batch_seqs=4)["batched"]
        assert sae == 4 * layer + unembed + suffix + 2 * 2 * 128 * 2048  # one SAE round trip


def test_a_memory_budget_bounds_each_step_and_changes_no_result():
    """--sae-memory-budget sizes every transient block (forwards, SAE codes, log-softmax chunks); results are the
    same as with the default budget, since only how many sequences go through at a time changes."""
    from saeclaims.budget import sae_rows, stack_rows

    subj = tiny_subject(n_seqs=5, seq_len=16)
    small = 4 * 16 * 64 * 2  # two sequences' widest activation
    assert stack_rows(subj.model, 16, torch.device("cpu"), small, fused=True) == 2
    assert sae_rows(subj, subj.hooks, 16, torch.device("cpu"), 4 * 16 * 32) == 1
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
    stats = in_context_stats(subj, subj.hooks)
    naive = naive_losses(subj, subj.tokens, subj.hooks, ("zero", "sae"), stats, 0)
    for (v, hook), ref in naive.items():
        np.testing.assert_allclose(m.get(v, hook, "ce"), ref["ce"].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(m.get(v, hook, "kl"), ref["kl"].numpy(), atol=1e-5, rtol=0)


def test_zero_alone_runs_as_one_shared_row():
    """A call that asks only for `zero` at residual hooks has no per-sequence variant left there: it still
    measures, equal to `zero` measured beside the others."""
    subj = tiny_subject(n_seqs=3, seq_len=12)
    alone = measure(subj, variants=("zero",), progress=False)
    beside = measure(subj, variants=("zero", "sae"), progress=False)
    for hook in subj.hooks:
        np.testing.assert_allclose(alone.get("zero", hook, "ce"), beside.get("zero", hook, "ce"), atol=1e-5)
