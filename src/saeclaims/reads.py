"""What a run's selected claim tests read from the splice measurements, per SAE id, so that the run splices
those variants and no others: every variant costs an SAE pass, a suffix run through the layers after the hook
and a pass over the vocabulary (on the organism, `token_then_pos` at the four hooks no claim reads it at was
8% of the main command).

A claim test declares what it reads in its marker: `@pytest.mark.claim("id", reads=("sae", "shift_pos"))`.
Without `reads` it reads every variant (nothing changes for claims written before). A read of a variant the
markers did not declare is measured when it happens, in a pass of its own, with a warning (`Workbench`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ALWAYS = ("sae",)  # the report's series (loss and L0 by position, recoveries) read the SAE at every hook


def reads_problem(reads: object) -> str | None:
    """Why a marker's `reads=` is not a list of known variant names, or None when it is."""
    if reads is None:
        return None
    from .variants import REGISTRY  # imports torch: only once a claim test declares reads

    if isinstance(reads, str) or not isinstance(reads, (tuple, list, set, frozenset)):
        return f"reads={reads!r} must be a tuple of variant names, e.g. reads=('sae', 'shift_pos')"
    unknown = [r for r in reads if r not in REGISTRY]
    if unknown:
        return f"reads names unknown variants {unknown}; known: {', '.join(REGISTRY)}"
    return None


@dataclass
class VariantReads:
    """One subject's reads: SAE id -> the variants read there, or None where some test reads every variant."""

    by_id: dict[str, frozenset[str] | None] = field(default_factory=dict)

    def add(self, sae_ids: Iterable[str], reads: Iterable[str] | None) -> None:
        for i in sae_ids:
            have = self.by_id.get(i, frozenset())
            self.by_id[i] = None if reads is None or have is None else have | frozenset(reads)

    def variants_for(self, sae_id: str, offered: Sequence[str]) -> list[str]:
        """Of the variants a run offers, those read at `sae_id`, and ALWAYS."""
        read = self.by_id.get(sae_id, frozenset())
        return [v for v in offered if read is None or v in read or v in ALWAYS]
