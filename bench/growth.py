"""How the splice workload's cost grows: tokens, sequence length, hooks and SAE width, on the organism
and on a gpt2-shaped random model, at sizes a CPU sweeps in a few minutes.

    python bench/growth.py [--out build] [--repeats 2] [--quick]

`--quick` is a smoke run (a minute on one CPU thread): fewer and smaller points, one repeat, and a
scaled-down model of gpt2's shape family (2 layers, d 128, vocab 4096) in place of gpt2-small's sizes.

Every point is the wall time of the splice kernels as `splice.measure` runs them (`splice_batch` over
batches of 16 sequences; the in-context statistics pass, which reads only the first ctx tokens of each
sequence, is computed once beforehand and left out; one untimed warm-up batch), the minimum of
`--repeats` runs, with the default variants (+ the full-context control) on the organism and `zero`,
`sae` at blocks.0.hook_resid_pre on the gpt2-shaped model (whose cost is mostly its 50257-wide
unembedding). Fits:

- tokens: time = a + b * tokens at fixed T (the workload is linear in tokens; b is the cost per token);
- T: time per token = c + e * T at fixed tokens, the fused kernels (SDPA attention, one-kernel GELU and
  norms) and TransformerLens's own forward ("eager": `fused_attention=False`) interleaved; the T-dependent
  share at the largest T is e * T / (c + e * T), next to
  flops.attention_share, the FLOP share of attention over the causal triangle (fused) or the square;
- hooks: time = a + b * (suffix blocks run per variant), the hooks taken deepest first;
- d_sae: time = a + b * d_sae with random SAEs of each width in place of the organism's.

Writes OUT/growth.png (one panel per sweep) and OUT/growth.md (the tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.conftest's builders


def _sae(d_in: int, d_sae: int, hook: str, ctx: int, seed: int):
    """A random sae_lens SAE: the test suite's builder (tests/conftest.py), so both measure the same kind."""
    from tests.conftest import tiny_sae

    return tiny_sae(d_in, d_sae, hook, ctx, seed)


GPT2 = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257)
GPT2_QUICK = dict(n_layers=2, d_model=128, n_heads=2, d_head=64, d_mlp=512, d_vocab=4096)


def gpt2_shaped(n_seqs: int, seq_len: int, d_sae: int = 3072, shape: dict | None = None):
    """gpt2-small's shapes with random weights (default: 12 layers, d 768, 12 heads, vocab 50257); a random
    SAE at blocks.0.hook_resid_pre (context 64), so every variant runs every block."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saeclaims.subjects import Subject

    shape = shape or GPT2
    cfg = HookedTransformerConfig(**shape, n_ctx=1024, act_fn="gelu_new", normalization_type="LNPre", seed=0)
    model = HookedTransformer(cfg).eval()
    hooks = ["blocks.0.hook_resid_pre"]
    saes = {h: _sae(shape["d_model"], d_sae, h, 64, i) for i, h in enumerate(hooks)}
    vocab = shape["d_vocab"]
    tokens = torch.randint(1, vocab, (n_seqs, seq_len), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = vocab - 1
    return Subject("gpt2-shaped", model, saes, tokens, {h: 64 for h in hooks})


def sliced(subject, n_seqs: int, seq_len: int, **changes):
    return dataclasses.replace(subject, tokens=subject.tokens[:n_seqs, :seq_len].contiguous(), **changes)


def timed(subject, variants, repeats: int, hooks=None, fused_attention: bool = True, batch_size: int = 16) -> float:
    from saeclaims.splice import SpliceOptions, in_context_stats, needs_position_means, splice_batch

    hooks = list(hooks or subject.sae_ids)
    stats = in_context_stats(subject, hooks, position_means=needs_position_means(subject, hooks, variants))
    # warm-up, untimed: first-call costs (allocator pools, kernel selection) stay out of every point
    options = SpliceOptions(fused_attention=fused_attention)
    splice_batch(subject, subject.tokens[:1], hooks, variants, stats, options=options)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, subject.tokens.shape[0], batch_size):
            splice_batch(subject, subject.tokens[i : i + batch_size], hooks, variants, stats, first_row=i,
                         options=options)
        best = min(best, time.perf_counter() - t0)
    return best


def fit(x, y) -> tuple[float, float, float]:
    """Least squares y = a + b x; returns (a, b, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), 1 - float((resid**2).sum()) / ss if ss > 0 else 1.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer, smaller points (a smoke run)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from saeclaims.flops import Shape, attention_share
    from saeclaims.subjects import load_organism, start_layer
    from saeclaims.variants import CLAIM_VARIANTS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    r = 1 if q else args.repeats
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; repeats {r}"
          f"{'; quick (smoke run)' if q else ''}")
    t_all = time.perf_counter()

    org = load_organism(n_seqs=4 if q else 32, seq_len=256 if q else 512)
    org_variants = CLAIM_VARIANTS + ("full_context_sae",)
    gpt_variants = ("zero", "sae")
    gpt = gpt2_shaped(4 if q else 8, 256 if q else 512, d_sae=512 if q else 3072, shape=GPT2_QUICK if q else GPT2)
    tables: dict[str, list[dict]] = {}
    fits: dict[str, str] = {}

    # tokens, at fixed T
    t_fixed = 128 if q else 256
    rows = []
    for name, subj, variants, counts in (
        ("organism", org, org_variants, [1, 2] if q else [2, 4, 8, 16]),
        ("gpt2-shaped", gpt, gpt_variants, [1, 2] if q else [1, 2, 4, 8]),
    ):
        for n in counts:
            s = sliced(subj, n, t_fixed)
            rows.append({"model": name, "n_seqs": n, "T": t_fixed, "tokens": n * t_fixed,
                         "seconds": timed(s, variants, r)})
        pts = [x for x in rows if x["model"] == name]
        a, b, r2 = fit([x["tokens"] for x in pts], [x["seconds"] for x in pts])
        fits[f"tokens {name}"] = (f"time = {a:.3f} s + {b * 1e3:.3f} ms/token x tokens (R^2 {r2:.4f}; "
                                  f"T {t_fixed})")
    tables["tokens"] = rows

    # T, at fixed tokens; fused and eager interleaved
    rows = []
    for name, subj, variants, lens, n_tok in (
        ("organism", org, org_variants, [64, 128, 256] if q else [64, 128, 256, 512], 512 if q else 2048),
        ("gpt2-shaped", gpt, gpt_variants, [64, 128, 256] if q else [128, 256, 512], 256 if q else 512),
    ):
        for t in lens:
            s = sliced(subj, max(1, n_tok // t), t)
            sec = {True: float("inf"), False: float("inf")}
            for _ in range(r):
                for fused in (True, False):
                    sec[fused] = min(sec[fused], timed(s, variants, 1, fused_attention=fused))
            tok = s.tokens.numel()
            rows.append({"model": name, "T": t, "n_seqs": s.tokens.shape[0], "tokens": tok,
                         "fused s": sec[True], "eager s": sec[False],
                         "fused us/token": 1e6 * sec[True] / tok, "eager us/token": 1e6 * sec[False] / tok})
        pts = [x for x in rows if x["model"] == name]
        shape = dataclasses.replace(Shape.of(subj), seq_len=max(lens))
        for way, attn in (("fused", "causal"), ("eager", "square")):
            c, e, r2 = fit([x["T"] for x in pts], [x[f"{way} us/token"] for x in pts])
            tmax = max(lens)
            share = e * tmax / (c + e * tmax)
            fits[f"T {name} {way}"] = (f"us/token = {c:.1f} + {e:.4f} x T (R^2 {r2:.3f}); T-dependent share at "
                                       f"T={tmax}: {share:.0%} of the time (attention's FLOP share "
                                       f"{attention_share(shape, attn):.0%})")
    tables["seq_len"] = rows

    # hooks, deepest first, at fixed tokens
    rows = []
    s_h = sliced(org, 4, 256) if not q else sliced(org, 1, 128)
    by_depth = sorted(org.sae_ids, key=lambda h: -start_layer(org.hook_of(h)))  # SAE ids, deepest hook first
    for k in range(1, len(by_depth) + 1):
        hooks = by_depth[:k]
        blocks = sum(org.model.cfg.n_layers - start_layer(org.hook_of(h)) for h in hooks)
        rows.append({"hooks": k, "suffix blocks per variant": blocks, "last hook": hooks[-1],
                     "seconds": timed(s_h, org_variants, r, hooks=hooks)})
    a, b, r2 = fit([x["suffix blocks per variant"] for x in rows], [x["seconds"] for x in rows])
    fits["hooks organism"] = (f"time = {a:.3f} s + {b:.3f} s x suffix blocks (R^2 {r2:.3f}); "
                              f"{s_h.tokens.numel()} tokens")
    tables["hooks"] = rows

    # d_sae: random SAEs of each width in place of the organism's (no control)
    rows = []
    base = sliced(org, 4 if not q else 1, 256 if not q else 128)
    d = org.model.cfg.d_model
    for width in ([512, 2048] if q else [1024, 2048, 4096, 8192]):
        saes = {h: _sae(d, width, org.hook_of(h), 64, i) for i, h in enumerate(org.sae_ids)}
        s = dataclasses.replace(base, saes=saes, full_context_saes={},
                                context_sizes={h: 64 for h in org.sae_ids})
        rows.append({"d_sae": width, "seconds": timed(s, CLAIM_VARIANTS, r)})
    a, b, r2 = fit([x["d_sae"] for x in rows], [x["seconds"] for x in rows])
    fits["d_sae organism"] = (f"time = {a:.3f} s + {b * 1e3:.4f} ms x d_sae (R^2 {r2:.3f}); "
                              f"{base.tokens.numel()} tokens")
    tables["d_sae"] = rows

    md = [f"# Cost growth of the splice workload (CPU, {torch.get_num_threads()} threads, torch {torch.__version__})",
          ""]
    for key, rws in tables.items():
        cols = list(rws[0])
        md += [f"## {key}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for x in rws:
            md.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in x.values()) + " |")
        md.append("")
    md += ["## fits", ""] + [f"- {k}: {v}" for k, v in fits.items()] + [""]
    (out / "growth.md").write_text("\n".join(md))
    print("\n".join(md))

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0, 0]
    for name, marker in (("organism", "o"), ("gpt2-shaped", "s")):
        pts = [x for x in tables["tokens"] if x["model"] == name]
        xs, ys = [x["tokens"] for x in pts], [x["seconds"] for x in pts]
        a, b, _ = fit(xs, ys)
        ax.plot(xs, ys, marker, label=name)
        ax.plot(xs, [a + b * v for v in xs], "-", color=ax.lines[-1].get_color(), lw=0.8)
    ax.set_xlabel(f"tokens (T = {t_fixed})")
    ax.set_ylabel("seconds")
    ax.set_title("linear in tokens", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for name, marker in (("organism", "o"), ("gpt2-shaped", "s")):
        pts = [x for x in tables["seq_len"] if x["model"] == name]
        for way, ls in (("fused", "-"), ("eager", "--")):
            ax.plot([x["T"] for x in pts], [x[f"{way} us/token"] for x in pts], marker + ls, label=f"{name} {way}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (fixed tokens)")
    ax.set_ylabel("microseconds per token")
    ax.set_title("per-token cost vs T: the attention (T^2) share", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1, 0]
    xs = [x["suffix blocks per variant"] for x in tables["hooks"]]
    ax.plot(xs, [x["seconds"] for x in tables["hooks"]], "o-")
    for x in tables["hooks"]:
        ax.annotate(str(x["hooks"]), (x["suffix blocks per variant"], x["seconds"]), fontsize=7)
    ax.set_xlabel("suffix blocks per variant (hooks added deepest first; labels: hooks)")
    ax.set_ylabel("seconds")
    ax.set_title(f"organism, {s_h.tokens.numel()} tokens: hooks", fontsize=10)
    ax = axes[1, 1]
    ax.plot([x["d_sae"] for x in tables["d_sae"]], [x["seconds"] for x in tables["d_sae"]], "o-")
    ax.set_xlabel("d_sae (random SAEs at every organism hook)")
    ax.set_ylabel("seconds")
    ax.set_title(f"organism, {base.tokens.numel()} tokens: SAE width", fontsize=10)
    fig.suptitle("splice workload cost growth (CPU)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "growth.png", dpi=120)
    print(f"wrote {out / 'growth.png'} and {out / 'growth.md'} in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
