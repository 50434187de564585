"""The report's figures: each drawn from a small typed series, under the claims that name it."""

from pathlib import Path

import pytest

from saeclaims import figures
from saeclaims.catalog import Claim
from saeclaims.figures import FIGURES, draw_all
from saeclaims.series import (
    DecodedPositions,
    FeatureShares,
    HookNorms,
    L0Curve,
    PositionCurves,
    Recoveries,
    WposRows,
)
from saeclaims.thread import THREAD_CLAIMS

H0, H1 = "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"
SMALL = [
    PositionCurves("s", H0, 8, {"sae": [0.1 * i for i in range(20)], "zero": [1.0] * 20}, [0.05] * 20),
    PositionCurves("s", H1, 8, {"sae": [0.2] * 20}),
    L0Curve("s", H0, 8, [float(5 + i) for i in range(20)]),
    Recoveries("s", H0, {"shift_pos": [0.7, 0.6, 0.8]}, [0.3, 0.2, 0.4]),
    Recoveries("s", H1, {"shift_pos": [0.1, -0.2, 0.3]}, [0.01, -0.02, 0.03]),
    HookNorms("s", H0, 1.0, 0.4, 0.5),
    HookNorms("s", H1, 10.0, 0.01, 0.5),
    WposRows("s", 8, [[float(i), float(i * i % 5), float((i * 3) % 7)] for i in range(1, 8)]),
    FeatureShares("s", H0, [0.1, 0.9, 0.5], [0.8, 0.05, 0.4]),
    DecodedPositions("s", H0, 8, 1, [float(min(i, 7)) for i in range(1, 20)]),
]
# the axes labels each figure declares (x, y), as a reader needs them
LABELS = {
    "dce_by_position": ("position p", "added loss dCE (nats / token)"),
    "l0_by_position": ("position p", "L0: active latents of SAE(x)"),
    "recovery_bars": ("SAE id", "share of the excess loss recovered"),
    "norms": ("SAE id", "L2 norm (log scale)"),
    "wpos_pca": ("PC1", "PC2"),
    "feature_split_hist": ("variance share of the better single factor", "live features"),
    "decoded_positions_plot": ("true position", "position decoded from SAE(x)"),
}


def test_every_figure_a_thread_claim_names_exists_and_every_figure_is_named():
    names = {spec.name for spec in FIGURES}
    named = {f for c in THREAD_CLAIMS for f in c.figures}
    assert named <= names, named - names
    assert names <= named, names - named  # a figure no claim names would never reach the report


def test_every_figure_draws_a_nonempty_png_with_its_axes_labels(tmp_path, monkeypatch):
    assert set(LABELS) == {spec.name for spec in FIGURES}
    seen: dict[str, list[tuple[str, str]]] = {}
    save = figures._save

    def spy(fig, out, name, layout=True):
        seen[name] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
        return save(fig, out, name, layout)

    monkeypatch.setattr(figures, "_save", spy)
    claim = Claim("c", "f", "src", "u", "w", "s", ">", 0.5, "why", figures=tuple(LABELS))
    figs = draw_all(tmp_path, [], SMALL, [], [claim])
    drawn = figs["c"]
    assert len(drawn) == len(LABELS)
    for spec, name in zip(FIGURES, drawn, strict=True):
        png = tmp_path / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000, name
        x, y = LABELS[spec.name]
        assert any(x in ax_x and y in ax_y for ax_x, ax_y in seen[name]), (spec.name, seen[name])


def test_a_figure_goes_to_the_claims_that_name_it(tmp_path):
    a = Claim("a", "f", "src", "u", "w", "s", ">", 0.5, "why", figures=("norms",))
    b = Claim("b", "f", "src", "u", "w", "s", ">", 0.5, "why")
    figs = draw_all(Path(tmp_path), [], [r for r in SMALL if isinstance(r, HookNorms)], [], [a, b])
    assert figs == {"a": ["norms-s.png"]}


@pytest.mark.parametrize("series", [[], [SMALL[0]]])
def test_no_claim_names_it_no_section_gets_it(tmp_path, series):
    assert draw_all(tmp_path, [], series, [], []) == {}


def test_evidence_rows_and_not_applicable_rows_keep_the_hooks_forward_order():
    from types import SimpleNamespace

    from saeclaims.figures import _row_order

    hooks = ("blocks.2.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.3.hook_resid_post",
             "blocks.3.hook_resid_pre", "blocks.1.attn.hook_z")
    rows = [SimpleNamespace(subject="s", sae_id=h) for h in hooks]
    assert [r.sae_id for r in sorted(rows, key=_row_order)] == [
        "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.2.hook_resid_pre", "blocks.3.hook_resid_pre",
        "blocks.3.hook_resid_post"]


def test_a_wild_interval_is_clipped_and_marked_and_the_panel_names_its_threshold(tmp_path, monkeypatch):
    """One interval reaching -17.8 must not squash rows whose estimates lie near 0.9 (issue 26.5); the y label is
    readable and the title says which threshold and direction colour the points."""
    from saeclaims.figures import evidence_by_hook
    from saeclaims.stats import Evidence

    seen = {}
    save = figures._save

    def spy(fig, out, name, layout=True):
        ax = fig.axes[0]
        seen.update(ylim=ax.get_ylim(), ylabel=ax.get_ylabel(), size=ax.yaxis.label.get_size(), title=ax.get_title(),
                    texts=[t.get_text() for t in ax.texts], fig_texts=[t.get_text() for t in fig.texts])
        return save(fig, out, name, layout)

    monkeypatch.setattr(figures, "_save", spy)
    evs = [Evidence("c", "s", f"blocks.{i}.hook_resid_pre", "a statistic " * 20, est, lo, hi, 0.999, 0.5, "<", 8, 80,
                    verdict) for i, (est, lo, hi, verdict) in
           enumerate([(0.93, 0.91, 0.95, "refuted"), (-1.8, -17.8, -0.6, "holds"), (0.2, 0.1, 0.3, "holds")])]
    assert evidence_by_hook(tmp_path, "c", evs) == "evidence-c.png"
    low, high = seen["ylim"]
    assert -17.8 < low < -1.8 and high > 0.93  # clipped, the estimates and threshold in view
    assert "-17.8" in seen["texts"]  # the clipped end is written where it leaves the axis
    assert seen["ylabel"] == "estimate" and seen["size"] >= 8
    assert seen["title"] == "c: holds where the whole interval is < 0.5"
    assert seen["fig_texts"][0].startswith("Statistic: a statistic") and "…" not in seen["fig_texts"][0]
