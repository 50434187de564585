"""report.json as a versioned, validated file: its typed form, the JSON Schema generated from those types
(`report.schema.json` in the package is this generator's output, checked by a test), and loading.

Bump SCHEMA_VERSION whenever a field changes meaning or is removed, and teach `migrate` the step from the
version before (users keep last release's report as their baseline); `--baseline` refuses other versions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .preflight import PublishedCheck
from .stats import Evidence
from .store import NotApplicable, Outcome, SubjectRecord
from .subject_facts import SubjectFact

SCHEMA_VERSION = 2
# Version 1 named each row's SAE id `hook` (evidence, not-applicable rows, baseline drift rows); version 2 calls
# it `sae_id`. Users keep last release's report as their baseline, so a version-1 file is migrated on read.
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
REPLICATES_FILE = "replicates.npz"  # beside report.json: each row's bootstrap replicates (for --baseline)


class ReportFileError(ValueError):
    """A file given as a report is not one, or is of another schema version; the message says which."""


@dataclass
class ShardRecord:
    """One shard of a sharded run (--sae-shard K/N): which it is, where it ran and how long it took."""

    index: int
    count: int
    host: str
    device: str
    wall_s: float
    command: str


@dataclass
class ReportHeader:
    """What was run, where and how: enough to reproduce it and to know whether two runs are comparable."""

    subjects: dict[str, SubjectRecord]
    device: str
    dtype: str
    seed: int
    family_confidence: float
    family_size: int
    wall_s: float
    git_commit: str
    python: str
    versions: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    published: list[PublishedCheck] = field(default_factory=list)  # release SAEs vs sae_lens's published stats
    peak_memory_mib: dict[str, float] = field(default_factory=dict)  # rss (largest process), cuda (allocator)
    command: str = ""  # the command line that ran (pytest and its arguments)
    ledgers: dict[str, str] = field(default_factory=dict)  # subject -> its ledger's path and entry count
    shards: list[ShardRecord] = field(default_factory=list)  # a shard's own record, or every shard of a merge
    precision: str = ""  # the precision policy as resolved on the run's devices, e.g. "auto -> fp32 (cpu)"


@dataclass
class DriftRow:
    """One evidence row compared with the baseline run."""

    claim: str
    subject: str
    sae_id: str  # the row (an SAE id, or a scope's single row)
    baseline: float
    current: float
    difference: float
    low: float
    high: float
    pairing: str  # paired (same tokens and seed: the same resampled sequences), unpaired, exact
    tolerance: float
    drifted: bool
    baseline_verdict: str
    current_verdict: str

    @property
    def flipped(self) -> bool:
        return self.baseline_verdict != self.current_verdict

    def one_line(self) -> str:
        return (f"drift: {self.claim} @ {self.subject}/{self.sae_id}: baseline {self.baseline:.4g}, current "
                f"{self.current:.4g}, difference {self.difference:+.4g} [{self.low:.4g}, {self.high:.4g}] "
                f"({self.pairing}) beyond the tolerance {self.tolerance:g}")


@dataclass
class BaselineComparison:
    """What changed against a previous report: compared rows, rows added or removed, and the baseline."""

    path: str
    rows: list[DriftRow] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    not_comparable: list[str] = field(default_factory=list)
    changed_saes: list[str] = field(default_factory=list)  # SAEs whose weights' sha256 differs from the baseline's


@dataclass
class ReportFile:
    schema_version: int
    header: ReportHeader
    evidence: list[Evidence]
    not_applicable: list[NotApplicable] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    baseline: BaselineComparison | None = None
    facts: list[SubjectFact] = field(default_factory=list)  # the subjects' properties beside GPT-2's (not verdicts)


# ---------------------------------------------------------------- JSON Schema from the types


def _schema_of(tp: Any, defs: dict[str, dict]) -> dict:
    origin = typing.get_origin(tp)
    if tp is Any or tp is dict or tp is object:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:  # NaN and inf are written as null: JSON has no such numbers (json_safe)
        return {"type": ["number", "null"]}
    if tp is str:
        return {"type": "string"}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a, defs) for a in typing.get_args(tp)]}
    if origin is list or origin is tuple:
        args = typing.get_args(tp)
        return {"type": "array", "items": _schema_of(args[0], defs) if args else {}}
    if origin is dict:
        args = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _schema_of(args[1], defs) if args else {}}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            fields = dataclasses.fields(tp)
            required = [f.name for f in fields
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            defs[name] = {"type": "object", "description": (tp.__doc__ or name).strip().splitlines()[0],
                          "properties": {f.name: _schema_of(hints[f.name], defs) for f in fields},
                          "required": required, "additionalProperties": False}
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for type {tp!r}")


def json_schema() -> dict:
    """The JSON Schema of report.json, generated from ReportFile and the types it holds."""
    defs: dict[str, dict] = {}
    root = _schema_of(ReportFile, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "sae-claims report.json",
            "$ref": root["$ref"], "$defs": defs,
            "properties": {"schema_version": {"const": SCHEMA_VERSION}}}


def validate(payload: dict) -> None:
    """Raise ReportFileError naming the first place the payload departs from the schema."""
    import jsonschema  # lazy: only where a report is validated

    version = payload.get("schema_version") if isinstance(payload, dict) else None
    if version != SCHEMA_VERSION:
        raise ReportFileError(f"report schema version {version!r}, this saeclaims reads version {SCHEMA_VERSION}; "
                              "regenerate the baseline with this version (pytest claims -m gpu)")
    try:
        jsonschema.validate(payload, json_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ReportFileError(f"not a valid sae-claims report at {where}: {exc.message}") from None


# ---------------------------------------------------------------- typed loading


def _from(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if value is None:
        return math.nan if tp is float else None  # a float written as null was NaN or inf (json_safe)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is not type(None):
                return _from(arg, value)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_from(arg, v) for v in value]
    if origin is dict:
        arg = (typing.get_args(tp) or (str, Any))[1]
        return {k: _from(arg, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: _from(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value})
    if tp is float:
        return float(value)
    return value


def migrate(payload: dict) -> dict:
    """A report of an older schema version brought to this one, in place (a newer or unknown one is left for
    `validate` to refuse by name)."""
    if payload.get("schema_version") == 1:
        rows = [*payload.get("evidence", []), *payload.get("not_applicable", [])]
        rows += (payload.get("baseline") or {}).get("rows", [])
        for row in rows:
            if isinstance(row, dict) and "hook" in row:
                row["sae_id"] = row.pop("hook")
        payload["schema_version"] = 2
    return payload


def load_report(path: Path) -> ReportFile:
    """A report.json, validated, as typed objects."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportFileError(f"{path} is not a sae-claims report.json: {exc}") from None
    if not isinstance(payload, dict) or "evidence" not in payload:
        raise ReportFileError(f"{path} is not a sae-claims report.json (no evidence rows)")
    validate(migrate(payload))
    return _from(ReportFile, payload)


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float as None: Python writes them as bare `NaN`/`Infinity`, which
    is not JSON, and other readers (jq, JavaScript, jsonschema tools) refuse the whole file."""
    if isinstance(value, float) or getattr(getattr(value, "dtype", None), "kind", "") == "f":  # numpy's too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dump(report: ReportFile) -> str:
    payload = json_safe(dataclasses.asdict(report))
    validate(payload)
    return json.dumps(payload, indent=2, sort_keys=True, default=float, allow_nan=False) + "\n"


def main() -> int:
    """`python -m saeclaims.schema > src/saeclaims/report.schema.json` regenerates the shipped schema."""
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
