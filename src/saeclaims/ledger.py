"""Expected verdicts per subject, from `claims/expected/<subject>.toml`.

A claim with no entry is expected to hold. An expected `refuted` is a finding, and keeping it in the
ledger turns the suite into a regression check when an SAE release changes.

Format::

    [_drafted]                              # the sample the verdicts were drafted at
    n_seqs = 128
    seq_len = 512

    [beyond-context-degrades]
    default = "holds"                       # optional, for every hook
    "blocks.0.hook_resid_pre" = "refuted"   # per hook (or "model" for model-level claims)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import CATALOG, Catalog
from .schema import migrate
from .stats import VERDICTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class LedgerError(ValueError):
    """The ledger names an unknown claim or verdict, or cannot be parsed."""


DRAFTED = "_drafted"


@dataclass(frozen=True)
class Sample:
    """The evaluation sample a verdict was judged at: a ledger drafted at one size is exact only there."""

    n_seqs: int
    seq_len: int

    def __str__(self) -> str:
        return f"{self.n_seqs} sequences x {self.seq_len} tokens"


@dataclass
class Ledger:
    subject: str
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None
    drafted_at: Sample | None = None

    def expected(self, claim: str, sae_id: str) -> str:
        entry = self.entries.get(claim, {})
        return entry.get(sae_id, entry.get("default", "holds"))

    def agreement(self, verdict: str, expected: str, sample: Sample | None) -> str:
        """`ok`, `MISMATCH`, or `differs`: at a sample size other than the ledger's, only a contradiction
        (holds against refuted) is a mismatch; a difference that involves `inconclusive` is not, since
        fewer sequences give wider intervals."""
        if verdict == expected:
            return "ok"
        other_size = self.drafted_at is not None and sample is not None and sample != self.drafted_at
        if other_size and "inconclusive" in (verdict, expected):
            return "differs"
        return "MISMATCH"

    def check_rows(self, rows: dict[str, list[str]], hook_of: Callable[[str], str] | None = None) -> None:
        """Every key must name a row the claim has on this subject (or be `default`), so a typo in a
        hook name cannot silently leave a verdict unchecked. Rows are SAE ids; a hook name stands for the
        one SAE that reads it (rewritten to its id here), and is an error when several SAEs read it."""
        for claim, table in self.entries.items():
            known = rows.get(claim, [])
            for key in list(table):
                if key == "default" or key in known or hook_of is None:
                    continue
                readers = [r for r in known if _safe_hook(hook_of, r) == key]
                if len(readers) > 1:
                    raise LedgerError(f"ledger {self.path}: [{claim}] names hook {key!r}, which {len(readers)} SAEs "
                                      f"read ({', '.join(readers)}); key the verdicts by SAE id instead")
                if len(readers) == 1 and readers[0] not in table:
                    table[readers[0]] = table.pop(key)
            for key in table:
                if key != "default" and key not in known:
                    raise LedgerError(f"ledger {self.path}: [{claim}] names {key!r}, which is not a row of this "
                                      f"claim on subject {self.subject} (rows: {', '.join(known) or 'none'}); "
                                      "fix the key or remove it")


def _safe_hook(hook_of: Callable[[str], str], row: str) -> str | None:
    try:
        return hook_of(row)
    except (KeyError, ValueError):
        return None


def ledger_file(directory: Path, subject: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", subject)
    return directory / f"{safe}.toml"


def load_ledger(directory: Path, subject: str, catalog: Catalog = CATALOG) -> Ledger:
    path = ledger_file(directory, subject)
    if not path.exists():
        return Ledger(subject, {}, None)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LedgerError(f"ledger {path} is not valid TOML: {exc}") from exc
    entries: dict[str, dict[str, str]] = {}
    drafted = raw.pop(DRAFTED, None)
    drafted_at = None
    if drafted is not None:
        try:
            drafted_at = Sample(int(drafted["n_seqs"]), int(drafted["seq_len"]))
        except (KeyError, TypeError, ValueError):
            raise LedgerError(f"ledger {path}: [{DRAFTED}] needs integer n_seqs and seq_len") from None
    for claim, table in raw.items():
        if claim not in catalog:
            raise LedgerError(f"ledger {path} names unknown claim {claim!r}; register it or remove the table "
                              f"(registered: {', '.join(catalog.ids) or 'none'})")
        if not isinstance(table, dict):
            raise LedgerError(f"ledger {path}: [{claim}] must be a table of hook = verdict")
        for hook, verdict in table.items():
            if verdict not in VERDICTS:
                raise LedgerError(f"ledger {path}: {claim}.{hook} = {verdict!r} is not a verdict "
                                  f"({', '.join(VERDICTS)})")
        entries[claim] = dict(table)
    return Ledger(subject, entries, path, drafted_at)


def draft(evidence: list[dict], subject: str, catalog: Catalog = CATALOG, sample: Sample | None = None,
          seed: int | None = None, family_confidence: float | None = None) -> str:
    """A ledger recording the verdicts of a run, each with the estimate and interval it came from.

    Meant to be reviewed before it is committed: it turns a run's findings into expectations, so a
    later run that disagrees fails. Claims that hold need no entry; they are listed as comments.
    """
    lines = [f"# Expected verdicts for subject {subject!r}; a claim with no entry is expected to hold.",
             "# Drafted from a run's report.json by `python -m saeclaims.ledger`, then reviewed.", ""]
    if sample is not None:
        lines += [f"[{DRAFTED}]", f"n_seqs = {sample.n_seqs}", f"seq_len = {sample.seq_len}"]
        lines += [f"seed = {seed}"] if seed is not None else []
        lines += [f"family_confidence = {family_confidence}"] if family_confidence is not None else []
        lines.append("")
    by_claim: dict[str, list[dict]] = {}
    for e in evidence:
        if e["subject"] == subject:
            by_claim.setdefault(e["claim"], []).append(e)
    for claim in [*catalog.ids, *(c for c in by_claim if c not in catalog)]:
        for e in by_claim.get(claim, []):
            if e["verdict"] == "holds":
                continue
            if f"[{claim}]" not in lines:
                lines += [f"[{claim}]"]
            lines.append(f'"{e["sae_id"]}" = "{e["verdict"]}"  # {e["estimate"]:.4g} '
                         f'[{e["ci_low"]:.4g}, {e["ci_high"]:.4g}] at {e["confidence"]:.2%}, '
                         f'claim {e["direction"]} {e["threshold"]:g}')
        if f"[{claim}]" in lines:
            lines.append("")
    held = [f"{e['claim']} @ {e['sae_id']}: {e['estimate']:.4g} [{e['ci_low']:.4g}, {e['ci_high']:.4g}]"
            for es in by_claim.values() for e in es if e["verdict"] == "holds"]
    lines += ["# Recorded as holding (no entry needed):"] + [f"#   {h}" for h in held]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m saeclaims.ledger", description="draft a ledger from a run")
    p.add_argument("report_json", type=Path)
    p.add_argument("--subject", default="organism")
    args = p.parse_args(argv)
    payload = migrate(json.loads(args.report_json.read_text()))
    subj = payload.get("header", {}).get("subjects", {}).get(args.subject, {})
    sample = Sample(subj["n_seqs"], subj["seq_len"]) if "n_seqs" in subj else None
    header = payload.get("header", {})
    sys.stdout.write(draft(payload["evidence"], args.subject, sample=sample, seed=header.get("seed"),
                           family_confidence=header.get("family_confidence")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
