"""One report from the shards of a run (`python -m saeclaims merge DIR... --out DIR`).

Each shard (`--sae-shard K/N`) writes, beside its own partial REPORT.md, `report/shard.json`: everything its
run collected (rows, replicates, figure series, facts, outcomes, the drift against a baseline) and what it
must share with the other shards to be part of the same run. The merge checks that the shards are of one
run, refusing in one line that names the first difference, then writes REPORT.md, report.json, replicates and
figures with the same writer a single run uses, so the merged rows are the single run's rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .baseline import row_key
from .preflight import PublishedCheck
from .schema import SCHEMA_VERSION, BaselineComparison, DriftRow, ReportHeader, ShardRecord, _from
from .store import EvidenceStore, Outcome

SHARD_FILE = "shard.json"
SHARD_FORMAT = 1
# options that may differ between the shards of one run: where each writes, how it talks, the device it was
# given (shards of one sweep may run on other machines), and paths whose contents are compared instead
LOCAL_OPTIONS = frozenset({"report", "write_report", "shard", "progress", "verbosity", "project_dir", "ledger_dir",
                           "ledger_dir_given", "text_file", "baseline", "device"})
# what two shards must agree on about a subject (the device it ran on and its provenance's paths may differ)
SUBJECT_FIELDS = ("model", "release", "sae_ids", "context_sizes", "n_ctx", "n_seqs", "seq_len",
                  "full_context_sae_ids", "tokens_sha256", "sae_sha256")


class MergeError(ValueError):
    """Shards that are not of one run, or not all of it; the message names the first difference."""


@dataclass
class ShardFile:
    """One shard's report/shard.json, read back."""

    where: str  # the folder it was read from (for messages)
    index: int
    count: int
    plan: list[list[str]]
    header: ReportHeader
    store: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    baseline: BaselineComparison | None = None
    baseline_sha256: str = ""
    ledger_sha256: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def name(self) -> str:
        return f"shard {self.index}/{self.count} ({self.where})"


def file_sha256(path: Path | None) -> str:
    """sha256 of a file's bytes; '' when there is no such file."""
    if path is None or not Path(path).is_file():
        return ""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shard_payload(index: int, count: int, plan: list[tuple[str, str]], header: ReportHeader, store: EvidenceStore,
                  baseline_sha256: str, ledger_sha256: dict[str, str]) -> str:
    """The text of a shard's report/shard.json (NaN kept as NaN: the merge reads it back with Python)."""
    return json.dumps({
        "format": SHARD_FORMAT, "schema_version": SCHEMA_VERSION, "index": index, "count": count,
        "plan": [list(u) for u in plan], "header": asdict(header), "store": json.loads(store.to_json()),
        "outcomes": [asdict(o) for o in store.outcomes.values()],
        "baseline": None if store.baseline is None else asdict(store.baseline),
        "baseline_sha256": baseline_sha256, "ledger_sha256": ledger_sha256,
    }, indent=1)


def find_shard_file(where: Path) -> Path:
    """A shard's shard.json from its report folder (DIR/report/shard.json), its REPORT.md or the file itself."""
    where = Path(where)
    for p in (where, where / "report" / SHARD_FILE, where / SHARD_FILE, where.parent / "report" / SHARD_FILE):
        if p.is_file() and p.name == SHARD_FILE:
            return p
    raise MergeError(f"{where}: no shard report here (expected {where / 'report' / SHARD_FILE}, written by a run "
                     "with --sae-shard K/N)")


def load_shard(where: Path) -> ShardFile:
    path = find_shard_file(where)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MergeError(f"{path} is not a shard report: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != SHARD_FORMAT:
        raise MergeError(f"{path}: shard file format {raw.get('format') if isinstance(raw, dict) else None!r}, this "
                         f"saeclaims merges format {SHARD_FORMAT}; rerun the shard with this version")
    try:
        return ShardFile(
            where=str(where), index=int(raw["index"]), count=int(raw["count"]), plan=raw["plan"],
            header=_from(ReportHeader, raw["header"]), store=raw["store"],
            outcomes=[Outcome(**o) for o in raw.get("outcomes", [])],
            baseline=None if raw.get("baseline") is None else _from(BaselineComparison, raw["baseline"]),
            baseline_sha256=raw.get("baseline_sha256", ""), ledger_sha256=raw.get("ledger_sha256", {}),
            schema_version=int(raw.get("schema_version", -1)))
    except (KeyError, TypeError, ValueError) as exc:
        raise MergeError(f"{path} is not a complete shard report ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------- one run?


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two JSON-like values first differ, and how ("organism.model: 'x' vs 'y'"; NaN equals NaN), or
    None when they are equal."""
    at = f"{where}: " if where else ""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where + '.' if where else ''}{k} is only in one"
            d = _first_difference(a[k], b[k], f"{where + '.' if where else ''}{k}")
            if d is not None:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{at}{len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{where + '.' if where else ''}{i}")
            if d is not None:
                return d
        return None
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return None if same else f"{at}{a!r} vs {b!r}"


def _identity(s: ShardFile) -> dict[str, Any]:
    """What every shard of one run shares, by what it is called in a refusal."""
    h = s.header
    return {
        "schema version": s.schema_version,
        "shard count": s.count,
        "seed": h.seed,
        "options": {k: v for k, v in h.options.items() if k not in LOCAL_OPTIONS},
        "package versions": dict(h.versions, python=h.python),
        "git commit": h.git_commit,
        "precision": [h.dtype, h.precision],
        "claim family": {"claims": s.store.get("claims", []), "family_size": s.store.get("family_size"),
                         "family_confidence": h.family_confidence},
        "ledgers": s.ledger_sha256,
        "baseline": s.baseline_sha256,
        "split": s.plan,
    }


def check_one_run(shards: list[ShardFile]) -> None:
    """Refuse, in one line naming the first difference, shards that are not all of one run."""
    if not shards:
        raise MergeError("no shard reports given; name each shard's report folder")
    first = shards[0]
    mine = _identity(first)
    for other in shards[1:]:
        theirs = _identity(other)
        for what in mine:
            d = _first_difference(mine[what], theirs[what])
            if d is not None:
                raise MergeError(f"{other.name} is not of the same run as {first.name}: they differ in {what} "
                                 f"({d})")
    subjects: dict[str, tuple[ShardFile, dict]] = {}  # a shard records the subjects it loaded (those it holds)
    for s in shards:
        for name, rec in s.header.subjects.items():
            fields = {f: getattr(rec, f) for f in SUBJECT_FIELDS}
            if name not in subjects:
                subjects[name] = (s, fields)
                continue
            d = _first_difference({name: subjects[name][1]}, {name: fields})
            if d is not None:
                raise MergeError(f"{s.name} is not of the same run as {subjects[name][0].name}: they differ in "
                                 f"subjects ({d})")
    seen: dict[int, ShardFile] = {}
    for s in shards:
        if s.index in seen:
            raise MergeError(f"shard {s.index}/{s.count} is given twice: {seen[s.index].where} and {s.where}")
        seen[s.index] = s
    missing = [k for k in range(1, first.count + 1) if k not in seen]
    if missing:
        raise MergeError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{k}/{first.count}' for k in missing)} "
                         f"missing: a merged report is of the whole run (give all {first.count} shard folders)")
    rows: dict[tuple[str, str, str], ShardFile] = {}
    for s in shards:
        for kind in ("evidence", "not_applicable"):
            for r in s.store.get(kind, []):
                key = (r["claim"], r["subject"], r["sae_id"])
                if key in rows:
                    raise MergeError(f"row {key[0]} @ {key[1]}/{key[2]} is in {rows[key].name} and in {s.name}; "
                                     "each row is judged by one shard")
                rows[key] = s


# ---------------------------------------------------------------- the merge


def merged_store(shards: list[ShardFile]) -> EvidenceStore:
    """Every shard's rows, series, facts, replicates and outcomes in one store (as xdist workers' are merged)."""
    store = EvidenceStore()
    for s in sorted(shards, key=lambda s: s.index):
        store.merge_json(json.dumps(s.store))
        store.outcomes.update({o.nodeid: o for o in s.outcomes})
    store.untested_claims = list(shards[0].store.get("untested_claims", []))
    store.baseline = merged_baseline([s.baseline for s in sorted(shards, key=lambda s: s.index)])
    return store


def merged_baseline(parts: list[BaselineComparison | None]) -> BaselineComparison | None:
    """The drift of every shard's rows against the one baseline: each shard compared its own rows (and lists
    as removed only the baseline rows it would hold), so the union is the single run's comparison."""
    given = [p for p in parts if p is not None]
    if not given:
        return None
    out = BaselineComparison(given[0].path)
    rows: list[DriftRow] = []
    for p in given:
        rows += p.rows
        out.added += p.added
        out.removed += p.removed
        out.not_comparable += p.not_comparable
    out.rows = sorted(rows, key=lambda r: row_key(r.subject, r.claim, r.sae_id))  # as compare_runs orders them
    out.added, out.removed = sorted(set(out.added)), sorted(set(out.removed))
    out.not_comparable = sorted(set(out.not_comparable))
    out.changed_saes = list(given[0].changed_saes)  # from the SAEs' sha256, the same in every shard
    return out


def merged_header(shards: list[ShardFile], command: str) -> ReportHeader:
    """The first shard's header with the run's devices, the longest shard's wall time, the largest peak memory
    and every shard's record (machine, device, wall time)."""
    ordered = sorted(shards, key=lambda s: s.index)
    h = ordered[0].header
    devices = sorted({d.strip() for s in ordered for d in s.header.device.split(",") if d.strip()} - {"none"})
    given = list(h.options.get("subjects", []))  # a shard records only the subjects it loaded: the union, in
    names = sorted({n for s in ordered for n in s.header.subjects},  # the order the run gave them
                   key=lambda n: (given.index(n) if n in given else len(given), n))
    subjects, ledgers = {}, {}
    for name in names:
        holders = [s.header for s in ordered if name in s.header.subjects]
        rec = holders[0].subjects[name]
        seen = sorted({x.subjects[name].device for x in holders} - {""})
        subjects[name] = type(rec)(**{**asdict(rec), "device": ", ".join(seen)})
        notes = [x.ledgers[name] for x in holders if name in x.ledgers]
        if notes:
            ledgers[name] = notes[0]
    peak: dict[str, float] = {}
    for s in ordered:
        for k, v in s.header.peak_memory_mib.items():
            peak[k] = max(v, peak.get(k, 0.0))
    published: list[PublishedCheck] = []
    seen_checks = set()
    for s in ordered:
        for c in s.header.published:
            key = (c.subject, c.sae_id, c.statistic)
            if key not in seen_checks:
                seen_checks.add(key)
                published.append(c)
    records = [r for s in ordered for r in s.header.shards] or [
        ShardRecord(s.index, s.count, "", s.header.device, s.header.wall_s, s.header.command) for s in ordered]
    options = {k: v for k, v in h.options.items() if k not in ("shard", "report")}
    return ReportHeader(subjects, ", ".join(devices) or "none", h.dtype, h.seed, h.family_confidence,
                        h.family_size, max(s.header.wall_s for s in ordered), h.git_commit, h.python,
                        dict(h.versions), options, published, peak, command, ledgers, records, h.precision)


def merge(dirs: list[Path], out: Path, command: str = "") -> tuple[ReportHeader, EvidenceStore]:
    """Read, check and merge shard reports; write the merged REPORT.md (and report/) at `out`."""
    from .report import write_report  # matplotlib and numpy load only when a report is written

    shards = [load_shard(Path(d)) for d in dirs]
    check_one_run(shards)
    store = merged_store(shards)
    header = merged_header(shards, command)
    write_report(out, header, store)
    return header, store


def main(argv: list[str] | None = None) -> int:
    """`python -m saeclaims merge DIR... --out DIR`: exit 0 with the path written, 2 with one line saying why
    the shards cannot be merged."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m saeclaims merge",
                                     description="Merge the reports of a run's shards (--sae-shard K/N) into one.")
    parser.add_argument("shards", nargs="+", type=Path, help="each shard's report folder (where its REPORT.md is)")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder of the merged REPORT.md and report/ (or the REPORT.md path itself)")
    args = parser.parse_args(argv)
    out = args.out if args.out.suffix.lower() == ".md" else args.out / "REPORT.md"
    command = shlex.join(["python", "-m", "saeclaims", "merge", *(argv if argv is not None else sys.argv[2:])])
    try:
        header, store = merge(args.shards, out, command)
    except MergeError as exc:
        print(f"saeclaims merge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"saeclaims merge: could not write {out} ({exc}); the last report there is left as it was",
              file=sys.stderr)
        return 2
    print(f"saeclaims merge: wrote {out} from {len(header.shards)} shards ({len(store.evidence)} evidence rows, "
          f"{len(store.not_applicable)} not applicable)")
    return 0

