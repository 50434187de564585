"""The report's figures."""

from saeclaims.figures import FIGURES
from saeclaims.thread import THREAD_CLAIMS


def test_every_figure_owner_is_a_registered_claim():
    """A figure is listed under the claims that own it; an owner that is no claim (a renamed one) would leave
    the figure under no claim's section."""
    ids = {c.id for c in THREAD_CLAIMS}
    for spec in FIGURES:
        assert set(spec.owners) <= ids, (spec.draw.__name__, set(spec.owners) - ids)


def test_evidence_rows_and_not_applicable_rows_keep_the_hooks_forward_order():
    from types import SimpleNamespace

    from saeclaims.figures import _row_order

    hooks = ("blocks.2.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.3.hook_resid_post",
             "blocks.3.hook_resid_pre", "blocks.1.attn.hook_z")
    rows = [SimpleNamespace(subject="s", hook=h) for h in hooks]
    assert [r.hook for r in sorted(rows, key=_row_order)] == [
        "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.2.hook_resid_pre", "blocks.3.hook_resid_pre",
        "blocks.3.hook_resid_post"]
