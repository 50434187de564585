"""A claim test's marker, `@pytest.mark.claim("id", reads=(...), reference=None)`, as one typed record.

The session checks every marker once at the end of collection (one usage error listing all problems) and
keeps the parsed record in the item's stash; everything after (reads, loading, the fixture) reads that.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class ClaimMarker:
    """What a claim test declares (id, reads, reference) and the row it was parametrised to."""

    id: str
    reads: tuple[str, ...] | None = None  # the splice variants it reads; None: every variant
    reference: str | None = None  # judged on this reference data instead of a subject
    subject: str = ""  # the parametrised subject (the reference's name for a reference test)
    sae_id: str = ""  # the parametrised row: an SAE id, or the scope's single row


CLAIM_MARKER = pytest.StashKey[ClaimMarker]()


def claim_id(mark: pytest.Mark | None) -> str | None:
    """The claim id a `claim` mark names (None: no mark, or a mark without an id)."""
    return mark.args[0] if mark is not None and mark.args else None


def parsed(item: pytest.Item) -> ClaimMarker | None:
    """The item's checked claim marker (None: not a claim test, or collection refused it)."""
    return item.stash.get(CLAIM_MARKER, None)


def record(item: pytest.Item, mark: pytest.Mark, params: dict) -> ClaimMarker:
    """Parse a checked mark with the item's parameters and keep it in the item's stash."""
    reads = mark.kwargs.get("reads")
    marker = ClaimMarker(id=mark.args[0], reads=None if reads is None else tuple(reads),
                         reference=mark.kwargs.get("reference"), subject=params["sae_subject"],
                         sae_id=params["sae_hook"])
    item.stash[CLAIM_MARKER] = marker
    return marker
