"""The report's figures (matplotlib, Agg), one function per figure, each returning its file name.

Each figure declares the typed series it draws (`series.py`); a claim names the figures shown with it
(`Claim.figures`, where it is registered), so the library knows no claim ids.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .catalog import Claim  # noqa: E402
from .positional import principal_projection  # noqa: E402
from .series import (  # noqa: E402
    DecodedPositions,
    FeatureShares,
    HookNorms,
    L0Curve,
    PositionCurves,
    Recoveries,
    Series,
    WposRows,
)
from .stats import Evidence  # noqa: E402
from .subjects.core import hook_in_id, hook_order  # noqa: E402
from .variants import REGISTRY  # noqa: E402

VERDICT_COLOR = {"holds": "C2", "refuted": "C3", "inconclusive": "0.55", "undefined": "C1"}


@dataclass(frozen=True)
class FigureSpec:
    """A figure: its name (what a claim's `figures=` names), the series type it draws, whether per subject."""

    draw: Callable
    series: type
    per_subject: bool = True

    @property
    def name(self) -> str:
        return self.draw.__name__


FIGURES: list[FigureSpec] = []


def figure(series: type, per_subject: bool = True):
    """Register a figure function `draw(out, subject, records) -> file name | None`, named by the function."""

    def deco(fn):
        FIGURES.append(FigureSpec(fn, series, per_subject))
        return fn

    return deco


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _smooth(y: list[float], w: int = 8) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    if len(y) < w:
        return np.arange(len(y)), y
    k = np.ones(w) / w
    return np.arange(len(y) - w + 1) + (w - 1) / 2, np.convolve(y, k, mode="valid")


def _grid(n: int):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _save(fig, out: Path, name: str, layout: bool = True) -> str:
    if layout:
        fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def _style(name: str) -> tuple[str, str, str] | None:
    """A variant's colour, line style and label (its registry entry's `style`; None: not drawn in curves)."""
    v = REGISTRY.get(name)
    return v.style if v is not None else None


def _short(hook: str) -> str:
    return hook.replace("blocks.", "").replace(".hook_", " ")


@figure(PositionCurves)
def dce_by_position(out: Path, subject: str, records: list[PositionCurves]) -> str:
    fig, axes = _grid(len(records))
    for ax, r in zip(axes, records):
        for v, y in r.dce.items():
            style = _style(v)
            if y and style is not None:
                color, ls, label = style
                # SAE(x) drawn last and thicker, so the variants never hide it
                ax.plot(*_smooth(y[1:]), color=color, ls=ls, label=label, lw=1.8 if v == "sae" else 1.0,
                        zorder=3 if v == "sae" else 2)
        if r.full_context_dce:
            ax.plot(*_smooth(r.full_context_dce[1:]), color="k", ls="--", lw=1, label="control: full-context SAE(x)")
        ax.axvline(r.context_size, color="grey", ls=":", label=f"training context ({r.context_size})")
        ax.set_title(r.sae_id, fontsize=9)
        ax.set_xlabel("position p")
        ax.set_ylabel("added loss dCE (nats / token)")
    labels: dict[str, object] = {}  # one legend for all panels, below them, so it hides no curve
    for ax in axes[:len(records)]:
        handles, names = ax.get_legend_handles_labels()
        for h, n in zip(handles, names):
            labels.setdefault("training context (dotted)" if n.startswith("training context") else n, h)
    fig.suptitle(f"{subject}: loss added by splicing each variant, by position (8-position moving mean)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(list(labels.values()), list(labels), loc="lower center", ncol=3, fontsize=7, frameon=False)
    return _save(fig, out, f"dce_by_position-{_safe(subject)}.png", layout=False)


@figure(L0Curve)
def l0_by_position(out: Path, subject: str, records: list[L0Curve]) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for r in records:
        ax.plot(*_smooth(r.l0[1:]), lw=1, label=r.sae_id)
    for c in sorted({r.context_size for r in records}):
        ax.axvline(c, color="grey", ls=":")
    ax.set_xlabel("position p")
    ax.set_ylabel("L0: active latents of SAE(x)")
    ax.set_yscale("log")
    # outside the axes: inside, it hides part of the curves (the layer-0 jump at the context boundary)
    ax.legend(fontsize=7, title="grey dotted: training context", title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(f"{subject}: active latents by position (8-position moving mean, log scale)", fontsize=10)
    return _save(fig, out, f"l0_by_position-{_safe(subject)}.png")


@figure(Recoveries)
def recovery_bars(out: Path, subject: str, records: list[Recoveries]) -> str:
    variants = list(dict.fromkeys(v for r in records for v in r.variants))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / max(1, len(variants))
    labelled: set[str] = set()
    for i, v in enumerate(variants):
        color, _, label = _style(v) or ("C7", "-", v)
        for j, r in enumerate(records):
            if v not in r.variants or not (r.excess is None or r.excess[1] > 0):
                continue
            est, lo, hi = r.variants[v]
            ax.bar(j + i * width, est, width, color=color, label=None if v in labelled else label)
            labelled.add(v)
            ax.errorbar(j + i * width, est, yerr=[[max(est - lo, 0)], [max(hi - est, 0)]], fmt="none", ecolor="k",
                        lw=0.8)
    for j, r in enumerate(records):
        if r.excess is not None and not r.excess[1] > 0:
            ax.text(j + 0.4 - width / 2, 0.05, f"n/a: excess\n{r.excess[0]:.3g}\n[{r.excess[1]:.2g}, "
                    f"{r.excess[2]:.2g}]\nnot > 0", ha="center", va="bottom", fontsize=6.5, color="0.3",
                    clip_on=True)
    ax.axhline(0.5, color="grey", ls=":", label="0.5 ('most')")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(np.arange(len(records)) + 0.4 - width / 2)
    ax.set_xlim(-0.5, len(records) - 0.2)
    ax.set_xticklabels([_short(r.sae_id) for r in records], fontsize=8)
    ax.set_xlabel("SAE id")
    ax.set_ylabel("share of the excess loss recovered")
    ax.legend(fontsize=6, loc="upper right")
    ax.set_title(f"{subject}: recovery of the beyond-context excess dCE_sae(O) - dCE_sae(I), per repair\n"
                 "(verdict-level intervals; n/a where the excess interval is not wholly above 0)", fontsize=9)
    return _save(fig, out, f"recovery-{_safe(subject)}.png")


@figure(HookNorms)
def norms(out: Path, subject: str, records: list[HookNorms]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(records)), [r.x_norm for r in records], label="mean ||x|| (positions >= 1)")
    wpn = next((r.wpos_norm for r in records if r.wpos_norm is not None), None)
    if wpn is not None:
        ax.axhline(wpn, color="C1", ls="--", label="mean ||W_pos[p]||")
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([_short(r.sae_id) for r in records], fontsize=8)
    ax.set_xlabel("SAE id")
    ax.set_yscale("log")
    ax.set_ylabel("L2 norm (log scale)")
    ax.legend(fontsize=7)
    ax.set_title(f"{subject}: activation norm by hook", fontsize=10)
    return _save(fig, out, f"norms-{_safe(subject)}.png")


@figure(WposRows, per_subject=False)
def wpos_pca(out: Path, subject: str, records: list[WposRows]) -> str:
    fig = plt.figure(figsize=(4.8 * len(records), 4.4))
    for i, r in enumerate(records):
        rows = np.asarray(r.rows, dtype=np.float64)
        proj = principal_projection(rows, 3)
        centred = rows - rows.mean(axis=0, keepdims=True)
        var = np.linalg.svd(centred, compute_uv=False) ** 2
        shares = var[:3] / var.sum()
        ax = fig.add_subplot(1, len(records), i + 1, projection="3d")
        sc = ax.scatter(proj[:, 0], proj[:, 1], proj[:, 2], c=np.arange(1, len(proj) + 1), cmap="viridis", s=8)
        for setter, k in ((ax.set_xlabel, 0), (ax.set_ylabel, 1), (ax.set_zlabel, 2)):
            setter(f"PC{k + 1} ({shares[k]:.1%})", fontsize=7)
        ax.set_title(f"{r.subject}: W_pos rows 1..{r.context_size - 1}\ntop 3 PCs explain {shares.sum():.1%} "
                     "(claim: >= 94.5%)", fontsize=8)
        fig.colorbar(sc, ax=ax, shrink=0.6, pad=0.15, label="position p")
    return _save(fig, out, "wpos_pca.png")


@figure(FeatureShares)
def feature_split_hist(out: Path, subject: str, records: list[FeatureShares]) -> str:
    r = records[-1]
    tok, pos = np.asarray(r.token_share), np.asarray(r.position_share)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.hist(np.maximum(tok, pos), bins=40, range=(0, 1))
    a1.axvline(0.9, color="grey", ls=":")
    a1.set_xlabel("variance share of the better single factor")
    a1.set_ylabel("live features")
    a2.scatter(tok, pos, s=4, alpha=0.5)
    a2.set_xlabel("token share")
    a2.set_ylabel("position share")
    fig.suptitle(f"{subject}: layer-0 features, token vs position", fontsize=10)
    return _save(fig, out, f"feature_split-{_safe(subject)}.png")


@figure(DecodedPositions)
def decoded_positions_plot(out: Path, subject: str, records: list[DecodedPositions]) -> str:
    r = records[-1]
    y = np.asarray(r.mean_decoded)
    x = np.arange(r.first_position, r.first_position + len(y))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, y, lw=1, label="mean decoded position")
    ax.plot(x, x, color="grey", ls="--", lw=0.8, label="true position")
    ax.axhline(r.context_size, color="C3", ls=":", label="training context")
    ax.set_xlabel("true position")
    ax.set_ylabel("position decoded from SAE(x)")
    ax.legend(fontsize=7)
    ax.set_title(f"{subject}: position decoded from the layer-0 reconstruction", fontsize=10)
    return _save(fig, out, f"decoded_positions-{_safe(subject)}.png")


def _row_order(row) -> tuple:
    named = hook_in_id(row.sae_id)
    return (row.subject, hook_order(named) if named else (-1, 0), row.sae_id)


def _axis_limits(est: np.ndarray, threshold: float) -> tuple[float, float] | None:
    """The y range the estimates and the threshold need, padded by 60% of their span (at least 0.5 of the largest
    magnitude when they coincide): interval ends beyond it are clipped and marked. None when nothing is finite."""
    pts = np.concatenate([est[np.isfinite(est)], [threshold]])
    if pts.size == 0 or not np.all(np.isfinite(pts)):
        return None
    a, b = float(pts.min()), float(pts.max())
    pad = max(0.6 * (b - a), 0.5 * max(abs(a), abs(b), 1e-3))
    return a - pad, b + pad


def evidence_by_hook(out: Path, claim: str, evidence: list[Evidence],
                     not_applicable: list | None = None) -> str | None:
    evs = [e for e in evidence if e.claim == claim]
    nas = [n for n in (not_applicable or []) if n.claim == claim]
    if not evs:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    # judged and not-applicable rows together, in forward order of their hooks (as REPORT.md's tables)
    rows = sorted([(f"{e.subject}\n{_short(e.sae_id)}", e) for e in evs + nas], key=lambda r: _row_order(r[1]))
    evs = [e for _, e in rows if isinstance(e, Evidence)]
    x = np.array([j for j, (_, e) in enumerate(rows) if isinstance(e, Evidence)])
    est = np.array([e.estimate for e in evs])
    lo = np.array([e.ci_low for e in evs])
    hi = np.array([e.ci_high for e in evs])
    finite = np.concatenate([est, lo, hi, [evs[0].threshold]])
    finite = finite[np.isfinite(finite)]
    # values spanning orders of magnitude (9.95 next to 0.7) flatten on a linear axis
    log = finite.size and finite.min() > 0 and finite.max() / finite.min() > 5
    colors = [VERDICT_COLOR.get(e.verdict, "0.55") for e in evs]
    limits = None if log else _axis_limits(est, evs[0].threshold)
    if limits is not None:  # one wild interval must not squash the rest: clip it to the axis and say so
        lo, hi = np.clip(lo, *limits), np.clip(hi, *limits)
    ax.errorbar(x, est, yerr=[np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)], fmt="none", ecolor="k", lw=0.8)
    ax.scatter(x, est, c=colors, zorder=3)
    if limits is not None:
        for j, e in zip(x, evs):
            for end, edge, marker, va in ((e.ci_low, limits[0], "v", "bottom"), (e.ci_high, limits[1], "^", "top")):
                if np.isfinite(end) and (end < edge if marker == "v" else end > edge):
                    ax.plot(j, edge, marker=marker, color="k", ms=4)
                    ax.annotate(f"{end:.3g}", (j, edge), xytext=(4, 0), textcoords="offset points", fontsize=7,
                                va=va, color="0.25")
        ax.set_ylim(*limits)
    for j in (j for j, (_, e) in enumerate(rows) if not isinstance(e, Evidence)):
        ax.text(j, 0.5, "n/a", transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="0.4")
    for j, e in zip(x, evs):
        if e.verdict == "undefined":  # nothing to plot: say so where the point would be
            ax.text(j, 0.5, "undefined", transform=ax.get_xaxis_transform(), ha="center", fontsize=7, color="C1")
    ax.axhline(evs[0].threshold, color="grey", ls=":")
    if log:
        ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r[0] for r in rows], fontsize=7)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel("estimate" + (" (log scale)" if log else ""), fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    # the statistic in full under the axes, readable (REPORT.md's table has it too)
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(f"Statistic: {evs[0].statistic}", 120)), fontsize=7, va="bottom",
             color="0.2")
    shown = [v for v in VERDICT_COLOR if v != "undefined" or any(e.verdict == v for e in evs)]
    handles = [plt.Line2D([], [], marker="o", ls="", color=VERDICT_COLOR[v], label=v) for v in shown]
    handles.append(plt.Line2D([], [], ls=":", color="grey", label=f"threshold {evs[0].direction} {evs[0].threshold:g}"))
    ax.legend(handles=handles, fontsize=7, loc="best")
    # the colour is this claim's verdict against this claim's threshold and direction: say which, in the panel
    ax.set_title(f"{claim}: holds where the whole interval is {evs[0].direction} {evs[0].threshold:g}", fontsize=9)
    n_lines = len(textwrap.wrap(f"Statistic: {evs[0].statistic}", 120))
    fig.tight_layout(rect=(0, 0.02 + 0.045 * n_lines, 1, 1))  # room for the statistic under the axes
    return _save(fig, out, f"evidence-{claim}.png", layout=False)


def draw_all(out: Path, evidence: list[Evidence], series: list[Series], not_applicable: list | None = None,
             claims: list[Claim] = ()) -> dict[str, list[str]]:
    """Draw every figure the evidence and series allow; map claim id -> figure files (a figure goes to the
    claims whose `figures` name it)."""
    figs: dict[str, list[str]] = {}

    def add(owners, name):
        if name:
            for c in owners:
                figs.setdefault(c, []).append(name)

    for claim in dict.fromkeys(e.claim for e in evidence):
        add([claim], evidence_by_hook(out, claim, evidence, not_applicable))
    for spec in FIGURES:
        records = [s for s in series if isinstance(s, spec.series)]
        if not records:
            continue
        owners = [c.id for c in claims if spec.name in c.figures]
        if not owners:  # no section would show it: not drawn (write_report passes only the run's claims)
            continue
        if not spec.per_subject:
            add(owners, spec.draw(out, "all", records))
            continue
        for subject in dict.fromkeys(r.subject for r in records):
            add(owners, spec.draw(out, subject, [r for r in records if r.subject == subject]))
    return figs


def drift_figure(out: Path, cmp, families: dict[str, str]) -> str:
    """Differences current - baseline with their intervals, one panel per claim family."""
    by_family: dict[str, list] = {}
    for r in cmp.rows:
        by_family.setdefault(families.get(r.claim, "other"), []).append(r)
    fig, axes = _grid(max(1, len(by_family)))
    for ax, (family, rows) in zip(axes, by_family.items()):
        y = np.arange(len(rows))
        d = np.array([r.difference for r in rows])
        lo = np.array([r.low for r in rows])
        hi = np.array([r.high for r in rows])
        colors = ["C3" if r.drifted else "0.4" for r in rows]
        ax.errorbar(d, y, xerr=[np.clip(d - lo, 0, None), np.clip(hi - d, 0, None)], fmt="none", ecolor="k", lw=0.7)
        ax.scatter(d, y, c=colors, s=12, zorder=3)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r.claim} @ {_short(r.sae_id)}" for r in rows], fontsize=5.5)
        ax.set_xlabel("current - baseline (statistic's units)", fontsize=7)
        ax.set_title(f"{family} (red: drifted)", fontsize=8)
    fig.suptitle("Changes since baseline: difference and interval per row", fontsize=10)
    return _save(fig, out, "changes_since_baseline.png")
