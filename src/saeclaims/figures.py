"""The report's figures (matplotlib, Agg), one function per figure, each returning its file name."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .positional import principal_projection  # noqa: E402
from .stats import Evidence  # noqa: E402

VARIANT_STYLE = {"sae": ("C0", "SAE(x)"), "token_then_pos": ("C1", "SAE(x - W_pos) + W_pos"),
                 "shift_pos": ("C2", "shift_pos"), "random_error": ("C3", "x + random error")}


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


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def dce_by_position(out: Path, subject: str, s: dict) -> str:
    data = s["dce_by_position"]
    fig, axes = _grid(len(data))
    for ax, (hook, curves) in zip(axes, data.items()):
        for v, y in curves.items():
            if y:
                color, label = VARIANT_STYLE[v]
                ax.plot(*_smooth(y[1:]), color=color, label=label, lw=1)
        if "full_context_dce" in s and s["full_context_dce"].get(hook):
            ax.plot(*_smooth(s["full_context_dce"][hook][1:]), color="k", ls="--", lw=1, label="full-context SAE")
        ax.axvline(s["context_sizes"][hook], color="grey", ls=":", label="training context")
        ax.set_title(hook, fontsize=9)
        ax.set_xlabel("position")
        ax.set_ylabel("dCE (nats)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{subject}: added loss by position (8-position moving mean)", fontsize=10)
    return _save(fig, out, f"dce_by_position-{_safe(subject)}.png")


def l0_by_position(out: Path, subject: str, s: dict) -> str:
    data = s["l0_by_position"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for hook, y in data.items():
        ax.plot(*_smooth(y[1:]), lw=1, label=hook)
    ctxs = set(s["context_sizes"].values())
    for c in ctxs:
        ax.axvline(c, color="grey", ls=":")
    ax.set_xlabel("position")
    ax.set_ylabel("L0 of SAE(x)")
    ax.legend(fontsize=7)
    ax.set_title(f"{subject}: active latents by position", fontsize=10)
    return _save(fig, out, f"l0_by_position-{_safe(subject)}.png")


def recovery_bars(out: Path, subject: str, s: dict) -> str:
    data = s["recovery"]
    hooks = list(data)
    variants = list(next(iter(data.values())))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        est = np.array([data[h][v][0] for h in hooks])
        lo = np.array([data[h][v][1] for h in hooks])
        hi = np.array([data[h][v][2] for h in hooks])
        x = np.arange(len(hooks)) + i * width
        ax.bar(x, est, width, label=v)
        ax.errorbar(x, est, yerr=[np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)], fmt="none",
                    ecolor="k", lw=0.8)
    ax.axhline(0.5, color="grey", ls=":", label="0.5 ('most')")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(np.arange(len(hooks)) + 0.4 - width / 2)
    ax.set_xticklabels([h.replace("blocks.", "").replace(".hook_", " ") for h in hooks], fontsize=8)
    ax.set_ylabel("recovery of excess loss")
    # Where a hook adds no loss beyond the context, recovery divides by ~0 and its interval is huge.
    ax.set_ylim(-1.0, 1.5)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(f"{subject}: recovery beyond context, per variant (verdict-level CIs; axis clipped "
                 "to [-1, 1.5])", fontsize=9)
    return _save(fig, out, f"recovery-{_safe(subject)}.png")


def norms(out: Path, subject: str, s: dict, w_pos_norm: float | None) -> str:
    data = s["norms"]
    hooks = list(data)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(hooks)), [data[h]["x_norm"] for h in hooks], label="mean ||x|| (positions >= 1)")
    if w_pos_norm is not None:
        ax.axhline(w_pos_norm, color="C1", ls="--", label="mean ||W_pos[p]||")
    ax.set_xticks(range(len(hooks)))
    ax.set_xticklabels([h.replace("blocks.", "").replace(".hook_", " ") for h in hooks], fontsize=8)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"{subject}: activation norm by hook", fontsize=10)
    return _save(fig, out, f"norms-{_safe(subject)}.png")


def wpos_pca(out: Path, series: dict) -> str | None:
    panels = [(name, s["w_pos"]) for name, s in series.items() if "w_pos" in s]
    if not panels:
        return None
    fig = plt.figure(figsize=(4.5 * len(panels), 4))
    for i, (name, wp) in enumerate(panels):
        proj = principal_projection(np.asarray(wp["rows"]), 3)
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        sc = ax.scatter(proj[:, 0], proj[:, 1], proj[:, 2], c=np.arange(1, len(proj) + 1), cmap="viridis", s=8)
        ax.set_title(f"{name}: W_pos rows 1..{wp['ctx'] - 1}", fontsize=9)
        fig.colorbar(sc, ax=ax, shrink=0.6, label="position")
    return _save(fig, out, "wpos_pca.png")


def feature_split_hist(out: Path, subject: str, s: dict) -> str:
    fs = s["feature_split"]
    tok, pos = np.asarray(fs["token_share"]), np.asarray(fs["position_share"])
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


def decoded_positions_plot(out: Path, subject: str, s: dict) -> str:
    d = s["decoded_positions"]
    y = np.asarray(d["mean_decoded_by_position"])
    x = np.arange(d["first_position"], d["first_position"] + len(y))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, y, lw=1, label="mean decoded position")
    ax.plot(x, x, color="grey", ls="--", lw=0.8, label="true position")
    ax.axhline(d["ctx"], color="C3", ls=":", label="training context")
    ax.set_xlabel("true position")
    ax.legend(fontsize=7)
    ax.set_title(f"{subject}: position decoded from the layer-0 reconstruction", fontsize=10)
    return _save(fig, out, f"decoded_positions-{_safe(subject)}.png")


def evidence_by_hook(out: Path, claim: str, evidence: list[Evidence]) -> str | None:
    evs = [e for e in evidence if e.claim == claim]
    if not evs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    labels = [f"{e.subject}\n{e.hook.replace('blocks.', '').replace('.hook_', ' ')}" for e in evs]
    est = np.array([e.estimate for e in evs])
    lo = np.array([e.ci_low for e in evs])
    hi = np.array([e.ci_high for e in evs])
    colors = ["C2" if e.verdict == "holds" else "C3" if e.verdict == "refuted" else "C7" for e in evs]
    ax.scatter(range(len(evs)), est, c=colors, zorder=3)
    ax.errorbar(range(len(evs)), est, yerr=[np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)],
                fmt="none", ecolor="k", lw=0.8)
    ax.axhline(evs[0].threshold, color="grey", ls=":", label=f"threshold {evs[0].direction} {evs[0].threshold:g}")
    ax.set_xticks(range(len(evs)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.legend(fontsize=7)
    ax.set_title(f"{claim}: estimate and verdict interval (green holds, red refuted)", fontsize=9)
    return _save(fig, out, f"evidence-{claim}.png")


def draw_all(out: Path, evidence: list[Evidence], series: dict) -> dict[str, list[str]]:
    """Draw every figure the series allow; map claim id -> figure files."""
    figs: dict[str, list[str]] = {}

    def add(claims, name):
        if name:
            for c in claims:
                figs.setdefault(c, []).append(name)

    for e_claim in dict.fromkeys(e.claim for e in evidence):
        add([e_claim], evidence_by_hook(out, e_claim, evidence))
    for subject, s in series.items():
        if s.get("dce_by_position"):
            add(["beyond-context-degrades", "adding-wpos-recovers-layer0", "errors-worse-than-random",
                 "token-only-goes-poorly", "full-context-training-fixes", "later-layers-worse-in-context",
                 "beyond-context-worst-early"], dce_by_position(out, subject, s))
        if s.get("l0_by_position"):
            add(["encoder-off-distribution"], l0_by_position(out, subject, s))
        if s.get("recovery"):
            add(["adding-wpos-recovers-layer0", "layer0-error-is-positional", "positional-error-not-most-later"],
                recovery_bars(out, subject, s))
        if s.get("norms"):
            wp = s.get("w_pos")
            wpn = float(np.linalg.norm(np.asarray(wp["rows"]), axis=1).mean()) if wp else None
            add(["layer0-norm-order-of-magnitude-smaller", "wpos-small-share-later"], norms(out, subject, s, wpn))
        if s.get("feature_split"):
            add(["features-disjoint-layer0"], feature_split_hist(out, subject, s))
        if s.get("decoded_positions"):
            add(["sae-thinks-earlier"], decoded_positions_plot(out, subject, s))
    add(["wpos-helix"], wpos_pca(out, series))
    return figs
