"""Claim statistics on synthetic measurements whose answers are known."""

import numpy as np
import pytest

from saeclaims.instruments import (
    Quantity,
    beyond_over_inside,
    ce_score,
    check_beyond_context,
    layer_trend,
    mean_of,
    recovery,
    share_of_tokens,
)
from saeclaims.splice import LOSS_METRICS, RECON_METRICS, Measurements
from saeclaims.stats import Bootstrap

HOOKS = [f"blocks.{i}.hook_resid_pre" for i in range(4)]
CTX = 8


def synthetic(dce_in: dict, dce_out: dict, n=30, t=32, noise=0.01, seed=0) -> Measurements:
    """dCE per (variant, hook) is dce_in inside the context and dce_out beyond it, plus noise."""
    rng = np.random.default_rng(seed)
    m = Measurements("synthetic", HOOKS, sorted({v for v, _ in dce_in}), {h: CTX for h in HOOKS},
                     clean_ce=np.full((n, t - 1), 3.0, dtype=np.float32))
    for key in dce_in:
        arr = np.empty((n, t - 1))
        arr[:, :CTX] = dce_in[key]
        arr[:, CTX:] = dce_out[key]
        arr += rng.normal(0, noise, arr.shape)
        metrics = {k: np.zeros((n, t - 1), dtype=np.float32) for k in (*LOSS_METRICS, *RECON_METRICS)}
        metrics["dce"] = arr.astype(np.float32)
        metrics["ce"] = metrics["dce"] + 3.0
        metrics["l0"] = np.where(np.arange(t - 1) < CTX, 10.0, 20.0)[None].repeat(n, 0).astype(np.float32)
        m.metrics[key] = metrics
    for h in HOOKS:
        m.activation[h] = {"x_norm": np.full((n, t), 2.0, dtype=np.float32),
                           "wpos_share": np.full((n, t), 0.05, dtype=np.float32)}
    return m


def test_beyond_over_inside_and_recovery_recover_known_values():
    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1, ("token_then_pos", h): 0.2, ("zero", h): 2.0},
                  {("sae", h): 0.5, ("token_then_pos", h): 0.3, ("zero", h): 2.0})
    iv = beyond_over_inside(m, h, "sae", "dce")
    assert iv.estimate == pytest.approx(5.0, rel=0.02) and iv.low < 5.0 < iv.high
    rec = recovery(m, h, "token_then_pos")  # (0.5 - 0.3) / (0.5 - 0.1) = 0.5
    assert rec.estimate == pytest.approx(0.5, abs=0.02) and rec.low < 0.5 < rec.high
    score = ce_score(m, h)  # (2.0 - 0.1) / 2.0
    assert score.estimate == pytest.approx(0.95, abs=0.01)
    l0 = beyond_over_inside(m, h, "sae", "l0")
    assert l0.estimate == pytest.approx(2.0, rel=1e-6)


def test_layer_trends():
    rising = {("sae", h): 0.1 * (i + 1) for i, h in enumerate(HOOKS)}
    m = synthetic(rising, {("sae", h): 1.0 for h in HOOKS})
    assert layer_trend(m, HOOKS, [0, 1, 2, 3], "inside").estimate == pytest.approx(1.0)
    # excess = 1.0 - 0.1 (i + 1) falls with depth
    iv = layer_trend(m, HOOKS, [0, 1, 2, 3], "excess")
    assert iv.estimate == pytest.approx(-1.0) and iv.high < 0


def test_mean_of_activation_quantities():
    m = synthetic({("sae", HOOKS[1]): 0.1}, {("sae", HOOKS[1]): 0.1})
    iv = mean_of(m, Quantity("sae", HOOKS[1], "wpos_share", 1, None))
    assert iv.estimate == pytest.approx(0.05)


def test_no_positions_beyond_context_is_a_clear_error():
    m = synthetic({("sae", HOOKS[0]): 0.1}, {("sae", HOOKS[0]): 0.1}, t=CTX + 1)
    with pytest.raises(ValueError, match="leave no position beyond the SAE's training context 8"):
        check_beyond_context(m, HOOKS[0])


def test_share_of_tokens():
    flags = np.zeros((20, 10), dtype=bool)
    flags[:, :7] = True
    iv = share_of_tokens(flags)
    assert iv.estimate == pytest.approx(0.7)


def test_undefined_tokens_are_left_out_not_propagated():
    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1}, {("sae", h): 0.5})
    m.metrics[("sae", h)]["l0"][:, 0] = np.nan  # BOS
    m.metrics[("sae", h)]["l0"][3, 12] = np.nan  # a BOS inside a sequence
    iv = beyond_over_inside(m, h, "sae", "l0")
    assert iv.estimate == pytest.approx(2.0) and np.isfinite(iv.low)


def test_intervals_carry_their_sample_and_method():
    """n_seqs and the distinct token positions read travel with the interval into the evidence row."""
    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1}, {("sae", h): 0.5}, n=30, t=32)
    iv = beyond_over_inside(m, h, "sae", "dce")  # positions [1, 8) and [8, 31): 30 tokens a sequence
    assert (iv.n_seqs, iv.n_tokens) == (30, 30 * 30)
    assert iv.method == "cluster bootstrap (BCa)"
    trend = layer_trend(synthetic({("sae", x): 0.1 for x in HOOKS}, {("sae", x): 0.5 for x in HOOKS}), HOOKS,
                        [0, 1, 2, 3], "inside")
    assert trend.n_tokens == 30 * 7  # the same tokens at four hooks are counted once
    flags = np.ones((5, 4), dtype=bool)
    assert share_of_tokens(flags).n_tokens == 20


def test_the_bootstrap_settings_reach_the_interval():
    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1}, {("sae", h): 0.5}, noise=0.2)
    narrow = beyond_over_inside(m, h, "sae", "dce", Bootstrap(confidence=0.5, seed=1, n_resamples=500))
    wide = beyond_over_inside(m, h, "sae", "dce", Bootstrap(confidence=0.999, seed=1, n_resamples=500))
    assert narrow.confidence == 0.5 and wide.confidence == 0.999
    assert wide.high - wide.low > narrow.high - narrow.low
