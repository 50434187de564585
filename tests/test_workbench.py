"""The workbench: lazily measured hooks, the variants a subject supports, and the figure series."""

from saeclaims.series import HookNorms, PositionCurves
from saeclaims.workbench import Workbench
from tests.conftest import tiny_model, tiny_subject


def test_a_rotary_model_measures_every_context_variant_and_no_wpos_variant():
    """Rotary models are where the context question matters most: the context claims' variants run, the
    W_pos variants (whose claims are not applicable there) are left out instead of crashing."""
    s = tiny_subject(ctx=8, seq_len=24, n_seqs=4)
    s.model = tiny_model(positional="rotary")
    series = []
    wb = Workbench(s, record_series=series.append)
    m = wb.measurements()
    assert not {"token_then_pos", "shift_pos", "pos_repair_out"} & {v for v, _ in m.metrics}
    assert ("sae", "blocks.0.hook_resid_pre") in m.metrics and ("random_error", "blocks.0.hook_resid_pre") in m.metrics
    curves = [x for x in series if isinstance(x, PositionCurves)]
    assert curves and set(curves[0].dce) == {"sae", "random_error"}
    assert all(x.wpos_norm is None for x in series if isinstance(x, HookNorms))


def test_learned_positions_measure_the_positional_variants():
    wb = Workbench(tiny_subject(ctx=8, seq_len=24, n_seqs=4))
    assert {"token_then_pos", "shift_pos", "pos_repair_out"} <= {v for v, _ in wb.measurements().metrics}


def test_declared_reads_narrow_the_splice_and_an_undeclared_read_is_measured_on_demand():
    """With reads, a hook splices what its claim tests read (and the SAE, for the figures); a read of anything
    else is measured then, with one warning per pair, and equals what the full splice measures."""
    import numpy as np
    import pytest

    from saeclaims.reads import VariantReads

    s = tiny_subject(ctx=8, seq_len=24, n_seqs=4)
    h0, h1 = s.sae_ids[0], s.sae_ids[1]
    reads = VariantReads()
    reads.add([h0], ("shift_pos",))
    wb = Workbench(s, reads=reads)
    m = wb.measurements()
    assert {v for v, h in m.metrics if h == h0} == {"sae", "shift_pos"}
    assert {v for v, h in m.metrics if h == h1} == {"sae"}
    with pytest.warns(RuntimeWarning, match="token_then_pos at .*was read, but no selected claim test declares"):
        got = m.get("token_then_pos", h1, "dce")
    full = Workbench(s).measurements()
    np.testing.assert_allclose(got, full.get("token_then_pos", h1, "dce"), atol=1e-5)
    np.testing.assert_allclose(m.get("shift_pos", h0, "dce"), full.get("shift_pos", h0, "dce"), atol=1e-5)
    with pytest.raises(KeyError, match="no dce for variant full_context_sae"):  # no control here: not measurable
        m.get("full_context_sae", h1, "dce")


def test_an_undeclared_read_reaches_measurements_taken_before_a_merge():
    """A claim test may hold Measurements from before another hook was merged in (xdist workers measure hook
    by hook): its undeclared read is measured once and lands in both."""
    import pytest

    from saeclaims.reads import VariantReads

    s = tiny_subject(ctx=8, seq_len=24, n_seqs=4)
    h0, h1 = s.sae_ids[0], s.sae_ids[1]
    reads = VariantReads()
    reads.add([h0, h1], ())
    wb = Workbench(s, reads=reads, eager=False)
    early = wb.measurements([h0])
    late = wb.measurements([h1])
    assert late is not early and ("zero", h0) not in late.metrics
    with pytest.warns(RuntimeWarning, match="zero at"):
        got = early.get("zero", h0, "dce")
    assert late.get("zero", h0, "dce") is got


def test_facts_are_recorded_once_per_subject_and_per_sae():
    """The subject facts come from the first measurement: the model's once, each SAE's with its hook; a rotary
    model has no W_pos helix fact."""
    s = tiny_subject(ctx=8, seq_len=24, n_seqs=4)
    facts = []
    wb = Workbench(s, record_fact=facts.append)
    wb.measurements()
    model_level = [f.fact for f in facts if not f.sae_id]
    assert model_level == ["wpos_helix_share", "long_context_gain"]
    assert {(f.sae_id, f.fact) for f in facts if f.sae_id} == {
        (h, k) for h in s.sae_ids for k in ("explained_variance", "l0", "ce_loss_score")}
    s2 = tiny_subject(ctx=8, seq_len=24, n_seqs=4)
    s2.model = tiny_model(positional="rotary")
    facts2 = []
    Workbench(s2, record_fact=facts2.append).measurements()
    assert [f.fact for f in facts2 if not f.sae_id] == ["long_context_gain"]


def test_oracle_and_reencode_measurements_share_the_first_sequences_and_measure_each_pair_once(monkeypatch):
    """Both costly families on the first reencode_seqs sequences, in one Measurements (paired with the SAE's on
    sequences); a pair already measured is not measured again; the control's twin only where there is a control."""
    import saeclaims.workbench as workbench

    s = tiny_subject(ctx=8, seq_len=24, n_seqs=4)
    h0, h1 = s.sae_ids[0], s.sae_ids[1]
    s.full_context_saes = {h0: s.saes[h0]}
    calls = []
    real = workbench.measure

    def counting(subject, hooks, variants, *a, **k):
        calls.append((tuple(hooks), tuple(variants), k["n_seqs"]))
        return real(subject, hooks, variants, *a, **k)

    monkeypatch.setattr(workbench, "measure", counting)
    wb = Workbench(s, reencode_seqs=3)
    o = wb.oracle_measurements([h0, h1])
    assert o.n_seqs == 3 and calls[-1][2] == 3
    assert {("oracle_support", h0), ("full_context_oracle_support", h0), ("oracle_support", h1)} <= set(o.metrics)
    assert ("full_context_oracle_support", h1) not in o.metrics
    assert wb.oracle_measurements([h0]) is o and len(calls) == 1
    r = wb.reencode_measurements([h0])
    assert len(calls) == 2 and ("reencode", h0) in r.metrics and ("oracle_support", h0) in r.metrics
    assert r.n_seqs == 3
