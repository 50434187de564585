"""What a claims run collects for its report: evidence rows, not-applicable rows, figure series and the
subjects' provenance, with the JSON payload xdist workers send to the controller."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .series import Series, from_payload, series_key, to_payload
from .stats import Evidence
from .subject_facts import SubjectFact


@dataclass
class NotApplicable:
    """A claim row whose premise is absent on this subject, with the reason (and the premise's estimate)."""

    claim: str
    subject: str
    sae_id: str  # the row (an SAE id, or a scope's single row)
    reason: str
    premise: dict[str, Any] = field(default_factory=dict)
    nodeid: str = ""


@dataclass
class Outcome:
    """How one claim test ended: passed, failed, errored or skipped, with the one-line reason."""

    nodeid: str
    outcome: str
    message: str = ""


@dataclass
class SubjectRecord:
    """What the report says about a subject that was measured."""

    name: str
    model: str
    release: str
    sae_ids: list[str]
    context_sizes: dict[str, int]
    n_ctx: int
    n_seqs: int
    seq_len: int
    full_context_sae_ids: list[str] = field(default_factory=list)
    device: str = ""
    tokens_sha256: str = ""
    sae_sha256: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvidenceStore:
    evidence: list[Evidence] = field(default_factory=list)
    not_applicable: list[NotApplicable] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    facts: list[SubjectFact] = field(default_factory=list)  # what each subject shares with GPT-2 (subject_facts)
    subjects: dict[str, SubjectRecord] = field(default_factory=dict)
    family_size: int = 0
    claims: list[dict] = field(default_factory=list)  # the catalogue the rows were judged against
    untested_claims: list[str] = field(default_factory=list)
    failed_subjects: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # filled on the controller, from test reports
    replicates: dict[str, list[float]] = field(default_factory=dict)  # row key -> paired bootstrap replicates
    baseline: Any = None  # schema.BaselineComparison, when --baseline was given

    def add_series(self, s: Series) -> None:
        key = series_key(s)
        self.series = [x for x in self.series if series_key(x) != key] + [s]

    def add_fact(self, f: SubjectFact) -> None:
        key = (f.subject, f.fact, f.sae_id)
        self.facts = [x for x in self.facts if (x.subject, x.fact, x.sae_id) != key] + [f]

    def to_json(self) -> str:
        return json.dumps({
            "evidence": [asdict(e) for e in self.evidence],
            "not_applicable": [asdict(n) for n in self.not_applicable],
            "series": [to_payload(s) for s in self.series],
            "facts": [asdict(f) for f in self.facts],
            "subjects": {k: asdict(v) for k, v in self.subjects.items()},
            "family_size": self.family_size, "claims": self.claims, "untested_claims": self.untested_claims,
            "failed_subjects": self.failed_subjects, "replicates": self.replicates,
        })

    def merge_json(self, text: str) -> None:
        other = json.loads(text)
        self.evidence.extend(Evidence(**e) for e in other.get("evidence", []))
        self.not_applicable.extend(NotApplicable(**n) for n in other.get("not_applicable", []))
        for s in other.get("series", []):
            self.add_series(from_payload(s))
        for f in other.get("facts", []):
            self.add_fact(SubjectFact(**f))
        for k, v in other.get("subjects", {}).items():
            self.subjects[k] = SubjectRecord(**v)
        self.family_size = max(self.family_size, int(other.get("family_size", 0)))
        known = {c["id"] for c in self.claims}
        self.claims += [c for c in other.get("claims", []) if c["id"] not in known]
        self.failed_subjects.update(other.get("failed_subjects", {}))
        self.replicates.update(other.get("replicates", {}))
        # every xdist worker collects the whole suite, so any worker's list is the run's
        self.untested_claims = list(other.get("untested_claims", self.untested_claims))
