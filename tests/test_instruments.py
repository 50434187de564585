"""Claim statistics on synthetic measurements whose answers are known."""

import numpy as np
import pytest

from saeclaims.instruments import (
    Quantity,
    UnconvergedError,
    best_removed_share,
    beyond_over_inside,
    ce_score,
    check_beyond_context,
    contrast,
    control_excess,
    control_ratio,
    control_recovery,
    excess,
    excess_removed_share,
    inside,
    layer_trend,
    mean_of,
    metric_recovery,
    ratio,
    recovery,
    share_of_tokens,
)
from saeclaims.measurements import LOSS_METRICS, RECON_METRICS, Measurements
from saeclaims.stats import Bootstrap

HOOKS = [f"blocks.{i}.hook_resid_pre" for i in range(4)]
CTX = 8


def synthetic(dce_in: dict, dce_out: dict, n=30, t=32, noise=0.01, seed=0, metric="dce") -> Measurements:
    """`metric` (dCE by default) per (variant, hook) is dce_in inside the context and dce_out beyond
    it, plus noise."""
    rng = np.random.default_rng(seed)
    m = Measurements("synthetic", HOOKS, sorted({v for v, _ in dce_in}), {h: CTX for h in HOOKS},
                     clean_ce=np.full((n, t - 1), 3.0, dtype=np.float32))
    for key in dce_in:
        arr = np.empty((n, t - 1))
        arr[:, :CTX] = dce_in[key]
        arr[:, CTX:] = dce_out[key]
        arr += rng.normal(0, noise, arr.shape)
        metrics = {k: np.zeros((n, t - 1), dtype=np.float32) for k in (*LOSS_METRICS, *RECON_METRICS)}
        metrics[metric] = arr.astype(np.float32)
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


def test_the_best_of_a_k_sweep_is_the_larger_share_with_jointly_valid_bounds():
    """Planted: the SAE's excess is 0.4; re-encoding at k removes 0.3 of it, at 2k 0.7 (a dictionary that
    needs more atoms beyond the context). The claim's statistic is the better share, with each share's interval
    at half the error rate, so the maximum's bounds [max low, max high] hold at the row's confidence."""
    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1, ("reencode", h): 0.1, ("reencode_2x", h): 0.1},
                  {("sae", h): 0.5, ("reencode", h): 0.38, ("reencode_2x", h): 0.22})
    boot = Bootstrap(0.99, 0, 2000)
    best, each = best_removed_share(m, h, ("reencode", "reencode_2x"), boot)
    half = Bootstrap(0.995, 0, 2000)
    assert each["reencode"] == excess_removed_share(m, h, "reencode", half)
    assert each["reencode"].estimate == pytest.approx(0.3, abs=0.02)
    assert best.estimate == each["reencode_2x"].estimate == pytest.approx(0.7, abs=0.02)
    assert (best.low, best.high) == (each["reencode_2x"].low, each["reencode_2x"].high)
    assert best.confidence == 0.99 and each["reencode"].confidence == pytest.approx(0.995)
    assert np.array_equal(best.replicates, np.maximum(each["reencode"].replicates, each["reencode_2x"].replicates))


def test_norms_and_losses_beyond_the_context_cover_the_same_positions():
    """Activations have a column for the last token, losses do not: every range stops at T-1 for both."""
    h = HOOKS[1]
    m = synthetic({("sae", h): 0.1}, {("sae", h): 0.1}, t=32)
    m.activation[h]["x_norm"][:, -1] = 1000.0  # the last token, which no loss column reads
    beyond = Quantity("sae", h, "x_norm", CTX, None)
    assert beyond.parts(m, "x")["x_n"][0] == len(beyond.positions(m)) == 32 - 1 - CTX
    assert mean_of(m, beyond).estimate == pytest.approx(2.0)
    nmse = Quantity("sae", h, "nmse", CTX, None)
    assert nmse.parts(m, "e")["e_n"][0] == beyond.parts(m, "x")["x_n"][0]


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


H = HOOKS[0]


def _contains(iv, value):
    return iv.low <= value <= iv.high


def test_excess_has_its_own_interval_and_sign():
    m = synthetic({("sae", H): 0.1, ("v", H): 0.3, ("w", H): 0.5}, {("sae", H): 0.5, ("v", H): 0.3, ("w", H): 0.2})
    iv = excess(m, H)
    assert iv.estimate == pytest.approx(0.4, abs=0.01) and _contains(iv, 0.4) and iv.low > 0
    zero = excess(m, H, "v")  # as good beyond the context as within: the interval spans 0
    assert zero.estimate == pytest.approx(0.0, abs=0.01) and zero.low < 0 < zero.high
    negative = excess(m, H, "w")
    assert negative.estimate == pytest.approx(-0.3, abs=0.01) and negative.high < 0
    assert iv.method == "cluster bootstrap (BCa)" and (iv.n_seqs, iv.n_tokens) == (30, 30 * 30)


def test_excess_of_noiseless_data_is_exact():
    m = synthetic({("sae", H): 0.125}, {("sae", H): 0.625}, noise=0.0)
    iv = excess(m, H)
    assert iv.estimate == iv.low == iv.high == 0.5  # every resample is the same point
    assert excess(m, H, "sae", "l0").estimate == pytest.approx(10.0)  # l0: 10 inside, 20 beyond


def test_control_relative_statistics_recover_known_values():
    # SAE 0.1 -> 0.5 (ratio 5), control 0.1 -> 0.2 (ratio 2): the position trend predicts 0.1 * 2 = 0.2
    m = synthetic({("sae", H): 0.1, ("full_context_sae", H): 0.1, ("v", H): 0.1},
                  {("sae", H): 0.5, ("full_context_sae", H): 0.2, ("v", H): 0.35}, noise=0.005)
    ratio = control_ratio(m, H)
    assert ratio.estimate == pytest.approx(2.5, rel=0.03) and _contains(ratio, 2.5)
    ex = control_excess(m, H)
    assert ex.estimate == pytest.approx(0.3, abs=0.01) and _contains(ex, 0.3) and ex.low > 0
    rec = control_recovery(m, H, "v")  # (0.5 - 0.35) / 0.3
    assert rec.estimate == pytest.approx(0.5, abs=0.03) and _contains(rec, 0.5)
    fix = excess_removed_share(m, H, "full_context_sae")  # 1 - (0.2 - 0.1) / (0.5 - 0.1): full-context training
    assert fix.estimate == pytest.approx(0.75, abs=0.03) and _contains(fix, 0.75)  # removes 3/4 of the excess
    plain = recovery(m, H, "v")  # against the raw excess 0.4 instead: 0.15 / 0.4
    assert plain.estimate == pytest.approx(0.375, abs=0.02)


def test_a_control_with_the_same_ratio_leaves_no_control_excess():
    m = synthetic({("sae", H): 0.2, ("full_context_sae", H): 0.1}, {("sae", H): 0.6, ("full_context_sae", H): 0.3})
    ratio = control_ratio(m, H)
    assert ratio.estimate == pytest.approx(1.0, abs=0.03) and _contains(ratio, 1.0)
    ex = control_excess(m, H)
    assert ex.estimate == pytest.approx(0.0, abs=0.01) and ex.low < 0 < ex.high
    assert excess(m, H).low > 0  # while the raw excess is clearly positive: the control tells them apart


def test_control_statistics_take_any_variant_control_and_metric():
    m = synthetic({("v", H): 2.0, ("c", H): 1.0}, {("v", H): 8.0, ("c", H): 2.0}, noise=0.0, metric="nmse")
    assert control_ratio(m, H, variant="v", control="c", metric="nmse").estimate == pytest.approx(2.0)
    assert control_excess(m, H, variant="v", control="c", metric="nmse").estimate == pytest.approx(4.0)
    with pytest.raises(KeyError, match="no dce for variant full_context_sae"):
        control_excess(m, H, variant="v")


def test_metric_recovery_generalises_recovery():
    m = synthetic({("sae", H): 0.2, ("v", H): 0.2}, {("sae", H): 0.6, ("v", H): 0.3}, metric="nmse")
    iv = metric_recovery(m, H, "v", "nmse")  # (0.6 - 0.3) / (0.6 - 0.2)
    assert iv.estimate == pytest.approx(0.75, abs=0.02) and _contains(iv, 0.75)
    d = synthetic({("sae", H): 0.1, ("v", H): 0.2}, {("sae", H): 0.5, ("v", H): 0.3})
    assert metric_recovery(d, H, "v", "dce").estimate == pytest.approx(recovery(d, H, "v").estimate)


def test_excess_removed_share_compares_excesses_not_levels():
    m = synthetic({("sae", H): 0.1, ("a", H): 0.05, ("b", H): 0.3, ("c", H): 0.02},
                  {("sae", H): 0.5, ("a", H): 0.15, ("b", H): 0.7, ("c", H): 0.02})
    a = excess_removed_share(m, H, "a")  # 1 - 0.1 / 0.4
    assert a.estimate == pytest.approx(0.75, abs=0.02) and _contains(a, 0.75)
    b = excess_removed_share(m, H, "b")  # worse everywhere, same excess: removes none of it
    assert b.estimate == pytest.approx(0.0, abs=0.02)
    c = excess_removed_share(m, H, "c")  # no excess at all
    assert c.estimate == pytest.approx(1.0, abs=0.02) and _contains(c, 1.0)
    assert recovery(m, H, "b").estimate == pytest.approx(-0.5, abs=0.02)  # recovery only compares O levels


def test_exact_edge_cases():
    m = synthetic({("sae", H): 0.25, ("v", H): 0.25, ("w", H): 0.25, ("full_context_sae", H): 0.25},
                  {("sae", H): 0.25, ("v", H): 0.75, ("w", H): 0.25, ("full_context_sae", H): 0.25}, noise=0.0)
    assert excess(m, H).estimate == 0.0
    undefined = excess_removed_share(m, H, "v")  # 0 / 0 excess: no number, never a verdict
    assert undefined.method == "undefined" and np.isnan(undefined.low) and np.isnan(undefined.high)
    assert control_ratio(m, H).estimate == 1.0 and control_excess(m, H).estimate == 0.0
    assert np.isnan(control_recovery(m, H, "w").estimate)  # 0 / 0: the gate must have stopped this
    m2 = synthetic({("sae", H): 0.25, ("v", H): 0.25}, {("sae", H): 0.75, ("v", H): 0.75}, noise=0.0)
    r = excess_removed_share(m2, H, "v")
    assert r.estimate == r.low == r.high == 0.0
    assert metric_recovery(m2, H, "v", "dce").estimate == 0.0


def test_contrast_between_layers():
    rising = {("sae", h): 0.1 * (i + 1) for i, h in enumerate(HOOKS)}
    out = {("sae", h): 1.0 + 0.2 * i for i, h in enumerate(HOOKS)}
    m = synthetic(rising, out)
    first_last = contrast(m, HOOKS[0], HOOKS[-1], "inside")
    assert first_last.estimate == pytest.approx(0.3, abs=0.01) and first_last.low > 0
    for a, b in zip(HOOKS, HOOKS[1:]):
        iv = contrast(m, a, b, "inside")
        assert iv.estimate == pytest.approx(0.1, abs=0.01) and _contains(iv, 0.1)
    assert contrast(m, HOOKS[0], HOOKS[-1], "outside").estimate == pytest.approx(0.6, abs=0.01)
    ex = contrast(m, HOOKS[0], HOOKS[-1], "excess")  # (1.6 - 0.4) - (1.0 - 0.1)
    assert ex.estimate == pytest.approx(0.3, abs=0.01) and _contains(ex, 0.3)
    same = contrast(m, HOOKS[1], HOOKS[1], "inside")
    assert same.estimate == 0.0
    flat = synthetic({("sae", h): 0.2 for h in HOOKS}, {("sae", h): 0.2 for h in HOOKS})
    iv = contrast(flat, HOOKS[0], HOOKS[-1], "inside")
    assert iv.low < 0 < iv.high
    assert first_last.n_tokens == 30 * 7  # the same positions at two hooks count once
    with pytest.raises(ValueError, match="region must be one of"):
        contrast(m, HOOKS[0], HOOKS[1], "beyond")


def test_new_instruments_take_the_bootstrap_settings():
    m = synthetic({("sae", H): 0.1, ("full_context_sae", H): 0.1}, {("sae", H): 0.5, ("full_context_sae", H): 0.2},
                  noise=0.2)
    narrow, wide = Bootstrap(confidence=0.5, n_resamples=500), Bootstrap(confidence=0.999, n_resamples=500)
    for f in (lambda b: excess(m, H, boot=b), lambda b: control_excess(m, H, b), lambda b: control_ratio(m, H, b),
              lambda b: control_recovery(m, H, "full_context_sae", b),
              lambda b: metric_recovery(m, H, "full_context_sae", "dce", b),
              lambda b: excess_removed_share(m, H, "full_context_sae", b),
              lambda b: contrast(m, H, H, "excess", b)):
        a, z = f(narrow), f(wide)
        assert a.confidence == 0.5 and z.confidence == 0.999
    with pytest.raises(TypeError, match="bootstrap settings"):
        control_excess(m, H, "sae")  # a variant where the bootstrap belongs


def test_unconverged_tokens_are_refused():
    m = synthetic({("sae", H): 0.1, ("reencode", H): 0.1}, {("sae", H): 0.5, ("reencode", H): 0.2})
    flags = np.zeros((30, 31), dtype=np.float32)
    flags[:, 0] = np.nan
    m.metrics[("reencode", H)]["unconverged"] = flags
    assert excess_removed_share(m, H, "reencode").estimate == pytest.approx(1 - 0.1 / 0.4, abs=0.02)
    flags[4, 20] = 1.0
    with pytest.raises(UnconvergedError, match=r"1 of 690 tokens in positions \[8, 31\)"):
        excess_removed_share(m, H, "reencode")
    with pytest.raises(UnconvergedError):  # any metric of those tokens
        excess(m, H, "reencode", "l0")
    assert mean_of(m, Quantity("reencode", H, "dce", *inside(m, H))).estimate == pytest.approx(0.1, abs=0.01)
    assert mean_of(m, Quantity("reencode", H, "unconverged", 1, None)).estimate == pytest.approx(1 / 900)


def test_an_interval_asked_for_again_is_bootstrapped_once(monkeypatch):
    """Several claims gate on the same excess: one bootstrap per (quantities, statistic, settings) and
    measurements; other settings, another statistic or other measurements bootstrap anew."""
    from saeclaims import instruments

    calls = []
    orig = instruments.cluster_bootstrap

    def spy(*a, **kw):
        calls.append(a[1])
        return orig(*a, **kw)

    monkeypatch.setattr(instruments, "cluster_bootstrap", spy)
    h = HOOKS[0]
    m = synthetic({("sae", h): 0.1, ("shift_pos", h): 0.1}, {("sae", h): 0.5, ("shift_pos", h): 0.2})
    boot = Bootstrap(confidence=0.9, n_resamples=200)
    a = excess(m, h, boot=boot)
    assert excess(m, h, boot=boot) is a and len(calls) == 1
    assert excess(m, h, "shift_pos", boot=boot).estimate < a.estimate and len(calls) == 2
    assert excess(m, h, boot=Bootstrap(confidence=0.9, n_resamples=200, seed=1)) is not a and len(calls) == 3
    assert recovery(m, h, "shift_pos", boot) is recovery(m, h, "shift_pos", boot) and len(calls) == 4
    other = synthetic({("sae", h): 0.1}, {("sae", h): 0.5})
    assert excess(other, h, boot=boot) is not a and len(calls) == 5


def test_statistics_closing_over_unhashable_values_are_not_cached():
    from saeclaims.instruments import _memo_key

    def scaled(scale):
        return lambda t: t["a_sum"] * scale

    parts = {"a_sum": np.arange(4.0), "a_n": np.ones(4)}
    boot = Bootstrap()
    assert _memo_key(parts, scaled([1, 2]), boot) is None  # a list closed over: not hashable, never cached
    k1 = _memo_key(parts, scaled(2.0), boot)
    assert k1 is not None and _memo_key(parts, scaled(2.0), boot) == k1
    assert _memo_key(parts, scaled(3.0), boot) != k1
    assert _memo_key({"a_sum": np.arange(4.0) + 1e-12, "a_n": np.ones(4)}, scaled(2.0), boot) != k1
    assert _memo_key(parts, scaled(2.0), Bootstrap(seed=1)) != k1


def _l0_subject(sae_in, sae_out, ctl_in, ctl_out, n=30, t=32, seed=0) -> Measurements:
    """L0 of the SAE and of its control, constant inside and beyond the context, plus noise."""
    rng = np.random.default_rng(seed)
    m = Measurements("planted", HOOKS, ["sae", "full_context_sae"], {h: CTX for h in HOOKS},
                     clean_ce=np.full((n, t - 1), 3.0, dtype=np.float32))
    for v, (a, b) in (("sae", (sae_in, sae_out)), ("full_context_sae", (ctl_in, ctl_out))):
        met = {k: np.zeros((n, t - 1), dtype=np.float32) for k in (*LOSS_METRICS, *RECON_METRICS)}
        met["l0"] = (np.where(np.arange(t - 1) < CTX, a, b)[None] + rng.normal(0, 0.5, (n, t - 1))).astype(np.float32)
        m.metrics[(v, HOOKS[0])] = met
    return m


@pytest.mark.parametrize(("sae", "ctl", "want"), [
    ((10, 30), (10, 15), "holds"),     # planted: the encoder fires more beyond than the position trend predicts
    ((10, 20), (10, 20), "inconclusive"),  # planted: L0 rises with position for both, no encoder failure
    ((10, 12), (10, 20), "refuted"),   # the SAE rises less than its control
])
def test_the_l0_control_ratio_tells_an_encoder_failure_from_a_position_trend(sae, ctl, want):
    """`encoder-off-distribution`'s planted controls: the raw L0 ratio is 2 or more in the first two cases
    alike; only the ratio over the control's tells them apart."""
    from saeclaims.stats import verdict

    m = _l0_subject(*sae, *ctl)
    iv = control_ratio(m, HOOKS[0], Bootstrap(0.99, 0, 500), metric="l0")
    assert verdict(iv.low, iv.high, 1.0, ">") == want
    raw = beyond_over_inside(m, HOOKS[0], "sae", "l0", Bootstrap(0.99, 0, 500))
    assert raw.low > 1.0 or want == "refuted"


@pytest.mark.parametrize(("sae_in", "rand_in", "want"), [
    (0.3, 0.1, "holds"),         # planted: the SAE's error costs 3x a random one of its norm
    (0.15, 0.1, "refuted"),      # 1.5x: worse than random, not 'much worse' (Gurnee's 2x)
])
def test_errors_vs_random_in_context_uses_gurnees_factor(sae_in, rand_in, want):
    from saeclaims.stats import verdict

    m = synthetic({("sae", HOOKS[0]): sae_in, ("random_error", HOOKS[0]): rand_in},
                  {("sae", HOOKS[0]): 0.9, ("random_error", HOOKS[0]): 0.9}, noise=0.005)
    iv = ratio(m, Quantity("sae", HOOKS[0], "dce", *inside(m, HOOKS[0])),
               Quantity("random_error", HOOKS[0], "dce", *inside(m, HOOKS[0])), Bootstrap(0.99, 0, 500))
    assert verdict(iv.low, iv.high, 2.0, ">") == want
