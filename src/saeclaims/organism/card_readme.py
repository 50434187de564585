"""The organism card's README: its properties beside GPT-2's, and the loss-by-position curve, from card.json.

Written by the build after the measure stage (and by `python -m saeclaims.organism card`), so the text a
reader sees is the card's numbers, never numbers typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

README = "README.md"
LOSS_FIGURE = "loss_by_position.png"
CARD_DOCS = frozenset({README, LOSS_FIGURE})  # not hashed: derived from card.json


def _bin_edges(name: str) -> tuple[int, int]:
    lo, hi = re.fullmatch(r"\[(\d+),(\d+)\)", name).groups()
    return int(lo), int(hi)


def loss_figure(card: dict, path: Path) -> None:
    # lazy: matplotlib only when the card's README is written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = sorted(((_bin_edges(k), v) for k, v in card["eval_loss"]["by_position"].items()), key=lambda b: b[0])
    short = card["spec"]["model"]["n_ctx"] // card["spec"]["context_ratio"]
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    for (lo, hi), v in bins:
        ax.hlines(v, max(lo, 1), hi, color="C0", lw=2.5)
    ax.axvline(short, color="0.4", ls="--", lw=1)
    ax.text(short * 1.05, ax.get_ylim()[1], f"SAE context {short}", va="top", fontsize=9, color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel("position (log scale)", fontsize=10)
    ax.set_ylabel("mean next-token loss (nats)", fontsize=10)
    ax.set_title("Organism: held-out loss by position", fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _row(name: str, value: str, mark: str, met: bool | None) -> str:
    return f"| {name} | {value} | {mark} | {'yes' if met else ('**no**' if met is False else '-')} |"


def readme_text(card: dict) -> str:
    spec, model = card["spec"], card["spec"]["model"]
    short, n_ctx = model["n_ctx"] // spec["context_ratio"], model["n_ctx"]
    saes = card["saes"]
    bins = dict(sorted(card["eval_loss"]["by_position"].items(), key=lambda kv: _bin_edges(kv[0])))
    helix = card["w_pos_top3_share"][f"rows 1..{short - 1}"]
    gain = card.get("long_context_gain")
    lines = [
        "# The organism's card", "",
        "Generated from `card.json` by the build (`saeclaims.organism.card_readme`); do not edit by hand.", "",
        f"A GPT-2-style model ({model['n_layers']} layers, d_model {model['d_model']}, {model['n_heads']} heads, "
        f"d_mlp {model['d_mlp']}, vocabulary {model['d_vocab']}, n_ctx {n_ctx}) trained on "
        f"{card.get('model_training_tokens', 0) / 1e6:.1f}M tokens of public-domain English, with residual-stream "
        f"SAEs (sae_lens's trainer, width {spec['sae']['d_sae']}) at context {short} (as gpt2-small-res-jb: "
        f"128 of 1024) and a control family at context {n_ctx}. Built by `python -m saeclaims.organism build "
        f"--seed {card['seed']}`.", "",
        "## Properties the claims depend on, beside gpt2-small + gpt2-small-res-jb", "",
        "| property | organism | GPT-2's mark | met |", "|---|---|---|---|",
        _row(f"W_pos: top-3 PC share of rows 1..{short - 1}", f"{helix:.3f}", ">= 0.9 (GPT-2: 0.957)", helix >= 0.9),
        _row("position / token norm (W_pos rows 1.. vs W_E)", f"{card['pos_to_token_norm']:.2f}",
             "GPT-2-like (set at init, then trained)", None),
    ]
    if gain is not None:
        lines.append(_row(f"long-context gain: loss on [{short // 2},{short}) minus on [{n_ctx // 2},{n_ctx})",
                          f"{gain:.4f} nats", ">= 0.05", gain >= 0.05))
    lines += ["", "Held-out loss by position (nats): " + ", ".join(f"{k} {v:.3f}" for k, v in bins.items())
              + f"; overall {card['eval_loss']['overall']:.3f}.", "", f"![loss by position]({LOSS_FIGURE})", "",
              f"## SAEs, measured on the first {spec['quality_seqs']} held-out sequences", "",
              f"In context = positions [1, ctx) of each SAE's own context; the CE-loss score of both families is "
              f"measured on [1, {short}), the short family's context, so the control is compared like with like.",
              "", "| SAE | explained variance in context (>= 0.9) | L0 (10-100) | CE-loss score on [1, "
              f"{short}) (>= 0.95) | control's score gap (<= 0.01) |", "|---|---|---|---|---|"]
    gaps = card.get("control_ce_score_gap", {})
    for key, s in saes.items():
        ev, l0, ce = s["in_context"]["explained_variance"], s["in_context"]["l0"], s["ce_loss_score_short_context"]
        hook = s["hook_name"]
        gap = gaps.get(hook) if key.startswith(f"ctx{short}/") else None
        gap_cell = "-" if gap is None else f"{gap:+.4f}{'' if abs(gap) <= 0.01 else ' **no**'}"
        lines.append(f"| {key} | {ev:.3f}{'' if ev >= 0.9 else ' **no**'} | {l0:.1f}"
                     f"{'' if 10 <= l0 <= 100 else ' **no**'} | {ce:.4f}{'' if ce >= 0.95 else ' **no**'} "
                     f"| {gap_cell} |")
    stages = card.get("stages", {})
    sae_s = sum(stages.get("sae_s", {}).values())
    lines += ["", f"Build time on the build machine: model {stages.get('model_s', 0) / 60:.0f} min, SAEs "
              f"{sae_s / 60:.0f} min (per SAE in card.json).", ""]
    return "\n".join(lines)


def write_card_readme(out: Path, card: dict) -> None:
    """README.md and the loss figure beside card.json, atomically each."""
    loss_figure(card, out / LOSS_FIGURE)
    tmp = out / (README + ".tmp")
    tmp.write_text(readme_text(card))
    tmp.replace(out / README)
