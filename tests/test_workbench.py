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
