"""The splice workload and the main command on a GPU: absolute times, peak memory and FLOP/s (issue 13, item 5).

Why: the CPU numbers in README's benchmark section say where the time goes on two cores; this script
records what one GPU does with the same code, against the target of 256 sequences x 1024 tokens of a
gpt2-small-shaped subject (13 hooks x all claim variants) in under 30 s on one H100. It is one prepared
run, sized to fit a short GPU lease: everything it measures is written after each step, so a run cut
short still leaves its numbers.

    python bench/gpu_workload.py --out build/gpu                 # on a CUDA machine
    python bench/gpu_workload.py --out build/gpu-smoke --quick   # a CPU smoke run (seconds)

Steps, in this order:

1. the main command as README states it (`pytest claims -m gpu`, the organism, default options), in a
   subprocess, its wall time and pass/fail counts; its REPORT.md (with the run's peak memory) is copied to
   OUT/main_REPORT.md and its output to OUT/main_pytest.log (`--skip-main` leaves it out);
2. a torch.mm probe of the card: 8192^3 products in bf16, float32 (TF32 off) and TF32;
3. the gpt2-shaped subject: gpt2-small's shapes (12 layers, d 768, 12 heads, d_mlp 3072, vocab 50257,
   n_ctx 1024, LNPre, gelu_new) with random weights, and random sae_lens StandardSAEs of width 24576
   (gpt2-small-res-jb's) at the jb release's 13 hooks (blocks.0-11.hook_resid_pre and
   blocks.11.hook_resid_post), context 128 (the release's), `--n-seqs` random sequences of `--seq-len`
   tokens (BOS first), as bench/test_kernels.py's gpt2_shaped fixture builds it;
4. `splice.measure` over it (all hooks x CLAIM_VARIANTS, as the main command runs it: the in-context
   statistics pass, every batch, the per-token results copied to host arrays), once per precision mode
   (`--sae-precision`, precision.py): `auto` (the library's default: on CUDA bf16 forwards, SAE round trips
   and vocabulary matmuls, TF32 for the float32 rest; on a CPU fp32), `fp32` (the audit mode, TF32 off),
   optionally `tf32`, `bf16`, and any of them with `+chunkMiB` log-softmax chunks in place of the library's
   default (1 GiB on CUDA).
   Each mode: an untimed warm-up on 2
   sequences, a timed probe batch to size the run to the time left (`--deadline-s`: a mode that would not
   fit runs fewer sequences and reports the time scaled to all of them), then the timed run, with
   torch.cuda.max_memory_allocated reset before it. Wall-clock regions (CUDA-synchronised;
   profile_main.Regions) split it into the statistics pass, clean passes, variants (SAE encode/decode),
   suffix runs and unembedding + log-sum-exp;
5. the guard's GPU twin (tests/test_precision.py): `fp32` against `auto` on the first `--guard-seqs` sequences,
   per (variant, hook) mean dCE within 2e-3 + 1% and L0 within 1% of fp32's (on a CPU, where `auto` is fp32,
   `bf16` stands in for it, so the smoke run compares something); the worst pairs are written.

FLOPs are flops.workload_flops's count of what the batched kernels execute (causal attention, one shared
SAE pass, one row per batch for `zero` at residual hooks), split into the forwards, the SAE passes
(`splicing.splice_variants`) and the unembedding (`chunked_losses`); under `bf16` (and `auto` on CUDA) all three
run with bf16 operands, under `tf32` in TF32, under `fp32` in float32. "bound" is the time those FLOPs would
take at the probe's rate for the mode's precision; "of bound" = bound / wall. "of card peak" divides the achieved
rate by the datasheet's dense bf16 rate.

Needs the project's runtime dependencies (sae_lens, transformer_lens, jsonschema for the main command's report);
the package need not be installed: the main command then loads the pytest plugin by module name.
Writes OUT/gpu.json and OUT/gpu.md (and prints the table); results of runs: bench/results/gpu.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # tests.conftest's SAE builder, bench.profile_main's regions

GPT2 = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257)
GPT2_QUICK = dict(n_layers=2, d_model=128, n_heads=2, d_head=64, d_mlp=512, d_vocab=4096)
# Datasheet dense rates (TFLOP/s; NVIDIA's H100 SXM / H200 figures, without sparsity): leads, not readings.
DATASHEET = {"H100": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},
             "H200": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9}}
MODES = ("auto", "auto+fused", "fp32")
PRECISION_NAMES = ("auto", "fp32", "tf32", "bf16")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def datasheet(name: str) -> dict[str, float] | None:
    for key, rates in DATASHEET.items():
        if key in name:
            return rates
    return None


def mm_probe(device: torch.device, n: int, reps: int = 10) -> dict[str, float]:
    """TFLOP/s of an n^3 torch.mm in bf16, float32 with TF32 off, and TF32 (random data; mean of `reps`
    products after 3 warm-ups)."""
    out = {}
    kinds = (("bf16", torch.bfloat16, False), ("fp32", torch.float32, False), ("tf32", torch.float32, True))
    from saeclaims.precision import matmul_scope, resolve

    for name, dtype, tf32 in kinds:
        if device.type != "cuda" and name != "fp32":
            continue
        with matmul_scope(resolve("tf32" if tf32 else "fp32", device)):  # TF32 on or off, restored after
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            for _ in range(3):
                a @ b
            sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync()
            out[name] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
            del a, b
    if device.type != "cuda":  # no bf16 tensor cores to speak of: one rate for every part
        out["bf16"] = out["tf32"] = out["fp32"]
    return out


def gpt2_subject(device: torch.device, n_seqs: int, seq_len: int, quick: bool):
    """gpt2-small's shapes, random weights; random 24576-wide SAEs at the jb release's 13 hooks."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saeclaims.subjects import Subject
    from tests.conftest import tiny_sae

    shape = GPT2_QUICK if quick else GPT2
    d_sae, ctx = (512, 32) if quick else (24576, 128)
    n = shape["n_layers"]
    cfg = HookedTransformerConfig(**shape, n_ctx=max(1024, seq_len), act_fn="gelu_new", normalization_type="LNPre",
                                  seed=0, device=str(device))
    model = HookedTransformer(cfg).to(device).eval()
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    saes = {h: tiny_sae(shape["d_model"], d_sae, h, ctx, i).to(device) for i, h in enumerate(hooks)}
    vocab = shape["d_vocab"]
    tokens = torch.randint(1, vocab, (n_seqs, seq_len), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = vocab - 1
    return Subject("gpt2-shaped", model, saes, tokens.to(device), {h: ctx for h in hooks}), d_sae


def flop_parts(subject, variants, batch_seqs: int = 1) -> dict[str, float]:
    """FLOPs per token of the batched kernels by the precision they run in: the forwards (clean pass and
    suffix blocks: autocast's), the SAE passes and the unembedding (float32 outside autocast); their sum is
    flops.workload_flops's batched count (causal attention, shared SAE pass, one row per batch of
    `batch_seqs` sequences for a variant alike in every sequence)."""
    from saeclaims.flops import (
        Shape,
        layer_flops,
        sae_flops,
        sae_passes,
        unembed_flops,
        workload_flops,
    )
    from saeclaims.splicing import variants_at
    from saeclaims.subjects import start_layer
    from saeclaims.subjects.core import replaced_inside_block
    from saeclaims.variants import variant

    s = Shape.of(subject)
    layer = layer_flops(s, "causal")
    fwd = s.n_layers * layer
    sae, unemb = 0.0, unembed_flops(s)
    for key in subject.sae_ids:
        hook = subject.hook_of(key)
        names = variants_at(subject, key, variants)
        for v in names:
            rows = 1 / batch_seqs if variant(v).alike_at_residual and not replaced_inside_block(hook) else 1
            fwd += rows * (s.n_layers - start_layer(hook)) * layer
            unemb += rows * unembed_flops(s)
        sae += sae_passes(names, shared_sae=True) * sae_flops(s)
    total = workload_flops(s, [subject.hook_of(k) for k in subject.sae_ids], variants, 1, attention="causal",
                           shared_sae=True, batch_seqs=batch_seqs)["batched"]
    assert abs(total - (fwd + sae + unemb)) <= 1e-6 * total, (total, fwd + sae + unemb)
    return {"forwards": fwd, "sae": sae, "unembedding": unemb}


def parse_mode(mode: str) -> dict:
    parts = mode.split("+")
    if parts[0] not in PRECISION_NAMES or any(not re.fullmatch(r"chunk\d+|fused", p) for p in parts[1:]):
        raise SystemExit(f"mode {mode!r}: one of {', '.join(PRECISION_NAMES)}, then optionally +chunkMiB, +fused")
    chunk = next((int(p[5:]) for p in parts[1:] if p.startswith("chunk")), None)
    # +fused: CE by fused_lse's Triton kernel (no materialised logits; KL not computed)
    return {"precision": parts[0], "chunk_bytes": chunk * 2**20 if chunk else None, "fused": "fused" in parts[1:]}


def rate_of(probe: dict, precision) -> float:
    """The probe's TFLOP/s for the precision the workload's matmuls run in (precision.Precision)."""
    return probe["bf16" if precision.resolved == "bf16" else "tf32" if precision.tf32 else "fp32"]


def run_mode(subject, mode: str, args, probe: dict, parts: dict, deadline: float, modes_left: int) -> dict:
    from bench.profile_main import Regions
    from saeclaims import budget, splice, splicing
    from saeclaims.precision import resolve
    from saeclaims.variants import CLAIM_VARIANTS

    m = parse_mode(mode)
    cuda = subject.tokens.device.type == "cuda"
    precision = resolve(m["precision"], subject.tokens.device)
    kw = dict(variants=CLAIM_VARIANTS, batch_size=args.batch_size, precision=m["precision"], progress=False,
              budget_bytes=int(args.memory_budget_mib * 2**20) if args.memory_budget_mib else None)
    if m["chunk_bytes"]:
        kw["chunk_bytes"] = m["chunk_bytes"]
    if m["fused"]:
        kw["fused_vocab"] = True
    n_all = subject.tokens.shape[0]
    splice.measure(dataclasses.replace(subject, tokens=subject.tokens[:2]), **kw)  # warm-up, untimed
    sync()
    t0 = time.perf_counter()
    b = min(args.batch_size, n_all)
    splice.measure(dataclasses.replace(subject, tokens=subject.tokens[:b]), **kw)  # sizes the run
    sync()
    per_seq = (time.perf_counter() - t0) / b
    allowed = deadline - time.perf_counter() - args.reserve_s * (modes_left - 1)
    n = n_all if per_seq * n_all <= allowed else max(b, int(allowed / per_seq) // b * b)
    subj = subject if n == n_all else dataclasses.replace(subject, tokens=subject.tokens[:n])
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    prof = Regions(cuda) if args.regions else None
    if prof is not None:
        prof.wrap(splice, "in_context_stats", "in-context statistics pass")
        prof.wrap(splice, "_clean_cache", "clean pass")
        prof.wrap(splicing, "splice_variants", "variants (SAE encode/decode)")
        prof.wrap(splicing, "suffix_run", "suffix runs")
        prof.wrap(splice, "chunked_losses", "unembedding + log-sum-exp")
    sync()
    t0 = time.perf_counter()
    try:
        splice.measure(subj, **kw)
        sync()
        wall = time.perf_counter() - t0
    finally:
        if prof is not None:
            prof.restore()
    tokens = n * subject.seq_len
    flops = sum(parts.values()) * tokens
    bound = sum(parts.values()) / rate_of(probe, precision) * tokens / 1e12
    row = {"mode": mode, "precision": precision.label, "n_seqs": n, "seq_len": subject.seq_len, "tokens": tokens,
           "wall_s": wall,
           f"wall_s_scaled_to_{n_all}": wall * n_all / n, "tokens_per_s": tokens / wall,
           "probe_batch_s_per_seq": per_seq, "tflop": flops / 1e12, "tflop_per_s": flops / wall / 1e12,
           "bound_s": bound, "of_bound": bound / wall, "batch_size": args.batch_size,
           "chunk_mib": budget.log_softmax_chunk(subject.tokens.device, m["chunk_bytes"],
                                                 kw["budget_bytes"]) / 2**20,
           "memory_budget_mib": args.memory_budget_mib}
    if cuda:
        row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    if prof is not None:
        row["regions_s"] = {" > ".join(p): t for p, t in sorted(prof.incl.items(), key=lambda kv: prof.first[kv[0]])}
    return row


def run_guard(subject, n_seqs: int) -> dict:
    """tests/test_precision.py's GPU twin on the first n_seqs sequences: fp32 against auto (bf16 on a CPU, where
    auto is fp32)."""
    from saeclaims.splice import measure
    from saeclaims.variants import CLAIM_VARIANTS
    from tests.test_precision import guard_failures

    other = "auto" if subject.tokens.device.type == "cuda" else "bf16"
    subj = dataclasses.replace(subject, tokens=subject.tokens[:n_seqs])
    t0 = time.perf_counter()
    ref = measure(subj, variants=CLAIM_VARIANTS, progress=False, precision="fp32")
    got = measure(subj, variants=CLAIM_VARIANTS, progress=False, precision=other)
    wall = time.perf_counter() - t0
    failures, rows = guard_failures(ref, got, with_claims=False)
    return {"compared": f"{other} vs fp32", "n_seqs": n_seqs, "seq_len": subject.seq_len, "wall_s": wall,
            "failures": failures, "worst_dce_in_tol": max(r["dce_in_tol"] for r in rows),
            "worst_l0_in_tol": max((r["l0_in_tol"] for r in rows if "l0_in_tol" in r), default=float("nan")),
            "rows": rows}


def run_main_command(out: Path, args) -> dict:
    """README's main command in a subprocess; the report goes to a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pytest", "claims", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               "--sae-progress", "off", "--sae-report", str(Path(tmp) / "REPORT.md"), *args.main_args]
        if not any(ep.name == "saeclaims" for ep in importlib.metadata.entry_points(group="pytest11")):
            cmd[3:3] = ["-p", "saeclaims.pytest_plugin"]  # not installed: load the plugin by module name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
        print("main command:", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.main_timeout_s)
            code, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code = "timeout"
            text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        wall = time.perf_counter() - t0
        (out / "main_pytest.log").write_text(text)
        report = Path(tmp) / "REPORT.md"
        peak = None
        if report.exists():
            shutil.copy(report, out / "main_REPORT.md")
            hit = re.search(r"\| peak memory \| (.*?) \|", report.read_text())
            peak = hit.group(1) if hit else None
    summary = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return {"command": " ".join(cmd[1:]), "exit_code": code, "wall_s": wall,
            "summary": summary[-1] if summary else None, "peak_memory": peak, "tail": text[-3000:]}


def markdown(res: dict) -> str:
    d = res["device"]
    lines = [f"# GPU workload ({d['name']}, torch {d['torch']})", ""]
    if "main" in res:
        mc = res["main"]
        lines += ["## Main command (organism, default options)", "",
                  f"`{mc['command']}`: exit {mc['exit_code']}, **{mc['wall_s']:.1f} s** wall, {mc['summary']}; "
                  f"peak memory {mc['peak_memory']}", ""]
    if "probe" in res:
        p, sheet = res["probe"], d.get("datasheet") or {}
        lines += ["## torch.mm probe (8192^3, TFLOP/s)", "", "| precision | probe | datasheet | probe / datasheet |",
                  "|---|---|---|---|"]
        for k, v in p.items():
            ds = sheet.get(k)
            lines.append(f"| {k} | {v:.1f} | {ds if ds else '-'} | {f'{v / ds:.0%}' if ds else '-'} |")
        lines.append("")
    rows = res.get("modes", [])
    if rows:
        s = res["subject"]
        n_all = s["n_seqs"]
        lines += [f"## gpt2-shaped splice workload ({s['hooks']} hooks x {s['variants']} variants, d_sae {s['d_sae']}, "
                  f"{n_all} x {s['seq_len']} tokens, batch {rows[0]['batch_size']})", "",
                  f"| mode | seqs run | wall s | s for {n_all} | tokens/s | peak alloc GiB | TFLOP | TFLOP/s | "
                  "bound s | of bound | of card bf16 peak |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        peak = (d.get("datasheet") or {}).get("bf16")
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['mode']} | failed: {r['error']} |")
                continue
            lines.append(
                f"| {r['mode']} ({r.get('precision', '?')}) | {r['n_seqs']} | {r['wall_s']:.1f} | "
                f"{r[f'wall_s_scaled_to_{n_all}']:.1f} | "
                f"{r['tokens_per_s']:.0f} | {r.get('peak_allocated_gib', float('nan')):.1f} | {r['tflop']:.1f} | "
                f"{r['tflop_per_s']:.1f} | {r['bound_s']:.1f} | {r['of_bound']:.0%} | "
                f"{format(r['tflop_per_s'] / peak, '.1%') if peak else '-'} |")
        names = list(dict.fromkeys(k for r in rows for k in r.get("regions_s", {})))
        if names:
            lines += ["", "Regions (s, CUDA-synchronised; nested: `a > b` is inside a):", "",
                      "| region | " + " | ".join(r["mode"] for r in rows if "regions_s" in r) + " |",
                      "|---|" + "---|" * sum("regions_s" in r for r in rows)]
            for k in names:
                lines.append(f"| {k} | " + " | ".join(f"{r['regions_s'].get(k, 0):.2f}" for r in rows
                                                        if "regions_s" in r) + " |")
        fp = s["flops_per_token"]
        lines += ["", f"FLOPs per token (flops.workload_flops, batched, causal, shared SAE pass): forwards "
                  f"{fp['forwards'] / 1e9:.2f} G, SAE {fp['sae'] / 1e9:.2f} G and unembedding "
                  f"{fp['unembedding'] / 1e9:.2f} G, each in the mode's precision."]
    if "guard" in res:
        g = res["guard"]
        lines += ["", f"## Guard twin ({g['compared']}, {g['n_seqs']} x {g['seq_len']} tokens)", "",
                  f"**{'passes' if not g['failures'] else 'FAILS'}**: worst mean dCE at {g['worst_dce_in_tol']:.2f} "
                  f"and worst mean L0 at {g['worst_l0_in_tol']:.2f} of the tolerance (<= 1 passes); "
                  f"{g['wall_s']:.1f} s.", ""]
        lines += [f"- {f}" for f in g["failures"]]
    lines += ["", f"Total script wall time {res.get('script_wall_s', float('nan')):.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/gpu")
    ap.add_argument("--quick", action="store_true",
                    help="CPU smoke run: 2-layer d 128 gpt2-family model, d_sae 512, 4 x 128 tokens, main command "
                         "at 4 x 160 tokens (past the organism's context 128) with 200 resamples")
    ap.add_argument("--n-seqs", type=int, default=None, help="default 256 (quick: 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="default 1024 (quick: 128)")
    ap.add_argument("--batch-size", type=int, default=16, help="splice.measure's batch_size (the main command's)")
    ap.add_argument("--memory-budget-mib", type=float, default=None,
                    help="splice.measure's budget_bytes in MiB (default: the library's, 1 GiB on CUDA)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, in priority order (default {MODES})")
    ap.add_argument("--deadline-s", type=float, default=430.0,
                    help="seconds from start by which the modes must end: a mode that would not fit runs fewer "
                         "sequences (its time is also given scaled to all)")
    ap.add_argument("--reserve-s", type=float, default=20.0, help="seconds kept back for each later mode")
    ap.add_argument("--no-regions", dest="regions", action="store_false", help="no synchronised region timers")
    ap.add_argument("--guard-seqs", type=int, default=2, help="sequences the guard twin compares (0: skip it)")
    ap.add_argument("--skip-main", action="store_true", help="leave out the main command")
    ap.add_argument("--main-timeout-s", type=float, default=180.0)
    ap.add_argument("--main-args", nargs=argparse.REMAINDER, default=[],
                    help="more arguments for the main command (last on the line)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.deadline_s
    q = args.quick
    n_seqs = args.n_seqs or (4 if q else 256)
    seq_len = args.seq_len or (128 if q else 1024)
    if q and not args.main_args:
        args.main_args = ["--n-seqs", "4", "--seq-len", "160", "--n-resamples", "200", "--reencode-seqs", "2"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = props.name
        dev = {"name": name, "sms": props.multi_processor_count, "memory_gib": props.total_memory / 2**30}
    else:
        name = "CPU"
        dev = {"name": name, "threads": torch.get_num_threads()}
    dev.update(torch=torch.__version__, cuda=torch.version.cuda, datasheet=datasheet(name))
    res: dict = {"device": dev, "args": {k: v for k, v in vars(args).items()}}
    print(f"device {name}; torch {torch.__version__}; out {out}", flush=True)

    def save():
        res["script_wall_s"] = time.perf_counter() - t_start
        (out / "gpu.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "gpu.md").write_text(markdown(res))

    if not args.skip_main:
        res["main"] = run_main_command(out, args)
        print(f"main command: exit {res['main']['exit_code']}, {res['main']['wall_s']:.1f} s, "
              f"{res['main']['summary']}, peak {res['main']['peak_memory']}", flush=True)
        if res["main"]["exit_code"] not in (0, 1):
            print(res["main"]["tail"], flush=True)
        save()

    res["probe"] = mm_probe(device, 8192 if device.type == "cuda" else 256)
    print("mm probe TFLOP/s:", {k: round(v, 1) for k, v in res["probe"].items()}, flush=True)
    save()

    from saeclaims.variants import CLAIM_VARIANTS

    t0 = time.perf_counter()
    subject, d_sae = gpt2_subject(device, n_seqs, seq_len, q)
    parts = flop_parts(subject, CLAIM_VARIANTS, args.batch_size)
    res["subject"] = {"hooks": len(subject.sae_ids), "variants": len(CLAIM_VARIANTS), "d_sae": d_sae,
                      "n_seqs": n_seqs, "seq_len": seq_len, "build_s": time.perf_counter() - t0,
                      "flops_per_token": parts, "shape": GPT2_QUICK if q else GPT2}
    print(f"subject built in {res['subject']['build_s']:.1f} s; FLOPs/token "
          f"{ {k: f'{v / 1e9:.2f} G' for k, v in parts.items()} }", flush=True)
    res["modes"] = []
    modes = [m for m in args.modes.split(",") if m]
    for i, mode in enumerate(modes):
        left = deadline - time.perf_counter()
        if left < args.reserve_s:
            res["modes"].append({"mode": mode, "error": f"skipped: {left:.0f} s left before the deadline"})
            continue
        try:
            row = run_mode(subject, mode, args, res["probe"], parts, deadline, len(modes) - i)
        except Exception as e:  # record and go on: the other modes still measure
            row = {"mode": mode, "error": f"{type(e).__name__}: {e}"[:300]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        res["modes"].append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                          if k != "regions_s"}), flush=True)
        save()
    if args.guard_seqs:
        try:
            res["guard"] = run_guard(subject, args.guard_seqs)
        except Exception as e:  # recorded: the numbers above still stand
            res["guard"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print("guard:", json.dumps({k: v for k, v in res["guard"].items() if k != "rows"}, default=str), flush=True)
    save()
    print(markdown(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
