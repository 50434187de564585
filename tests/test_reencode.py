"""Re-encoding with a fixed dictionary: the NNOMP solver against scikit-learn's OMP and scipy's NNLS,
the sanity bound of the SAE's own codes, sae_lens's conventions, and failures that are reported."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from saeclaims.instruments import Quantity, UnconvergedError, excess_removed_share, mean_of
from saeclaims.reencode import (
    SparseCodes,
    false_positive_mass,
    nn_omp,
    oracle_split,
    reencode,
    sae_target,
    support_mask,
)
from saeclaims.splice import in_context_stats, measure
from tests.conftest import tiny_sae, tiny_subject


def _dictionary(rng, f, d):
    dic = rng.normal(size=(f, d))
    return dic / np.linalg.norm(dic, axis=1, keepdims=True)


def _sparse_codes(rng, n, f, k):
    codes = np.zeros((n, f))
    for i in range(n):
        codes[i, rng.choice(f, k, replace=False)] = rng.uniform(0.5, 2.0, k)
    return codes


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), d=st.integers(8, 48), f=st.integers(16, 96), k=st.integers(1, 6))
def test_recovers_what_sklearn_omp_recovers_for_non_negative_sparse_codes(seed, d, f, k):
    """Where scikit-learn's OMP recovers a non-negative k-sparse code exactly, so does NNOMP: same
    support, same reconstruction."""
    sklearn_omp = pytest.importorskip("sklearn.linear_model").orthogonal_mp_gram
    rng = np.random.default_rng(seed)
    dic = _dictionary(rng, f, d)
    codes = _sparse_codes(rng, 16, f, k)
    y = codes @ dic
    ref = sklearn_omp(dic @ dic.T, dic @ y.T, n_nonzero_coefs=k).T
    found = np.all(np.abs(ref - codes) < 1e-6, axis=1)
    assume(found.any())
    res = nn_omp(torch.tensor(y), torch.tensor(dic), k)
    ours = res.dense(f).numpy()
    assert res.converged.all()
    np.testing.assert_array_equal(ours[found] > 0, ref[found] != 0)
    np.testing.assert_allclose(ours[found] @ dic, ref[found] @ dic, atol=1e-8)
    np.testing.assert_allclose(res.residual_norm.numpy()[found], 0, atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), d=st.integers(2, 16), f=st.integers(2, 64), k=st.integers(1, 12))
def test_codes_are_non_negative_k_sparse_and_the_exact_nnls_on_their_support(seed, d, f, k):
    """On arbitrary targets and unnormalised dictionaries: at most k atoms, all > 0, the residual
    never above the target, and the coefficients the exact NNLS solution on the chosen support."""
    rng = np.random.default_rng(seed)
    dic = rng.normal(size=(f, d)) * rng.uniform(0.1, 3.0, (f, 1))
    y = rng.normal(size=(20, d))
    res = nn_omp(torch.tensor(y), torch.tensor(dic), k)
    assert res.converged.all()
    assert (res.n_active <= min(k, f)).all()
    assert (res.residual_norm <= res.target_norm * (1 + 1e-9)).all()
    for i in range(len(y)):
        n = int(res.n_active[i])
        atoms, values = res.atoms[i, :n].numpy(), res.values[i, :n].numpy()
        assert len(set(atoms)) == n and (values > 0).all() and (res.values[i, n:] == 0).all()
        _, best = nnls(dic[atoms].T, y[i]) if n else (None, np.linalg.norm(y[i]))
        assert float(res.residual_norm[i]) == pytest.approx(best, rel=1e-7, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 8))
def test_no_worse_than_the_sae_own_codes_truncated_to_top_k(seed, k):
    """A sanity bound: the re-encoded reconstruction error per token is at most that of the SAE's
    own codes cut to their k largest, decoded by the same decoder."""
    sae = tiny_sae(16, 64, "blocks.0.hook_resid_pre", 8, seed=seed)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(seed)) * 2
    with torch.no_grad():
        acts = sae.encode(x)
        top = torch.topk(acts, k, dim=-1)
        own = sae.decode(torch.zeros_like(acts).scatter(1, top.indices, top.values))
        res = reencode(sae, x, k)
    assert res.converged.all()
    assert ((res.out - x).norm(dim=-1) <= (own - x).norm(dim=-1) + 1e-5).all()
    assert (res.l0 <= k).all()


@pytest.mark.parametrize("norm", ["none", "constant_norm_rescale", "layer_norm"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_sae_lens_conventions_are_honoured(norm, apply_b_dec):
    """The codes fit the SAE's normalised input minus b_dec whatever apply_b_dec_to_input says (the
    decoder always adds b_dec), and decode undoes the run-time normalisation: an identity dictionary
    with a bias reconstructs x exactly."""
    from sae_lens import StandardSAE, StandardSAEConfig

    d = 8
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d, normalize_activations=norm,
                                        apply_b_dec_to_input=apply_b_dec))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_dec.copy_(torch.randn(d))
    x = torch.randn(30, d) * 3 + 1
    with torch.no_grad():
        target = sae_target(sae, x)
        normed = sae.run_time_activation_norm_fn_in(x)
        torch.testing.assert_close(target, normed - sae.b_dec)
        res = reencode(sae, x, d)
    torch.testing.assert_close(res.out, x, atol=1e-4, rtol=1e-4)
    assert res.converged.all()


def test_a_solver_that_cannot_finish_is_reported_not_used():
    """Tokens whose active-set steps run out, and non-finite targets, are flagged; the others are not."""
    rng = np.random.default_rng(0)
    clusters = np.repeat(rng.normal(size=(4, 8)), 12, 0)  # correlated atoms: refits often go negative
    dic = torch.tensor(clusters + 0.3 * rng.normal(size=(48, 8)))
    y = torch.tensor(rng.normal(size=(200, 8)))
    full = nn_omp(y, dic, 8)
    starved = nn_omp(y, dic, 8, max_inner=0)  # no active-set step allowed: every negative refit fails
    assert full.converged.all() and full.share_unconverged == 0
    assert 0 < starved.share_unconverged < 1
    assert (starved.values >= 0).all()  # the last feasible code is kept, and flagged
    y[5, 2] = float("nan")
    bad = nn_omp(y, dic, 8)
    assert not bad.converged[5] and bad.converged[torch.arange(200) != 5].all()


def test_unconverged_tokens_stop_every_statistic_that_reads_them():
    subj = tiny_subject(n_seqs=3, seq_len=20, ctx=6, hooks=["blocks.0.hook_resid_pre"])
    h = subj.sae_ids[0]
    m = measure(subj, variants=("sae", "reencode"), progress=False)
    flags = m.get("reencode", h, "unconverged")
    assert np.isnan(flags[:, 0]).all() and np.nansum(flags) == 0
    assert np.isfinite(excess_removed_share(m, h, "reencode").estimate)
    flags[1, 9] = 1.0  # as the solver reports one it could not finish
    with pytest.raises(UnconvergedError, match="did not converge on 1 of"):
        excess_removed_share(m, h, "reencode")
    share = mean_of(m, Quantity("reencode", h, "unconverged", 1, None))  # the flags themselves stay readable
    assert share.estimate == pytest.approx(1 / (3 * 18))
    assert np.isfinite(mean_of(m, Quantity("reencode", h, "dce", 1, 9)).estimate)  # positions before it


def test_in_context_l0_is_the_mean_sae_l0_over_in_context_non_bos_tokens():
    subj = tiny_subject(n_seqs=3, seq_len=20, ctx=6)
    subj.tokens[1, 3] = 0  # a BOS inside the context
    stats = in_context_stats(subj, subj.sae_ids)
    store = {}
    subj.model.run_with_hooks(subj.tokens, fwd_hooks=[(h, lambda a, hook: store.setdefault(hook.name, a))
                                                      for h in subj.sae_ids], return_type=None)
    use = subj.tokens[:, 1:6] != 0
    for h in subj.sae_ids:
        with torch.no_grad():
            l0 = (subj.saes[h].encode(store[h][:, 1:6]) > 0).sum(-1).double()
        assert stats[h].sae_l0 == pytest.approx(float(l0[use].mean()))


def test_a_subset_of_sequences_splices_exactly_what_the_full_run_does_there():
    """Measuring an expensive variant on the first n sequences keeps the statistics of the full set
    (mean, normaliser, k): the rows equal the full run's."""
    subj = tiny_subject(n_seqs=5, seq_len=16, ctx=6)
    full = measure(subj, variants=("sae", "reencode"), progress=False)
    part = measure(subj, variants=("sae", "reencode"), progress=False, n_seqs=2)
    assert part.n_seqs == 2
    for key in part.metrics:
        for metric in part.metrics[key]:
            np.testing.assert_allclose(part.metrics[key][metric], full.metrics[key][metric][:2], atol=1e-5,
                                       err_msg=f"{key} {metric}")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), d=st.integers(4, 24), f=st.integers(8, 64), k=st.integers(1, 8))
def test_per_token_limits_are_the_pursuit_at_each_token_own_k(seed, d, f, k):
    """One pass with limits gives each token what nn_omp at k = its limit alone gives (atoms, values, flags)."""
    rng = np.random.default_rng(seed)
    dic = torch.tensor(rng.normal(size=(f, d)) * rng.uniform(0.5, 2.0, (f, 1)))
    y = torch.tensor(rng.normal(size=(24, d)))
    limits = torch.tensor(rng.integers(0, k + 1, 24))
    res = nn_omp(y, dic, k, limits=limits)
    for i in range(24):
        n = int(limits[i])
        assert int(res.n_active[i]) <= n
        if n == 0:
            assert res.n_active[i] == 0 and float(res.residual_norm[i]) == pytest.approx(float(y[i].norm()))
            continue
        alone = nn_omp(y[i : i + 1], dic, n)
        assert set(res.atoms[i, : res.n_active[i]].tolist()) == set(alone.atoms[0, : alone.n_active[0]].tolist())
        torch.testing.assert_close(res.dense(f)[i], alone.dense(f)[0], atol=1e-9, rtol=1e-7)
        assert bool(res.converged[i]) or not bool(alone.converged[0])  # the shared active-set budget is >= its own


def test_limits_edge_cases():
    """Limits above k are cut to k; all-zero limits leave every code empty; a wrong shape is refused."""
    dic = torch.eye(4, dtype=torch.float64)
    y = torch.tensor([[3.0, 2.0, 1.0, 0.5]], dtype=torch.float64)
    assert nn_omp(y, dic, 2, limits=torch.tensor([9])).n_active.tolist() == [2]
    empty = nn_omp(y.repeat(3, 1), dic, 2, limits=torch.zeros(3, dtype=torch.long))
    assert empty.n_active.tolist() == [0, 0, 0] and (empty.values == 0).all() and empty.converged.all()
    one = nn_omp(y, dic, 4, limits=torch.tensor([1]))
    assert one.atoms[0, 0] == 0 and one.n_active[0] == 1  # the largest coordinate first
    with pytest.raises(ValueError, match="one atom count per target"):
        nn_omp(y, dic, 2, limits=torch.tensor([1, 2]))


def test_support_mask_marks_the_used_slots_only():
    codes = SparseCodes(atoms=torch.tensor([[3, 0], [0, 0], [1, 4]]), values=torch.tensor([[1.0, 0], [0, 0], [2, 3]]),
                        n_active=torch.tensor([1, 0, 2]), converged=torch.ones(3, dtype=torch.bool),
                        residual_norm=torch.zeros(3), target_norm=torch.ones(3))
    mask = support_mask(codes, 5)
    assert mask.tolist() == [[False, False, False, True, False], [False] * 5, [False, True, False, False, True]]


def test_false_positive_mass_exact_values():
    """Decoder-norm-weighted code mass outside the support over all of it; 0 without active latents; |a| for
    signed codes; between 0 (all inside) and 1 (all outside)."""
    norms = torch.tensor([1.0, 2.0, 0.5, 1.0])
    codes = torch.tensor([[1.0, 1.0, 0.0, 0.0],    # mass 1 + 2 = 3; latent 1 outside: 2/3
                          [1.0, 0.0, 4.0, 0.0],    # mass 1 + 2 = 3; all inside: 0
                          [0.0, 0.0, 0.0, 0.0],    # nothing active: 0
                          [0.0, 0.0, 0.0, -3.0],   # a signed code counts by its size: all outside, 1
                          [2.0, 0.0, 0.0, 1.0]])   # mass 2 + 1; latent 3 outside: 1/3
    support = torch.tensor([[True, False, False, False], [True, False, True, False], [True] * 4,
                            [False] * 4, [True, True, True, False]])
    fp = false_positive_mass(codes, support, norms)
    torch.testing.assert_close(fp, torch.tensor([2 / 3, 0.0, 0.0, 1.0, 1 / 3]))


def _sae_with_noise_latent(d: int, noise: float):
    """[I | -I] SAE over d dims (codes |x_j|, exact) plus one latent that fires `noise` on every input and
    writes along the last coordinate, which the inputs below never use."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d + 1, apply_b_dec_to_input=False,
                                        normalize_activations="none"))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye, torch.zeros(d, 1)], 1))
        sae.b_enc.zero_()
        sae.b_enc[-1] = noise
        sae.W_dec.copy_(torch.cat([eye, -eye, eye[-1:]], 0))
        sae.b_dec.zero_()
    return sae.eval()


def test_oracle_split_finds_the_planted_false_positive():
    """Inputs use d - 1 coordinates; the SAE's code is exact plus a noise latent writing along the unused one. The
    pursuit at the token's L0 picks the exact atoms (the noise atom never correlates), so oracle_support drops the
    noise latent only: out = x exactly, fp_mass = noise / (|x|_1 + noise)."""
    d = 6
    sae = _sae_with_noise_latent(d, noise=0.5)
    x = torch.randn(2, 7, d, generator=torch.Generator().manual_seed(0))
    x[..., -1] = 0.0
    res = oracle_split(sae, x)
    torch.testing.assert_close(res.out, x, atol=1e-5, rtol=1e-5)
    assert res.converged.all() and (res.l0 == d - 1).all()
    l1 = x.abs().sum(-1)
    torch.testing.assert_close(res.fp_mass, 0.5 / (l1 + 0.5))
    exact = oracle_split(_sae_with_noise_latent(d, noise=0.0), x)  # no noise latent fires: nothing outside
    assert (exact.fp_mass == 0).all()
    torch.testing.assert_close(exact.out, x, atol=1e-5, rtol=1e-5)


def test_oracle_split_caps_the_pursuit():
    """max_k 2 of an exact code of 5 latents (plus noise): the oracle keeps the 2 largest coordinates, so the other
    3 and the noise latent are false positives."""
    d = 6
    sae = _sae_with_noise_latent(d, noise=0.5)
    x = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    res = oracle_split(sae, x, max_k=2)
    assert res.l0.tolist() == [2.0]
    torch.testing.assert_close(res.fp_mass, torch.tensor([(3.0 + 2.0 + 1.0 + 0.5) / (15.0 + 0.5)]))
    torch.testing.assert_close(res.out, torch.tensor([[5.0, 4.0, 0.0, 0.0, 0.0, 0.0]]), atol=1e-5, rtol=1e-5)


def test_oracle_split_of_no_tokens():
    sae = _sae_with_noise_latent(4, noise=0.5)
    res = oracle_split(sae, torch.zeros(0, 3, 4))
    assert res.out.shape == (0, 3, 4) and res.fp_mass.shape == (0, 3)


def test_limits_solved_in_chunks_of_like_limits_come_back_in_input_order():
    """Tiny chunk_bytes forces one chunk per few tokens, each with slots for its own largest limit: the codes equal
    one big chunk's, token for token, padded to k slots."""
    rng = np.random.default_rng(3)
    dic = torch.tensor(rng.normal(size=(40, 12)))
    y = torch.tensor(rng.normal(size=(30, 12)))
    limits = torch.tensor(rng.integers(0, 9, 30))
    big = nn_omp(y, dic, 8, limits=limits)
    small = nn_omp(y, dic, 8, limits=limits, chunk_bytes=1)
    assert small.atoms.shape == big.atoms.shape == (30, 8)
    assert torch.equal(small.n_active, big.n_active) and torch.equal(small.converged, big.converged)
    torch.testing.assert_close(small.dense(40), big.dense(40))
    torch.testing.assert_close(small.residual_norm, big.residual_norm)
