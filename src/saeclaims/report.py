"""REPORT.md, report.json and figures, written atomically at the end of a claims run.

Everything lands in a fresh temporary folder first and is swapped in at the end, so a crashed or
interrupted run leaves the previous report intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Claim
from .preflight import EXPLAINED_VARIANCE, L0, MISMATCH, TOLERANCES, PublishedCheck
from .schema import REPLICATES_FILE, SCHEMA_VERSION, ReportFile, ReportHeader, dump
from .stats import Evidence, bonferroni_confidence
from .store import EvidenceStore, NotApplicable, Outcome, SubjectRecord
from .subject_facts import KINDS, SubjectFact
from .subjects.core import hook_in_id, hook_order, package_versions

FIG_DIR = "report"


def collect_header(subjects: dict[str, SubjectRecord], device: str, dtype: str, seed: int,
                   family_confidence: float, family_size: int, wall_s: float, root: Path,
                   options: dict[str, Any] | None = None,
                   published: list[PublishedCheck] | None = None,
                   peak_memory_mib: dict[str, float] | None = None, command: str = "",
                   ledgers: dict[str, str] | None = None, precision: str = "") -> ReportHeader:
    """The header of this run: the given facts plus the git commit, Python and package versions."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "claims", "fixtures"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty and commit != "unknown":
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return ReportHeader(subjects, device, "float32" if dtype == "none" else f"autocast {dtype}", seed,
                        family_confidence, family_size, wall_s, commit, platform.python_version(),
                        package_versions(), dict(options or {}), list(published or []), dict(peak_memory_mib or {}),
                        command, dict(ledgers or {}), precision=precision)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _memory(peak: dict[str, float]) -> str:
    parts = [f"{peak['rss']:.0f} MiB resident (largest process)"] if "rss" in peak else []
    parts += [f"{peak['cuda']:.0f} MiB CUDA"] if "cuda" in peak else []
    return ", ".join(parts) or "not recorded"


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "nan"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"


def _order(ev: dict, ids: list[str]) -> tuple:
    h = ev["sae_id"]  # an SAE id: ordered by the hook it names, then by id
    named = hook_in_id(h)
    return (ev["subject"], ids.index(ev["claim"]) if ev["claim"] in ids else 99,
            hook_order(named) if named else (-1, 0), h)


def summary_lines(evidence: list[Evidence]) -> list[str]:
    """Which claims hold, are refuted, or are inconclusive, per subject (templated from the evidence)."""
    lines = []
    for subject in sorted({e.subject for e in evidence}):
        evs = [e for e in evidence if e.subject == subject]
        by_claim: dict[str, list[Evidence]] = {}
        for e in evs:
            by_claim.setdefault(e.claim, []).append(e)
        groups: dict[str, list[str]] = {"holds": [], "refuted": [], "inconclusive": [], "undefined": [], "mixed": []}
        for claim, es in by_claim.items():
            verdicts = Counter(e.verdict for e in es)
            if len(verdicts) == 1:
                groups[es[0].verdict].append(f"`{claim}`")
            else:
                parts = ", ".join(f"{v} at {n}" for v, n in sorted(verdicts.items()))
                groups["mixed"].append(f"`{claim}` ({parts} of {len(es)} hooks)")
        lines.append(f"**{subject}**")
        for name, label in (("holds", "Hold"), ("refuted", "Refuted"), ("inconclusive", "Inconclusive"),
                            ("undefined", "Undefined (the statistic is NaN or infinite, not judged)"),
                            ("mixed", "Differ by hook")):
            if groups[name]:
                lines.append(f"- {label}: {', '.join(groups[name])}")
        mism = [e for e in evs if e.status == "MISMATCH"]
        soft = [e for e in evs if e.status == "differs"]
        ok = len(evs) - len(mism) - len(soft)
        lines.append(f"- Against the ledger: {ok} of {len(evs)} verdicts as expected"
                     + (f"; {len(soft)} differ from a ledger drafted at another sample size without "
                        "contradicting it (inconclusive on one side)" if soft else "")
                     + (f"; **{len(mism)} differ**" if mism else "") + ".")
        lines.append("")
    return lines


def outcome_lines(outcomes: list[Outcome], not_applicable: list[NotApplicable]) -> list[str]:
    """How the run's claim tests ended, counted truthfully, with each failure's one-line reason."""
    if not outcomes:
        return []
    na = {n.nodeid for n in not_applicable}
    kinds = ["passed", "failed", "errored", "not applicable", "skipped"]
    counts = dict.fromkeys(kinds, 0)
    for o in outcomes:
        counts["not applicable" if o.outcome == "skipped" and o.nodeid in na else o.outcome] += 1
    lines = ["Claim tests: " + ", ".join(f"{counts[k]} {k}" for k in kinds) + "."]
    bad = [o for o in outcomes if o.outcome in ("failed", "errored")]
    lines += [f"- {o.outcome}: `{o.nodeid}`: {o.message}" for o in bad]
    return lines + [""]


def baseline_summary_lines(cmp: Any) -> list[str]:
    """The Summary's line on the baseline, so the first screen says whether anything moved."""
    if cmp is None:
        return []
    drifted = sum(r.drifted for r in cmp.rows)
    flipped = sum(r.flipped for r in cmp.rows)
    saes = (f"; SAEs whose weights changed: {len(cmp.changed_saes)}" if cmp.changed_saes
            else "; no SAE's weights changed")
    return [f"Against the baseline `{cmp.path}`: {len(cmp.rows)} rows compared, **{drifted} drifted**, {flipped} "
            f"verdicts flipped{saes} (see [Changes since baseline](#changes-since-baseline)).", ""]


def baseline_lines(cmp: Any, claims: list[Claim], figs: list[str]) -> list[str]:
    """REPORT.md's "Changes since baseline": every compared row, drifted and flipped ones marked."""
    tol = {c.id: c for c in claims}
    drifted = [r for r in cmp.rows if r.drifted]
    flipped = [r for r in cmp.rows if r.flipped]
    out = ["## Changes since baseline", "",
           f"Baseline `{cmp.path}`: {len(cmp.rows)} rows compared, **{len(drifted)} drifted**, {len(flipped)} "
           f"verdicts flipped, {len(cmp.added)} added, {len(cmp.removed)} removed. A row drifted when the "
           "interval of current - baseline excludes 0 and the difference exceeds the claim's tolerance; paired "
           "rows resample the same sequences in both runs (same tokens and seed).", "",
           *([f"SAEs whose weights changed (sha256): {'; '.join(cmp.changed_saes)}.", ""] if cmp.changed_saes else
             ["No SAE's weights changed (sha256 as in the baseline).", ""])]
    changed = [r for r in cmp.rows if r.drifted or r.flipped]
    steady = [r for r in cmp.rows if not (r.drifted or r.flipped)]
    if changed:
        out += ["Drifted or flipped rows first:", "",
                "| claim | subject | SAE id | baseline | current | difference [CI] | pairing | tolerance | change |",
                "|---|---|---|---|---|---|---|---|---|"]
    for r in changed:
        change = ", ".join(x for x in ("**drifted**" if r.drifted else "",
                                       f"**flipped** {r.baseline_verdict} -> {r.current_verdict}" if r.flipped else "")
                           if x) or "-"
        out.append(f"| `{r.claim}` | {r.subject} | {r.sae_id} | {_fmt(r.baseline)} | {_fmt(r.current)} | "
                   f"{r.difference:+.3g} [{_fmt(r.low)}, {_fmt(r.high)}] | {r.pairing} | {r.tolerance:g} | {change} |")
    if steady:
        largest = max(steady, key=lambda r: abs(r.difference))
        out += ["", f"Unchanged: {len(steady)} rows neither drifted nor flipped verdict (the largest difference "
                    f"{largest.difference:+.3g} at `{largest.claim}` {largest.subject}/{largest.sae_id}); every row is "
                    "in report.json's `baseline.rows`."]
    for label, keys in (("Added (not in the baseline)", cmp.added), ("Removed (not in this run)", cmp.removed),
                        ("Not comparable", cmp.not_comparable)):
        if keys:
            out += ["", f"{label}: " + "; ".join(f"`{k}`" for k in keys) + "."]
    reasons = sorted({f"`{r.claim}` {tol[r.claim].drift_tolerance:g}: {tol[r.claim].drift_tolerance_why}"
                      for r in cmp.rows if r.claim in tol})
    if reasons:
        out += ["", "Tolerances: " + "; ".join(reasons) + "."]
    out += [f"\n![changes since baseline]({FIG_DIR}/{f})" for f in figs]
    return out + [""]


# ---- published-statistics preflight (saeclaims.preflight): a table at the top on mismatch, else in "Run"


def published_lines(checks: list[PublishedCheck], mismatches_only: bool = False) -> list[str]:
    """The preflight's rows as a table: each release SAE's in-context statistic against sae_lens's value."""
    rows = [c for c in checks if c.status == MISMATCH] if mismatches_only else list(checks)
    out = ["| subject | SAE | statistic | measured | published | tolerance | status | tokens |",
           "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        pub = "-" if c.published is None else f"{c.published:.4g}"
        status = "**mismatch**" if c.status == MISMATCH else c.status
        out.append(f"| {c.subject} | {c.sae_id} | {c.statistic} | {c.measured:.4g} | {pub} | {c.tolerance:g} | "
                   f"{status} | {c.n_tokens} |")
    return out + [""]


def published_mismatch_lines(checks: list[PublishedCheck]) -> list[str]:
    """REPORT.md's first section when a release's SAEs measured unlike sae_lens publishes (run accepted it)."""
    if not any(c.status == MISMATCH for c in checks):
        return []
    return ["## Warning: SAE statistics differ from the published values", "",
            "These SAEs' in-context L0 or explained variance differ from sae_lens's published values beyond the "
            f"tolerance of sae_lens's release benchmark (L0 {TOLERANCES[L0]:g}, explained variance "
            f"{TOLERANCES[EXPLAINED_VARIANCE]:g}); the run went on because of "
            "--accept-published-mismatch. A wrong tokenizer, dataset or model setting is the usual cause, and "
            "then every verdict below is about SAEs that do not see what they were trained on.", "",
            *published_lines(checks, mismatches_only=True)]


def _published_run_lines(checks: list[PublishedCheck]) -> list[str]:
    if not checks:
        return []
    return ["Published statistics (sae_lens's pretrained directory) against the same statistics measured here, "
            "at positions [1, ctx) of the evaluation tokens with BOS/EOS/pad left out (sae_lens's definitions "
            "and its release benchmark's tolerances):", "", *published_lines(checks)]

# ---- end of the preflight's report sections


_MEETS = {True: "yes", False: "**short**", None: "unclear"}


def _fact_cell(f: SubjectFact | None) -> str:
    return "-" if f is None else f"{_fmt(f.estimate)} ({_MEETS[f.meets]})"


def claims_in_brief(claims: list[Claim], evidence: list[Evidence]) -> list[str]:
    """The words of each judged claim and the bar they set, on the first screen beside the verdicts (the full
    sections, with sources and statistics, are at the end)."""
    judged = {e.claim for e in evidence}
    lines = [f"- `{c.id}`: {c.words} (judged {c.direction} {c.threshold:g})" for c in claims if c.id in judged]
    return ["What the judged claims say:", "", *lines, ""] if lines else []


def _id_order(row: tuple[str, str]) -> tuple:
    """(subject, SAE id) ordered by the hook the id names, then by id (ids need not be hook names)."""
    named = hook_in_id(row[1])
    return row[0], hook_order(named) if named else (-1, 0), row[1]


def facts_lines(facts: list[SubjectFact]) -> list[str]:
    """The subjects' properties the claims presuppose, beside GPT-2's: apart from, and before, the verdicts."""
    if not facts:
        return []
    out = ["## The subject beside GPT-2", "",
           "What the claims presuppose about their subject (gpt2-small with `gpt2-small-res-jb`), measured in this "
           "run on the evaluation tokens. A fact short of GPT-2's mark is not a verdict on any claim: it says how "
           "far this subject's verdicts speak for GPT-2.", "",
           "| subject | fact | estimate [CI] | GPT-2-like | mark | GPT-2 small |", "|---|---|---|---|---|---|"]
    for f in (f for f in facts if not f.sae_id):
        k = f.kind
        ci = f" [{_fmt(f.ci_low)}, {_fmt(f.ci_high)}]" if f.ci_low is not None and f.ci_high is not None else ""
        out.append(f"| {f.subject} | {k.description} | {_fmt(f.estimate)}{ci} | {_MEETS[f.meets]} | {k.mark()} "
                   f"| {k.gpt2} |")
    per_sae = [f for f in facts if f.sae_id]
    if per_sae:
        kinds = [k for k in KINDS.values() if any(f.fact == k.name for f in per_sae)]
        out += ["", "| subject | SAE id | " + " | ".join(f"{k.name} ({k.mark()})" for k in kinds) + " |",
                "|---|---|" + "---|" * len(kinds)]
        rows = sorted({(f.subject, f.sae_id) for f in per_sae}, key=_id_order)
        for subj, sae_id in rows:
            got = {f.fact: f for f in per_sae if (f.subject, f.sae_id) == (subj, sae_id)}
            out.append(f"| {subj} | {sae_id} | " + " | ".join(_fact_cell(got.get(k.name)) for k in kinds) + " |")
        out += ["", "; ".join(f"{k.name}: {k.description}" for k in kinds) + "."]
    return out + [""]


def shard_notice_lines(header: ReportHeader) -> list[str]:
    """A shard's own report says, before anything else, that it is a part (its rows only)."""
    if len(header.shards) != 1 or header.shards[0].count == 1:
        return []
    r = header.shards[0]
    return [f"**Shard {r.index} of {r.count}**: a partial report, the rows this shard holds (`--sae-shard "
            f"{r.index}/{r.count}`). One report of the whole run: `python -m saeclaims merge` with every shard's "
            "folder (README, \"Sweeping a release\").", ""]


def shard_run_lines(header: ReportHeader) -> list[str]:
    """The Run table's rows for a sharded run: each shard, where it ran and how long it took."""
    if not header.shards:
        return []
    parts = [f"{r.index}/{r.count} on {r.host or 'an unnamed host'} ({r.device}, {r.wall_s:.1f} s)"
             for r in header.shards]
    label = "shard" if len(header.shards) == 1 else f"shards ({len(header.shards)}, merged)"
    return [f"| {label} | {'; '.join(parts)} |"]


def not_applicable_lines(not_applicable: list[NotApplicable]) -> list[str]:
    """One bullet per reason listing its rows (and each row's premise estimate): twenty rows that are not
    applicable for one reason read as one finding, not twenty."""
    by_reason: dict[str, list[NotApplicable]] = {}
    for n in not_applicable:
        by_reason.setdefault(n.reason, []).append(n)
    out = []
    for reason, rows in by_reason.items():
        shown = []
        for n in rows:
            premise = "; ".join(f"{k} {v}" for k, v in n.premise.items())
            shown.append(f"`{n.claim}` on {n.subject}/{n.sae_id}" + (f" ({premise})" if premise else ""))
        out.append(f"- {reason}: " + ", ".join(shown))
    return out


def render_markdown(header: ReportHeader, evidence: list[Evidence], not_applicable: list[NotApplicable],
                    figures: dict[str, list[str]], claims: list[Claim], untested: list[str] = (),
                    outcomes: list[Outcome] = (), baseline: Any = None, facts: list[SubjectFact] = ()) -> str:
    per_test = bonferroni_confidence(header.family_confidence, header.family_size)
    out = ["# SAE claims report", "",
           f"Generated by `{header.command or 'pytest claims -m gpu'}` (sae-claims); do not edit by hand.", ""]
    out += shard_notice_lines(header)
    out += published_mismatch_lines(header.published)
    out += facts_lines(list(facts))
    out += ["## Summary", ""] + outcome_lines(list(outcomes), not_applicable) + summary_lines(evidence)
    out += claims_in_brief(claims, evidence)
    out += baseline_summary_lines(baseline)
    out += ["## Run", "", "| | |", "|---|---|"]
    for name, s in header.subjects.items():
        ctxs = sorted(set(s.context_sizes.values()))
        out.append(f"| subject `{name}` | model `{s.model}`, SAEs `{s.release}`: "
                   f"{', '.join(s.sae_ids)}; training context {ctxs} of n_ctx {s.n_ctx}; "
                   f"{s.n_seqs} sequences x {s.seq_len} tokens (tokens sha256 {s.tokens_sha256[:12] or '?'}) |")
        if s.full_context_sae_ids:
            out.append(f"| control family | full-context SAEs: {', '.join(s.full_context_sae_ids)} |")
        if name in header.ledgers:
            out.append(f"| ledger (expected verdicts) | {header.ledgers[name]} |")
    out += [f"| device, dtype | {header.device}, {header.dtype} |"]
    out += [f"| precision | {header.precision} |"] if header.precision else []
    out += [f"| seed | {header.seed} |",
            f"| versions | {', '.join(f'{k} {v}' for k, v in header.versions.items())}, python {header.python} |",
            f"| git commit | {header.git_commit} |",
            f"| wall time | {header.wall_s:.1f} s{' (the longest shard)' if len(header.shards) > 1 else ''} |",
            *shard_run_lines(header),
            f"| peak memory | {_memory(header.peak_memory_mib)} |",
            f"| intervals | a family of {header.family_size} intervals (every registered claim x each subject's "
            f"rows); each interval is at {per_test:.4%} confidence, so that all hold jointly at "
            f"{header.family_confidence:.0%} (Bonferroni). The method column says how each was formed. |", ""]
    out += _published_run_lines(header.published)
    if untested:
        out += [f"**Warning:** registered claims with no test in this suite: {', '.join(untested)}.", ""]
    out += ["## Verdicts", "",
            "Holds: the whole interval is on the claim's side of the threshold; refuted: wholly on the "
            "other side; else inconclusive; undefined: the statistic or its interval is NaN or infinite (e.g. a "
            "ratio over nothing), so there is nothing to judge. Expected verdicts come from each "
            "subject's ledger (its path and entry count are in the Run table).",
            "", "| claim | subject | SAE id | estimate [CI] | method | threshold | verdict | expected | status |",
            "|---|---|---|---|---|---|---|---|---|"]
    for e in evidence:
        status = {"ok": "ok", "differs": "differs (other sample size)"}.get(e.status, "**MISMATCH**")
        out.append(f"| `{e.claim}` | {e.subject} | {e.sae_id} | {_fmt(e.estimate)} [{_fmt(e.ci_low)}, "
                   f"{_fmt(e.ci_high)}] | {e.method} | {e.direction} {e.threshold:g} | {e.verdict} | {e.expected} "
                   f"| {status} |")
    if not_applicable:
        out += ["", "Not applicable (one bullet per reason, with the rows it holds for):", ""]
        out += not_applicable_lines(not_applicable)
    if baseline is not None:
        out += ["", *baseline_lines(baseline, claims, figures.get("_baseline", []))]
    out += ["", "## Claims", ""]
    for claim in claims:
        evs = [e for e in evidence if e.claim == claim.id]
        out += [f"### `{claim.id}`", "",
                f"> {claim.words}", "",
                f"Source: {claim.source}, <{claim.url}>.  ",
                f"Statistic: {claim.statistic} ({claim.scope_info.description}).  ",
                f"Threshold: {claim.direction} {claim.threshold:g}, because {claim.why}", ""]
        if claim.failed_validation:
            out += [f"**Not run: its instrument failed validation on planted controls.** {claim.failed_validation}.",
                    ""]
        if evs:
            out.append("Results: " + "; ".join(f"{e.subject}/{e.sae_id} {_fmt(e.estimate)} "
                                               f"[{_fmt(e.ci_low)}, {_fmt(e.ci_high)}] {e.verdict}"
                                               for e in evs) + ".")
        else:
            out.append("Not evaluated in this run.")
        for fig in figures.get(claim.id, []):
            out += ["", f"![{claim.id}]({FIG_DIR}/{fig})"]
        out.append("")
    return "\n".join(out) + "\n"


def write_report(path: Path, header: ReportHeader, store: EvidenceStore,
                 extra_files: dict[str, str] | None = None) -> None:
    """Write REPORT.md, report/report.json and report/*.png; all or nothing. Runs that write one report at the
    same time take turns (a lock beside it), so one never clears away the other's half-written files.
    extra_files: more files for report/ (a shard's shard.json, merge.py), written with the rest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path):
        _write_report(path, header, store, extra_files or {})


@contextlib.contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_report(path: Path, header: ReportHeader, store: EvidenceStore, extra_files: dict[str, str]) -> None:
    recover_interrupted_write(path)
    claims = [Claim.from_dict(c) for c in store.claims]
    ids = [c.id for c in claims]
    # rows in one order whatever order the tests ended in (xdist workers, shards)
    evidence = sorted(store.evidence, key=lambda e: _order(asdict(e), ids))
    not_applicable = sorted(store.not_applicable, key=lambda n: _order(asdict(n), ids))
    kinds = list(KINDS)
    facts = sorted(store.facts, key=lambda f: (_id_order((f.subject, f.sae_id)),
                                               kinds.index(f.fact) if f.fact in kinds else len(kinds)))
    series = sorted(store.series, key=lambda s: _id_order((s.subject, getattr(s, "sae_id", ""))))
    tmp_dir = Path(tempfile.mkdtemp(prefix=".report-", dir=path.parent))
    os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes it 0700; the figures folder is as readable as any other
    tmp_md = path.with_name(f".{path.name}.tmp")
    try:
        from .figures import draw_all  # matplotlib loads only when a report is drawn

        # figures only for claims this run judged or found not applicable: a claim outside the selection (-k, a
        # single file) gets no chart, though the workbench recorded series for it
        in_run = {e.claim for e in evidence} | {n.claim for n in store.not_applicable}
        figures = draw_all(tmp_dir, evidence, series, not_applicable, [c for c in claims if c.id in in_run])
        outcomes = sorted(store.outcomes.values(), key=lambda o: o.nodeid)
        report = ReportFile(SCHEMA_VERSION, header, evidence, not_applicable, outcomes, store.baseline, facts)
        (tmp_dir / "report.json").write_text(dump(report))
        for name, text in extra_files.items():
            (tmp_dir / name).write_text(text)
        if store.baseline is not None:
            from .figures import drift_figure  # matplotlib loads only when a report is drawn

            figures["_baseline"] = [drift_figure(tmp_dir, store.baseline, {c.id: c.family for c in claims})]
        if store.replicates:
            np.savez_compressed(tmp_dir / REPLICATES_FILE,
                                **{k: np.asarray(v, dtype=np.float32) for k, v in store.replicates.items()})
        md = render_markdown(header, evidence, not_applicable, figures, claims, store.untested_claims,
                             outcomes, store.baseline, facts)
        tmp_md.write_text(md)
        _swap_in(tmp_dir, tmp_md, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_md.unlink(missing_ok=True)


def _swap_in(new_dir: Path, new_md: Path, path: Path) -> None:
    """Figures folder, then markdown; if the markdown cannot be put in place, the old figures go back."""
    final_dir, old_dir = path.parent / FIG_DIR, path.parent / f".{FIG_DIR}.old"
    shutil.rmtree(old_dir, ignore_errors=True)
    had_old = final_dir.exists()
    if had_old:
        final_dir.rename(old_dir)
    try:
        new_dir.rename(final_dir)
        try:
            os.replace(new_md, path)
        except BaseException:
            final_dir.rename(new_dir)
            raise
    except BaseException:
        if had_old:
            old_dir.rename(final_dir)
        raise
    shutil.rmtree(old_dir, ignore_errors=True)


def recover_interrupted_write(path: Path) -> None:
    """A run killed mid-write leaves `.report-*` folders, a `.REPORT.md.tmp` or the old figures set aside in
    `.report.old`: clean them up, putting the old figures back when they were never replaced."""
    parent = Path(path).parent
    final_dir, old_dir = parent / FIG_DIR, parent / f".{FIG_DIR}.old"
    if old_dir.exists():
        new_json, md = final_dir / "report.json", Path(path)
        # new figures whose markdown never landed (the markdown is older than them): put the old ones back
        unfinished = new_json.exists() and md.exists() and md.stat().st_mtime_ns < new_json.stat().st_mtime_ns
        if final_dir.exists() and unfinished:
            shutil.rmtree(final_dir)
        if final_dir.exists():
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            old_dir.rename(final_dir)
    for stale in parent.glob(".report-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    Path(path).with_name(f".{Path(path).name}.tmp").unlink(missing_ok=True)
