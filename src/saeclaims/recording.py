"""What a claim test writes into its run, and what it reads back to judge a row.

The `claim` fixture gets this narrow recorder, as pytest-benchmark's fixture gets `add_stats`, rather than
the run's whole session: it records evidence (and the row's bootstrap replicates), not-applicable rows,
figure series and (for the plugin) test outcomes, looks up the ledger's expected verdict, and compares a
row with the baseline run.
`session.py` keeps the run itself (family, subjects, caches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from .baseline import Baseline, compare, row_key
from .catalog import Catalog
from .ledger import Ledger, Sample
from .schema import DriftRow
from .series import Series
from .stats import Evidence
from .store import EvidenceStore, NotApplicable, Outcome
from .xdist_groups import plain_nodeid


@dataclass
class Recorder:
    """The run's evidence store plus the lookups a verdict needs (each a narrow callable of the session)."""

    store: EvidenceStore
    catalog: Catalog
    ledger: Callable[[str], Ledger]  # a subject's ledger, read and checked once per run
    baseline: Callable[[], Baseline | None]  # the --baseline run (read at collection), or None
    confidence: Callable[[], float]  # each interval's confidence (the family is fixed at collection)
    seed: int = 0
    n_resamples: int = 2000
    fail_on_drift: bool = False

    def record(self, evidence: Evidence, replicates=None) -> None:
        self.store.evidence.append(evidence)
        if replicates is not None:
            self.store.replicates[row_key(evidence.subject, evidence.claim, evidence.sae_id)] = [
                float(x) for x in replicates]

    def record_not_applicable(self, row: NotApplicable) -> None:
        self.store.not_applicable.append(row)

    def add_series(self, series: Series) -> None:
        self.store.add_series(series)

    def record_outcome(self, report: pytest.TestReport) -> None:
        """Each claim test's outcome for the report's summary (on the controller under xdist)."""
        if "claim" not in report.keywords:
            return
        if report.when == "call" or report.outcome != "passed":
            outcome = {"passed": "passed", "skipped": "skipped"}.get(report.outcome)
            if outcome is None:
                outcome = "failed" if report.when == "call" else "errored"
            message = "" if report.outcome == "passed" else report_line(report)
            nodeid = plain_nodeid(report.nodeid)
            self.store.outcomes[nodeid] = Outcome(nodeid, outcome, message)

    def sample(self, spec: str) -> Sample | None:
        """The sample a subject is judged at (None for reference data, which has no sample size)."""
        rec = self.store.subjects.get(spec)
        return Sample(rec.n_seqs, rec.seq_len) if rec is not None else None

    def paired(self, spec: str) -> bool:
        """Whether this run resamples the same sequences as the baseline (same tokens, seed, resamples)."""
        rec = self.store.subjects.get(spec)
        base = self.baseline()
        return bool(base and rec and base.paired_with(spec, rec.tokens_sha256, self.seed, self.n_resamples))

    def drift(self, evidence: Evidence, replicates) -> DriftRow | None:
        """This row against the baseline run (None without a baseline or without the row there)."""
        base_run = self.baseline()
        if base_run is None:
            return None
        key = row_key(evidence.subject, evidence.claim, evidence.sae_id)
        base = base_run.rows().get(key)
        if base is None:
            return None
        return compare(base, evidence, base_run.replicates.get(key), replicates, self.catalog.get(evidence.claim),
                       self.paired(evidence.subject), self.confidence(), self.seed)


def report_line(report: pytest.TestReport) -> str:
    """The one line that says why a test failed: the exception's message, not its traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message.splitlines()[0]
    if isinstance(report.longrepr, tuple):  # skips: (path, line, reason)
        return str(report.longrepr[-1]).removeprefix("Skipped: ")
    lines = [x for x in str(report.longrepr).splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""
