"""Expected verdicts per subject, from `claims/expected/<subject>.toml`.

A claim with no entry is expected to hold. An expected `refuted` is a finding, and keeping it in the
ledger turns the suite into a regression check when an SAE release changes.

Format::

    [beyond-context-degrades]
    default = "holds"                       # optional, for every hook
    "blocks.0.hook_resid_pre" = "refuted"   # per hook (or "model" for model-level claims)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import CLAIMS
from .stats import VERDICTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class LedgerError(ValueError):
    """The ledger names an unknown claim or verdict, or cannot be parsed."""


@dataclass
class Ledger:
    subject: str
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None

    def expected(self, claim: str, hook: str) -> str:
        entry = self.entries.get(claim, {})
        return entry.get(hook, entry.get("default", "holds"))


def ledger_file(directory: Path, subject: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", subject)
    return directory / f"{safe}.toml"


def load_ledger(directory: Path, subject: str) -> Ledger:
    path = ledger_file(directory, subject)
    if not path.exists():
        return Ledger(subject, {}, None)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LedgerError(f"ledger {path} is not valid TOML: {exc}") from exc
    entries: dict[str, dict[str, str]] = {}
    for claim, table in raw.items():
        if claim not in CLAIMS:
            raise LedgerError(f"ledger {path} names unknown claim {claim!r}; known: {', '.join(CLAIMS)}")
        if not isinstance(table, dict):
            raise LedgerError(f"ledger {path}: [{claim}] must be a table of hook = verdict")
        for hook, verdict in table.items():
            if verdict not in VERDICTS:
                raise LedgerError(f"ledger {path}: {claim}.{hook} = {verdict!r} is not a verdict "
                                  f"({', '.join(VERDICTS)})")
        entries[claim] = dict(table)
    return Ledger(subject, entries, path)
