"""Planted controls for every claim whose statistic reads the splice measurements (and W_pos), at the claim level.

Each claim test of claims/ runs as it is (its guards, its statistic, its threshold) on planted measurements of
the tiny subject, at a run's confidence (0.999): once where its words hold by construction, once where they fail
by construction. It must say "holds" on the first and "refuted" on the second. The positional repairs are
validated on a planted model through the real splice in tests/test_planted_instruments.py; this file covers the
rest (README, "Planted controls").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from claims import test_context, test_norms, test_positional, test_training_context
from saeclaims.measurements import LOSS_METRICS, RECON_METRICS, Measurements
from saeclaims.stats import verdict
from tests.conftest import tiny_subject
from tests.test_planted_instruments import BOOT, NotApplicableHere, PlantedClaim, claim_id_of

CTX, T, N = 8, 32, 30
L0, L1 = "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"
ZERO = 2.0  # zero ablation's added loss everywhere


class PlantedRun(PlantedClaim):
    """PlantedClaim whose re-encoding measurements are the planted ones too."""

    def reencode_measurements(self, hooks=None):
        return self._m

    def oracle_measurements(self, hooks=None):
        return self._m


def subject():
    s = tiny_subject(ctx=CTX, seq_len=T, n_seqs=4)
    s.full_context_saes = {h: s.saes[h] for h in s.saes}  # a control at every SAE (its numbers are planted)
    return s


def planted(dce: dict[tuple[str, str], tuple[float, float]], l0: dict[tuple[str, str], tuple[float, float]] = (),
            x_norm: dict[str, float] = (), wpos_share: float = 0.01, seed: int = 0,
            fp_mass: dict[tuple[str, str], tuple[float, float]] = ()) -> Measurements:
    """dCE (and L0, false-positive mass) per (variant, SAE id): (inside the context, beyond it), with small per-token
    noise; zero ablation adds ZERO; x_norm per SAE id."""
    rng = np.random.default_rng(seed)
    ids = [L0, L1, "blocks.1.hook_resid_post"]
    keys = {*dce, *dict(l0), *dict(fp_mass)} | {("zero", h) for h in ids}
    m = Measurements("tiny", ids, sorted({v for v, _ in keys}), {h: CTX for h in ids},
                     clean_ce=np.full((N, T - 1), 3.0, dtype=np.float32))
    inside = np.arange(T - 1) < CTX
    for key in keys:
        metrics = {k: np.zeros((N, T - 1), dtype=np.float32) for k in (*LOSS_METRICS, *RECON_METRICS)}
        a, b = dce.get(key, (ZERO, ZERO) if key[0] == "zero" else (0.1, 0.1))
        metrics["dce"] = (np.where(inside, a, b) + rng.normal(0, 0.005, (N, T - 1))).astype(np.float32)
        metrics["ce"] = metrics["dce"] + 3.0
        la, lb = dict(l0).get(key, (20.0, 20.0))
        metrics["l0"] = (np.where(inside, la, lb) + rng.normal(0, 0.2, (N, T - 1))).astype(np.float32)
        if key in dict(fp_mass):
            fa, fb = dict(fp_mass)[key]
            metrics["fp_mass"] = (np.where(inside, fa, fb) * (1 + rng.normal(0, 0.02, (N, T - 1)))).astype(np.float32)
            metrics["unconverged"] = np.zeros((N, T - 1), dtype=np.float32)
        m.metrics[key] = metrics
    for h in ids:
        m.activation[h] = {"x_norm": np.full((N, T), dict(x_norm).get(h, 10.0), dtype=np.float32)
                           * (1 + rng.normal(0, 0.01, (N, T))).astype(np.float32),
                           "wpos_share": np.full((N, T), wpos_share, dtype=np.float32)}
    return m


def judge(test, sae_id: str, m: Measurements, subj=None) -> str:
    fixture = PlantedRun(claim_id_of(test), subj or subject(), sae_id, m, BOOT)
    try:
        test(fixture)
    except NotApplicableHere as exc:
        return f"not applicable: {exc}"
    iv, c = fixture.interval, fixture.claim
    return verdict(iv.low, iv.high, c.threshold, c.direction)


def sparse(sae: str) -> dict:
    """L0 5 for the SAE and its control: sparse on the tiny subject's 16 dimensions (an identifiable code)."""
    return {("sae", sae): (5.0, 5.0), ("full_context_sae", sae): (5.0, 5.0)}


def same(value: float, sae: str = L0) -> dict:
    """A control like the SAE in context (the like-control gate passes) and the same beyond."""
    return {("full_context_sae", sae): value}


# claim test, its row, planted measurements where the words hold, where they fail, what each plants
CASES = [
    (test_context.test_beyond_context_degrades, L0,
     lambda: planted({("sae", L0): (0.1, 0.3)}), lambda: planted({("sae", L0): (0.3, 0.1)}),
     "SAE adds 0.1 nats in context, 0.3 beyond / 0.3 in context, 0.1 beyond"),
    (test_context.test_in_context_performs_well, L0,
     lambda: planted({("sae", L0): (0.1, 0.1)}), lambda: planted({("sae", L0): (0.5, 0.5)}),
     "CE-loss score 0.95 / 0.75 (zero ablation adds 2)"),
    (test_context.test_later_layers_worse_in_context, "resid_pre",
     lambda: planted({("sae", L0): (0.05, 0.3), ("sae", L1): (0.2, 0.3)}),
     lambda: planted({("sae", L0): (0.2, 0.3), ("sae", L1): (0.05, 0.3)}),
     "in context layer 1 adds 0.2, layer 0 0.05 / the reverse"),
    (test_context.test_beyond_context_worst_early, "resid_pre",
     lambda: planted({("sae", L0): (0.1, 0.6), ("sae", L1): (0.1, 0.2)}),
     lambda: planted({("sae", L0): (0.1, 0.2), ("sae", L1): (0.1, 0.6)}),
     "beyond the context layer 0 adds 0.6, layer 1 0.2 / the reverse"),
    (test_context.test_errors_worse_than_random, L1,
     lambda: planted({("sae", L1): (0.3, 0.3), ("random_error", L1): (0.1, 0.1)}),
     lambda: planted({("sae", L1): (0.15, 0.15), ("random_error", L1): (0.1, 0.1)}),
     "in context the SAE's error costs 3x a random one of its norm / 1.5x"),
    (test_context.test_errors_worse_than_random_beyond, L1,
     lambda: planted({("sae", L1): (0.1, 0.3), ("random_error", L1): (0.1, 0.15)}),
     lambda: planted({("sae", L1): (0.1, 0.15), ("random_error", L1): (0.1, 0.3)}),
     "beyond the context 2x a random error / half"),
    (test_context.test_encoder_off_distribution, L1,
     lambda: planted({("sae", L1): (0.1, 0.1), **same((0.1, 0.1), L1)},
                     {("sae", L1): (10, 30), ("full_context_sae", L1): (10, 12)}),
     lambda: planted({("sae", L1): (0.1, 0.1), **same((0.1, 0.1), L1)},
                     {("sae", L1): (10, 11), ("full_context_sae", L1): (10, 20)}),
     "L0 10 -> 30 beyond, the control's 10 -> 12 / 10 -> 11 against the control's 10 -> 20"),
    (test_context.test_reencoding_recovers, L0,
     lambda: planted({("sae", L0): (0.1, 0.5), ("reencode", L0): (0.1, 0.2), ("reencode_2x", L0): (0.1, 0.15)}),
     lambda: planted({("sae", L0): (0.1, 0.5), ("reencode", L0): (0.1, 0.5), ("reencode_2x", L0): (0.1, 0.45)}),
     "re-inferred codes remove 0.75-0.875 of a 0.4 excess / 0-0.125"),
    (test_context.test_false_positives_beyond_context, L1,
     lambda: planted({("sae", L1): (0.1, 0.3), **same((0.1, 0.1), L1)}, sparse(L1),
                     fp_mass={("oracle_support", L1): (0.05, 0.3), ("full_context_oracle_support", L1): (0.05, 0.06)}),
     lambda: planted({("sae", L1): (0.1, 0.3), **same((0.1, 0.1), L1)}, sparse(L1),
                     fp_mass={("oracle_support", L1): (0.05, 0.06), ("full_context_oracle_support", L1): (0.05, 0.1)}),
     "false-positive mass 0.05 -> 0.3 beyond, the control's 0.05 -> 0.06 / 0.05 -> 0.06 against 0.05 -> 0.1"),
    (test_context.test_false_positives_cause_failure, L0,
     lambda: planted({("sae", L0): (0.1, 0.5), ("oracle_support", L0): (0.08, 0.12)}, sparse(L0),
                     fp_mass={("oracle_support", L0): (0.05, 0.3)}),
     lambda: planted({("sae", L0): (0.1, 0.5), ("oracle_support", L0): (0.08, 0.45)}, sparse(L0),
                     fp_mass={("oracle_support", L0): (0.05, 0.06)}),
     "the SAE's code cut to the oracle support removes 0.9 of a 0.4 excess / 0.075"),
    (test_norms.test_layer0_norm_order_of_magnitude_smaller, L1,
     lambda: planted({}, x_norm={L0: 1.0, L1: 13.0}), lambda: planted({}, x_norm={L0: 1.0, L1: 3.0}),
     "||resid_pre 1|| 13x ||resid_pre 0|| / 3x"),
    (test_norms.test_wpos_small_share_later, L1,
     lambda: planted({}, wpos_share=0.002), lambda: planted({}, wpos_share=0.3),
     "W_pos carries 0.2% of ||x||^2 / 30%"),
    (test_positional.test_token_only_goes_poorly, L0,
     lambda: planted({("sae", L0): (0.1, 0.5), ("token_then_pos", L0): (0.5, 0.5)}),
     lambda: planted({("sae", L0): (0.1, 0.5), ("token_then_pos", L0): (0.12, 0.5)}),
     "token-only input adds 5x the SAE's in-context loss / 1.2x"),
    (test_positional.test_token_only_goes_poorly_mixing, L0,
     lambda: planted({("sae", L0): (0.1, 0.5), ("token_mean_pos", L0): (0.4, 0.5), ("token_then_pos", L0): (0.5, 0.5)}),
     lambda: planted({("sae", L0): (0.1, 0.5), ("token_mean_pos", L0): (0.12, 0.5),
                      ("token_then_pos", L0): (0.5, 0.5)}),
     "with the mean position restored, still 4x / 1.2x (mixing explains little)"),
    (test_training_context.test_beyond_context_degrades_vs_control, L1,
     lambda: planted({("sae", L1): (0.1, 0.3), **same((0.1, 0.1), L1)}),
     lambda: planted({("sae", L1): (0.1, 0.1), **same((0.1, 0.3), L1)}),
     "the SAE's beyond/inside ratio 3, the control's 1 / 1 against 3"),
    (test_training_context.test_full_context_training_fixes, L1,
     lambda: planted({("sae", L1): (0.1, 0.4), **same((0.1, 0.1), L1)}),
     lambda: planted({("sae", L1): (0.1, 0.4), **same((0.1, 0.38), L1)}),
     "the control removes all of a 0.3 excess / a tenth of it"),
]


@pytest.mark.parametrize(("test", "row", "holds", "fails", "what"), CASES,
                         ids=[claim_id_of(c[0]) for c in CASES])
def test_the_claim_tells_its_planted_controls_apart(test, row, holds, fails, what):
    assert judge(test, row, holds()) == "holds", what
    assert judge(test, row, fails()) == "refuted", what


def test_every_claim_has_planted_controls():
    """Every registered thread claim is in this file or in test_planted_instruments.py (the positional repairs,
    the decoded position, the computed position), test_planted_false_positives.py (the oracle support) or
    test_planted_token_only.py (token-only input, the feature split); wpos-helix below."""
    from saeclaims.thread import THREAD_CLAIMS
    from tests import test_planted_false_positives as compressed_sensing
    from tests import test_planted_instruments as positional
    from tests import test_planted_token_only as token_only

    here = {claim_id_of(c[0]) for c in CASES} | {"wpos-helix"}
    there = ({claim_id_of(t) for t, *_ in positional.SEPARATING} | {claim_id_of(t) for t, *_ in positional.BLIND}
             | {claim_id_of(positional.COMPUTED)})
    there |= {claim_id_of(t) for t, *_ in compressed_sensing.SEPARATING}
    there |= {claim_id_of(t) for t, *_ in token_only.CONTROLS}
    missing = {c.id for c in THREAD_CLAIMS} - here - there
    assert not missing, f"claims without planted controls: {sorted(missing)}"


def test_wpos_helix_tells_a_helix_from_noise():
    """Planted W_pos: a helix (cos, sin of the position and a linear ramp) holds; Gaussian rows are refuted."""
    s = subject()
    p = torch.arange(s.model.cfg.n_ctx, dtype=torch.float32)[:, None]
    d = s.model.cfg.d_model
    helix = torch.zeros(s.model.cfg.n_ctx, d)
    helix[:, 0:1], helix[:, 1:2], helix[:, 2:3] = torch.cos(p / 4), torch.sin(p / 4), p / 16
    for w, want in ((helix + 0.01 * torch.randn_like(helix), "holds"), (torch.randn_like(helix), "refuted")):
        s.model.W_pos.data.copy_(w)
        assert judge(test_positional.test_wpos_helix, "model", planted({}), s) == want


def test_false_positive_claims_are_not_applicable_where_meaningless():
    """Codes too dense for a true sparse code to be identifiable (L0 20 of 16 dimensions), or no control (the
    beyond/inside ratio needs the control's trend): not applicable, saying why."""
    fp = {("oracle_support", L1): (0.05, 0.3), ("full_context_oracle_support", L1): (0.05, 0.06)}
    dense = planted({("sae", L1): (0.1, 0.3), **same((0.1, 0.1), L1)}, fp_mass=fp)
    assert "too dense" in judge(test_context.test_false_positives_beyond_context, L1, dense)
    cause = planted({("sae", L1): (0.1, 0.5), ("oracle_support", L1): (0.1, 0.1)}, fp_mass=fp)
    assert "too dense" in judge(test_context.test_false_positives_cause_failure, L1, cause)
    bare = subject()
    bare.full_context_saes = {}
    ok = planted({("sae", L1): (0.1, 0.3), **same((0.1, 0.1), L1)}, sparse(L1), fp_mass=fp)
    assert "no full-context SAE" in judge(test_context.test_false_positives_beyond_context, L1, ok, bare)
