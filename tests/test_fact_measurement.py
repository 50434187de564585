"""Subject facts measured on planted measurements and weights whose answers are known."""

import numpy as np
import pytest

from saeclaims.fact_measurement import helix_share, long_context_gain, model_facts, sae_facts
from saeclaims.measurements import LOSS_METRICS, RECON_METRICS, Measurements
from saeclaims.stats import Bootstrap

BOOT = Bootstrap(confidence=0.95, n_resamples=500, seed=0)
CTX, T, N = 8, 32, 24


def planted(clean_slope: float = 0.0, s_dce=0.1, c_dce=0.1, z_dce=2.0, nmse=0.1, l0=20.0, seed=0) -> Measurements:
    """Clean loss falling by `clean_slope` nats per position; dCE of sae/control/zero and the SAE's nMSE, L0
    constant in context, plus noise."""
    rng = np.random.default_rng(seed)
    pos = np.arange(T - 1)
    clean = (4.0 - clean_slope * pos)[None].repeat(N, 0) + rng.normal(0, 0.01, (N, T - 1))
    m = Measurements("planted", ["h"], ["sae", "zero", "full_context_sae"], {"h": CTX},
                     clean_ce=clean.astype(np.float32))
    for v, d in (("sae", s_dce), ("zero", z_dce), ("full_context_sae", c_dce)):
        met = {k: np.zeros((N, T - 1), dtype=np.float32) for k in (*LOSS_METRICS, *RECON_METRICS)}
        met["dce"] = (d + rng.normal(0, 0.002, (N, T - 1))).astype(np.float32)
        met["nmse"] = np.full((N, T - 1), nmse, dtype=np.float32)
        met["l0"] = np.full((N, T - 1), l0, dtype=np.float32)
        m.metrics[(v, "h")] = met
    return m


def test_long_context_gain_sees_a_falling_loss_and_not_a_flat_one():
    falling = long_context_gain(planted(clean_slope=0.01), CTX, BOOT)
    # mean position of [4, 8) is 5.5, of [16, 31) is 23: 17.5 positions x 0.01
    assert falling.estimate == pytest.approx(0.175, abs=0.01) and falling.low > 0.05
    flat = long_context_gain(planted(clean_slope=0.0), CTX, BOOT)
    assert abs(flat.estimate) < 0.01 and flat.high < 0.05


def test_long_context_gain_needs_sequences_twice_the_context():
    assert long_context_gain(planted(), 16, BOOT) is not None  # T = 32 = 2 x 16
    assert long_context_gain(planted(), 17, BOOT) is None


def test_helix_share_of_a_helix_and_of_noise():
    p = np.arange(128)
    helix = np.zeros((128, 16))
    helix[:, 0], helix[:, 1], helix[:, 2] = np.cos(p / 40), np.sin(p / 40), p / 128
    assert helix_share(helix, 128) > 0.99
    noise = np.random.default_rng(0).normal(size=(128, 16))
    assert helix_share(noise, 128) < 0.4


def test_sae_facts_recover_planted_quality():
    facts = {f.fact: f for f in sae_facts("planted", planted(nmse=0.05, l0=30, s_dce=0.05, c_dce=0.06), "h", BOOT)}
    assert facts["explained_variance"].estimate == pytest.approx(0.95, abs=1e-6) and facts["explained_variance"].meets
    assert facts["l0"].estimate == pytest.approx(30) and facts["l0"].meets
    assert facts["ce_loss_score"].estimate == pytest.approx(1 - 0.05 / 2, abs=1e-3) and facts["ce_loss_score"].meets
    assert facts["control_ce_gap"].estimate == pytest.approx(0.01 / 2, abs=1e-3) and facts["control_ce_gap"].meets


def test_a_worse_control_is_not_like_the_sae():
    facts = {f.fact: f for f in sae_facts("planted", planted(s_dce=0.05, c_dce=0.25), "h", BOOT)}
    assert facts["control_ce_gap"].estimate == pytest.approx(0.1, abs=2e-3) and facts["control_ce_gap"].meets is False


def test_facts_need_their_variants():
    m = planted()
    del m.metrics[("full_context_sae", "h")]
    assert {f.fact for f in sae_facts("planted", m, "h", BOOT)} == {"explained_variance", "l0", "ce_loss_score"}
    del m.metrics[("zero", "h")]
    assert {f.fact for f in sae_facts("planted", m, "h", BOOT)} == {"explained_variance", "l0"}


def test_model_facts_without_learned_positions_skip_the_helix():
    assert [f.fact for f in model_facts("planted", planted(), None, BOOT)] == ["long_context_gain"]
    w = np.random.default_rng(0).normal(size=(T, 4))
    facts = model_facts("planted", planted(), w, BOOT)
    assert [f.fact for f in facts] == ["wpos_helix_share", "long_context_gain"]
    assert facts[0].ci_low is None and facts[0].meets is (facts[0].estimate >= 0.9)
