"""The precision policy (precision.py) and its guard: bf16 against fp32 on the same tokens.

The guard measures the organism (4 sequences x 192 tokens, every SAE, every claim variant; positions beyond the
SAEs' context 128 included) once in fp32 and once in bf16 (bf16 matmuls run on a CPU too) and asks, per
(variant, SAE id):

- mean dCE over positions 1.. within 2e-3 + 1% of fp32's (absolute; relative to fp32's value),
- mean L0 within 1% of fp32's,

and of a handful of claims' statistics, formed directly with the instruments module as their claim tests form
them (`beyond-context-degrades` and `in-context-performs-well` at every resid_pre SAE, `layer0-error-is-positional`
at resid_pre 0), that the bf16 estimate lies within 0.2 of fp32's interval half-width of fp32's estimate and that
the verdict against the registered threshold is the same. Running every claim test twice (two claims runs) would
take minutes on a CPU; the statistics above are the ones whose inputs every precision-sensitive part feeds (the
forwards, the SAE round trips and the vocabulary pass).

A second CPU guard runs the same per-pair comparison on a random gpt2-family model (bench/gpu_workload.py's
`--quick` shapes: 2 layers, d 128, vocab 4096, random 512-wide SAEs), where W_pos's rows are random, so positions
decoded by cosine have near ties.

What the guard found when it was written (numbers printed by `pytest tests/test_precision.py -s`, worst pair as
a multiple of its tolerance):
- vocabulary matmuls with the target's logit read from bf16-rounded logits: every CE carried that rounding; on the
  organism the dCE means drifted by up to 0.5x the tolerance with a sign bias (mean signed 0.12x). The target's
  logit is now formed in float32 (vocab_losses.py): worst 0.40x, no bias (mean signed -0.01x);
- bf16 SAE weights (fast_sae.py): on the random model `pos_repair_out` at blocks.0 broke the tolerance (1.74x;
  -0.0717 against fp32's -0.0670): its decoded position, an argmax of cosines with W_pos, flips on rounding-sized
  changes of the reconstruction. With the SAE's operands rounded to TF32 instead (emulated): 0.38x. So `bf16`
  (and `auto` on CUDA) keep the SAE round trips float32 (TF32 allowed on CUDA); on the organism bf16 SAEs passed
  (0.66x worst), but the policy is one for every subject;
- bf16 forwards (autocast): the organism's `zero` variant moves most (0.41x), the random model 0.30x.

The GPU twin runs the same comparison (`auto`, which is bf16 on CUDA, against `fp32`) on bench/test_kernels.py's
gpt2-small-shaped random model and SAEs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saeclaims.measurements import Measurements
from saeclaims.precision import PrecisionError, from_autocast, matmul_scope, resolve
from saeclaims.subjects import organism_dir

DCE_ABS, DCE_REL, L0_REL, HALF_WIDTH_SHARE = 2e-3, 0.01, 0.01, 0.2


def test_auto_is_bf16_on_cuda_and_fp32_elsewhere():
    assert resolve("auto", "cpu").resolved == "fp32" and resolve(None, "cpu").label == "auto -> fp32 (cpu)"
    cuda = resolve("auto", torch.device("cuda", 0))
    assert (cuda.resolved, cuda.forward_dtype, cuda.sae_dtype, cuda.vocab_dtype, cuda.tf32) == \
        ("bf16", torch.bfloat16, None, torch.bfloat16, True)  # the SAE stays float32 (what the guard found)
    assert cuda.label == "auto -> bf16 (cuda)"
    fp32 = resolve("fp32", "cuda")
    assert (fp32.forward_dtype, fp32.sae_dtype, fp32.vocab_dtype, fp32.tf32) == (None, None, torch.float32, False)
    assert resolve("tf32", "cuda").tf32 and not resolve("tf32", "cpu").tf32 and resolve("fp32", "cpu").label == \
        "fp32 (cpu)"
    legacy = resolve(from_autocast(torch.float16), "cuda")  # --autocast fp16: the forwards alone, as before
    assert (legacy.forward_dtype, legacy.sae_dtype, legacy.vocab_dtype) == (torch.float16, None, torch.float32)
    with pytest.raises(PrecisionError, match="choose one of auto, fp32, tf32, bf16"):
        resolve("fp8", "cpu")


def test_the_tf32_scope_restores_what_it_found_and_leaves_a_cpu_run_alone(monkeypatch):
    from saeclaims import precision

    flags = precision._tf32_flags()
    before = [getattr(owner, name) for owner, name, _ in flags]
    with matmul_scope(resolve("auto", "cpu")):
        assert [getattr(o, n) for o, n, _ in flags] == before
    with matmul_scope(resolve("auto", "cuda")):  # flags only: no CUDA call is made
        assert [getattr(o, n) for o, n, _ in flags] == [v[True] for _, _, v in flags]
        with matmul_scope(resolve("fp32", "cuda")):
            assert [getattr(o, n) for o, n, _ in flags] == [v[False] for _, _, v in flags]
        assert [getattr(o, n) for o, n, _ in flags] == [v[True] for _, _, v in flags]
    assert [getattr(o, n) for o, n, _ in flags] == before


# ---- the guard


def dce_and_l0_deltas(ref: Measurements, got: Measurements) -> list[dict]:
    """Per (variant, SAE id): the mean dCE and L0 (positions 1..) of both runs and how far apart they are, in
    units of the guard's tolerance (<= 1 passes)."""
    rows = []
    for key in ref.metrics:
        a, b = (float(np.nanmean(m.metrics[key]["dce"][:, 1:])) for m in (ref, got))
        row = {"variant": key[0], "sae_id": key[1], "dce_fp32": a, "dce": b,
               "dce_in_tol": abs(b - a) / (DCE_ABS + DCE_REL * abs(a))}
        l0 = [m.metrics[key]["l0"][:, 1:] for m in (ref, got)]
        if np.isfinite(l0[0]).any():
            la, lb = (float(np.nanmean(x)) for x in l0)
            row.update(l0_fp32=la, l0=lb, l0_in_tol=abs(lb - la) / (L0_REL * abs(la)) if la else float(lb != 0))
        rows.append(row)
    return rows


def claim_statistics(m: Measurements) -> dict[tuple[str, str], tuple]:
    """A handful of claims' intervals and verdicts, formed as their claim tests form them."""
    from saeclaims import instruments
    from saeclaims.stats import Bootstrap, verdict
    from saeclaims.thread import THREAD_CLAIMS

    claims = {c.id: c for c in THREAD_CLAIMS}
    boot = Bootstrap(confidence=0.95, seed=0, n_resamples=2000)
    resid_pre = [h for h in m.sae_ids if h.endswith("hook_resid_pre")]
    wanted = [("beyond-context-degrades", h, lambda h: instruments.beyond_over_inside(m, h, "sae", "dce", boot))
              for h in resid_pre]
    wanted += [("in-context-performs-well", h, lambda h: instruments.ce_score(m, h, boot)) for h in resid_pre]
    wanted += [("layer0-error-is-positional", resid_pre[0], lambda h: instruments.recovery(m, h, "shift_pos", boot))]
    out = {}
    for cid, h, form in wanted:
        iv = form(h)
        c = claims[cid]
        out[(cid, h)] = (iv.estimate, iv.low, iv.high, verdict(iv.low, iv.high, c.threshold, c.direction))
    return out


def guard_failures(ref: Measurements, got: Measurements, with_claims: bool = True) -> tuple[list[str], list[dict]]:
    """What breaks the guard (empty: bf16 passes), and the per-pair rows (printed as the guard's numbers)."""
    rows = dce_and_l0_deltas(ref, got)
    bad = [f"dCE {r['variant']}@{r['sae_id']}: {r['dce']:.5f} vs fp32 {r['dce_fp32']:.5f}" for r in rows
           if not r["dce_in_tol"] <= 1]
    bad += [f"L0 {r['variant']}@{r['sae_id']}: {r['l0']:.3f} vs fp32 {r['l0_fp32']:.3f}" for r in rows
            if "l0" in r and not r["l0_in_tol"] <= 1]
    if with_claims:
        a, b = claim_statistics(ref), claim_statistics(got)
        for key, (est, low, high, v) in a.items():
            est_b, _, _, v_b = b[key]
            half = (high - low) / 2
            if v != v_b or not (math.isfinite(est) and abs(est_b - est) <= HALF_WIDTH_SHARE * half):
                bad.append(f"{key}: bf16 {est_b:.4g} ({v_b}) vs fp32 {est:.4g} [{low:.4g}, {high:.4g}] ({v})")
            rows.append({"claim": key[0], "sae_id": key[1], "estimate_fp32": est, "estimate": est_b,
                         "in_half_widths": abs(est_b - est) / half if half else float("nan"), "verdict": v,
                         "verdict_bf16": v_b})
    return bad, rows


def _print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    for r in rows:
        print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))


@pytest.mark.skipif(not (organism_dir() / "card.json").exists(), reason="organism not built")
def test_bf16_measures_the_organism_as_fp32_does():
    from saeclaims.splice import measure
    from saeclaims.subjects import load_organism
    from saeclaims.variants import CLAIM_VARIANTS

    subject = load_organism(n_seqs=4, seq_len=192)
    ref = measure(subject, variants=CLAIM_VARIANTS, progress=False, precision="fp32")
    got = measure(subject, variants=CLAIM_VARIANTS, progress=False, precision="bf16")
    bad, rows = guard_failures(ref, got)
    _print_rows("bf16 vs fp32 on the organism (4 x 192 tokens)", rows)
    assert not bad, "bf16 breaks the guard:\n" + "\n".join(bad)


def test_bf16_measures_a_random_gpt2_family_model_as_fp32_does():
    """The CPU guard on random weights (near ties in W_pos's cosines): what found that the SAE must stay float32."""
    from bench.gpu_workload import gpt2_subject
    from saeclaims.splice import measure
    from saeclaims.variants import CLAIM_VARIANTS

    subject, _ = gpt2_subject(torch.device("cpu"), 2, 128, quick=True)
    ref = measure(subject, variants=CLAIM_VARIANTS, progress=False, precision="fp32")
    got = measure(subject, variants=CLAIM_VARIANTS, progress=False, precision="bf16")
    bad, rows = guard_failures(ref, got, with_claims=False)
    _print_rows("bf16 vs fp32 on the random gpt2-family model (2 x 128 tokens)", rows)
    assert not bad, "bf16 breaks the guard:\n" + "\n".join(bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU twin needs CUDA")
def test_auto_measures_the_gpt2_shaped_model_as_fp32_does_on_cuda():
    """`auto` (bf16 on CUDA) against `fp32` on bench/test_kernels.py's gpt2-small-shaped random model (12 layers,
    d 768, vocab 50257, 24576-wide random SAEs at the 13 jb hooks; bench/gpu_workload.py builds it), 2 sequences x
    1024 tokens. Its SAEs are random, so of the claims only the per-pair tolerances apply."""
    from bench.gpu_workload import gpt2_subject
    from saeclaims.splice import measure
    from saeclaims.variants import CLAIM_VARIANTS

    subject, _ = gpt2_subject(torch.device("cuda"), 2, 1024, quick=False)
    ref = measure(subject, variants=CLAIM_VARIANTS, progress=False, precision="fp32")
    got = measure(subject, variants=CLAIM_VARIANTS, progress=False, precision="auto")
    bad, rows = guard_failures(ref, got, with_claims=False)
    _print_rows("auto (bf16) vs fp32 on the gpt2-shaped model, CUDA (2 x 1024 tokens)", rows)
    assert not bad, "bf16 breaks the guard on CUDA:\n" + "\n".join(bad)


def test_the_plugin_offers_exactly_the_library_s_precisions_and_labels_the_run():
    from saeclaims.precision import PRECISIONS
    from saeclaims.session import precision_labels
    from saeclaims.settings import AUTOCAST_MEANS, PRECISION_CHOICES

    assert PRECISION_CHOICES == PRECISIONS and set(AUTOCAST_MEANS.values()) <= {*PRECISIONS, "fp16"}
    assert precision_labels("auto", "cpu") == ("auto -> fp32 (cpu)", "none")  # REPORT.md's dtype stays float32
    assert precision_labels("auto", "cuda:0, cuda:1") == ("auto -> bf16 (cuda)", "bf16")
    assert precision_labels("fp16", "cuda:0") == ("fp16 (cuda)", "fp16")
