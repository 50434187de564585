"""Drift against a previous run (`--baseline report.json`): each row's difference with an interval.

Two runs on the same tokens with the same seed resample the same sequences (`stats.resample_indices`),
so their bootstrap replicates pair up: the difference's interval is a paired cluster bootstrap. Otherwise
the replicates are combined as independent draws (unpaired, and labelled so). A row drifted when that
interval excludes 0 and the difference exceeds the claim's practical tolerance (set in the catalogue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from .catalog import Claim
from .schema import REPLICATES_FILE, BaselineComparison, DriftRow, ReportFile, ReportFileError, load_report
from .stats import Evidence
from .store import SubjectRecord


def row_key(subject: str, claim: str, hook: str) -> str:
    return f"{subject}|{claim}|{hook}"


@dataclass
class Baseline:
    path: Path
    report: ReportFile
    replicates: dict[str, np.ndarray]
    # the baseline's subject -> this run's, when --baseline-any-subject compares one subject with another (a
    # local:DIR copy of the organism with a changed SAE against the organism's report): their rows pair up
    renamed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, subjects: tuple[str, ...], any_subject: bool = False) -> Baseline:
        path = Path(path)
        report = load_report(path)
        theirs = set(report.header.subjects) | {e.subject for e in report.evidence}
        if not any_subject and theirs and not theirs & set(subjects):
            raise ReportFileError(f"baseline {path} is of subject(s) {sorted(theirs)}, this run judges "
                                  f"{list(subjects)}; pass --baseline-any-subject to compare anyway")
        renamed = {}
        if any_subject and len(theirs) == 1 and len(subjects) == 1 and theirs != set(subjects):
            renamed = {next(iter(theirs)): subjects[0]}
        reps: dict[str, np.ndarray] = {}
        side = path.with_name(REPLICATES_FILE)
        if side.exists():
            with np.load(side) as z:
                reps = {k: z[k] for k in z.files}
        if renamed:
            reps = {_renamed_key(k, renamed): v for k, v in reps.items()}
        return cls(path, report, reps, renamed)

    def subject_of(self, subject: str) -> str:
        """The baseline's name for this run's subject."""
        return next((theirs for theirs, ours in self.renamed.items() if ours == subject), subject)

    def rows(self) -> dict[str, Evidence]:
        return {row_key(self.renamed.get(e.subject, e.subject), e.claim, e.sae_id): e for e in self.report.evidence}

    def paired_with(self, subject: str, tokens_sha256: str, seed: int, n_resamples: int) -> bool:
        """Same tokens, same seed and as many resamples: the same sequences in every resample."""
        rec = self.report.header.subjects.get(self.subject_of(subject))
        return (rec is not None and bool(tokens_sha256) and rec.tokens_sha256 == tokens_sha256
                and self.report.header.seed == seed
                and int(self.report.header.options.get("n_resamples", -1)) == n_resamples)


def _renamed_key(key: str, renamed: dict[str, str]) -> str:
    subject, rest = key.split("|", 1)
    return f"{renamed.get(subject, subject)}|{rest}"


def changed_saes(baseline: Baseline, subjects: dict[str, SubjectRecord]) -> list[str]:
    """SAEs whose weights' sha256 differs from the baseline's (per subject and SAE id): what changed, as opposed
    to what the claims saw change."""
    out = []
    for name, rec in subjects.items():
        base = baseline.report.header.subjects.get(baseline.subject_of(name))
        if base is None:
            continue
        for sae_id, digest in sorted(rec.sae_sha256.items()):
            old = base.sae_sha256.get(sae_id)
            if old is not None and old != digest:
                out.append(f"{name}/{sae_id}: sha256 {old[:12]} -> {digest[:12]}")
    return out


def _interval(d: np.ndarray, confidence: float) -> tuple[float, float]:
    d = d[np.isfinite(d)]
    if d.size < 10:
        return math.nan, math.nan
    a = (1 - confidence) / 2
    return float(np.quantile(d, a)), float(np.quantile(d, 1 - a))


def compare(base: Evidence, cur: Evidence, base_reps: np.ndarray | None, cur_reps: np.ndarray | None,
            claim: Claim, paired: bool, confidence: float, seed: int = 0) -> DriftRow:
    """The difference current - baseline of one row, its interval, and whether it drifted."""
    d = cur.estimate - base.estimate
    if base.method == "exact" and cur.method == "exact":
        low = high = d
        pairing = "exact"
    elif base_reps is not None and cur_reps is not None and len(base_reps) == len(cur_reps) and paired:
        low, high = _interval(np.asarray(cur_reps, np.float64) - np.asarray(base_reps, np.float64), confidence)
        pairing = "paired"
    elif base_reps is not None and cur_reps is not None:
        rng = np.random.default_rng(seed)
        n = min(len(base_reps), len(cur_reps))
        b = rng.permutation(np.asarray(base_reps, np.float64))[:n]
        low, high = _interval(np.asarray(cur_reps, np.float64)[:n] - b, confidence)
        pairing = "unpaired"
    else:  # e.g. Clopper-Pearson rows: a normal approximation from each run's own interval
        z = sps.norm.ppf(1 - (1 - base.confidence) / 2)
        se = math.hypot((base.ci_high - base.ci_low) / (2 * z), (cur.ci_high - cur.ci_low) / (2 * z))
        zc = sps.norm.ppf(1 - (1 - confidence) / 2)
        low, high = d - zc * se, d + zc * se
        pairing = "unpaired (normal approximation)"
    excludes_zero = (low > 0 or high < 0) if math.isfinite(low) and math.isfinite(high) else False
    tol = claim.drift_tolerance
    return DriftRow(cur.claim, cur.subject, cur.sae_id, base.estimate, cur.estimate, d, low, high, pairing, tol,
                    bool(excludes_zero and abs(d) > tol), base.verdict, cur.verdict)


def compare_runs(baseline: Baseline, evidence: list[Evidence], replicates: dict[str, list[float] | np.ndarray],
                 claims: dict[str, Claim], pairing: dict[str, bool], confidence: float,
                 seed: int = 0) -> BaselineComparison:
    """Every row in both runs compared; rows only in one run listed as added or removed."""
    base_rows = baseline.rows()
    cur_rows = {row_key(e.subject, e.claim, e.sae_id): e for e in evidence}
    out = BaselineComparison(str(baseline.path))
    out.added = sorted(k for k in cur_rows if k not in base_rows)
    out.removed = sorted(k for k in base_rows if k not in cur_rows)
    for key in sorted(set(base_rows) & set(cur_rows)):
        b, c = base_rows[key], cur_rows[key]
        claim = claims.get(c.claim)
        if claim is None or not (math.isfinite(b.estimate) and math.isfinite(c.estimate)):
            out.not_comparable.append(f"{key} (baseline {b.estimate}, current {c.estimate})")
            continue
        reps = replicates.get(key)
        out.rows.append(compare(b, c, baseline.replicates.get(key), None if reps is None else np.asarray(reps),
                                claim, pairing.get(c.subject, False), confidence, seed))
    return out
