"""The open claims catalogue: what a claim says, where it was said, its statistic and its threshold.

Anyone registers claims (`register_claim`, from a conftest or a test module); the claim tests name them
in their `claim` marker. Thresholds live in the registered claim and nowhere else: they come from the
claim's words ("most" is more than half, "an order of magnitude" a factor of 10); a refuted claim is
recorded in the ledger, never fixed by moving its threshold.

Scopes are one vocabulary shared by the catalogue, the marker and the report: a scope either selects
SAEs (one test and one row per SAE id, usually its hook name) or names a single row per subject ("model").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

DIRECTIONS = (">", ">=", "<", "<=")
NO_HOOK = "no-hook"  # the one row of a per-SAE claim on a subject with no SAE in its scope (not applicable)
CLAIM_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class ClaimError(ValueError):
    """A claim is unknown, registered twice, or malformed; the message says what and how to fix it."""


class HookListing(Protocol):
    """What a scope reads of a subject without loading it (see `subjects.describe_subject`): the SAE ids
    (`hooks`; equal to hook names unless several SAEs read one hook), the ids with a control, and the hook
    each id reads."""

    sae_ids: list[str]
    full_context_sae_ids: list[str]

    def hook_of(self, sae_id: str) -> str: ...


@dataclass(frozen=True)
class Scope:
    """Which rows a claim has on a subject: one per selected hook, or one (`row`) per subject."""

    name: str
    description: str
    select: Callable[[HookListing], list[str]] | None = None
    row: str | None = None

    def rows(self, info: HookListing) -> list[str]:
        if self.select is None:
            return [self.row or "model"]
        return list(self.select(info))

    @property
    def per_hook(self) -> bool:
        return self.select is not None


def _hook(info: HookListing, sae_id: str) -> str:
    return info.hook_of(sae_id) if hasattr(info, "hook_of") else sae_id


def _layer(info: HookListing, sae_id: str) -> int | None:
    m = re.match(r"^blocks\.(\d+)\.", _hook(info, sae_id))
    return int(m.group(1)) if m else None


def _resid_pre(info: HookListing) -> list[str]:
    return [i for i in info.sae_ids if _hook(info, i).endswith("hook_resid_pre")]


SCOPES: dict[str, Scope] = {}


def register_scope(scope: Scope) -> Scope:
    """Add a scope to the vocabulary (e.g. a user's own hook selection)."""
    if scope.name in SCOPES and SCOPES[scope.name] != scope:
        raise ClaimError(f"scope {scope.name!r} is already registered with another meaning; pick another name")
    SCOPES[scope.name] = scope
    return scope


for _s in (
    Scope("all", "per SAE", lambda i: list(i.sae_ids)),
    Scope("resid_pre", "per resid_pre SAE", _resid_pre),
    Scope("resid_pre0", "resid_pre 0", lambda i: [h for h in _resid_pre(i) if _layer(i, h) == 0]),
    Scope("later_resid_pre", "resid_pre L >= 1",
          lambda i: [h for h in _resid_pre(i) if (_layer(i, h) or 0) >= 1]),
    Scope("full_context", "per SAE with a full-context SAE", lambda i: list(i.full_context_sae_ids)),
    Scope("across_resid_pre", "across resid_pre hooks", None, "resid_pre"),
    Scope("model", "the model", None, "model"),
):
    register_scope(_s)


@dataclass(frozen=True)
class Claim:
    """One claim: the words, where they were said, and the statistic and threshold the words imply.

    `references` names fixed reference data sets the claim is also judged on (e.g. GPT-2 small's
    released W_pos); each adds one row to the family of intervals. `tolerance` is the smallest change of
    the statistic that matters in practice when a new release is compared with a baseline run (default: a
    tenth of the threshold's magnitude, since a change that size can carry a verdict across it).
    """

    id: str
    family: str
    source: str
    url: str
    words: str
    statistic: str
    direction: str
    threshold: float
    why: str
    scope: str = "all"
    references: tuple[str, ...] = field(default_factory=tuple)
    tolerance: float | None = None  # practical size of a change that counts as drift (--baseline)
    tolerance_why: str = ""
    figures: tuple[str, ...] = field(default_factory=tuple)  # report figures shown with it (figures.py names)
    # why the claim's instrument cannot tell its words holding from failing (its planted controls get one verdict);
    # such a claim is not applicable on every subject, with this reason, until a valid instrument replaces it
    failed_validation: str = ""

    def __post_init__(self) -> None:
        if not CLAIM_ID.match(self.id):
            raise ClaimError(f"claim id {self.id!r} must be lower-case letters, digits, '-', '_' or '.'")
        if self.direction not in DIRECTIONS:
            raise ClaimError(f"claim {self.id}: direction {self.direction!r} is not one of {DIRECTIONS}")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise ClaimError(f"claim {self.id}: threshold {self.threshold!r} must be a finite number")
        if self.scope not in SCOPES:
            raise ClaimError(f"claim {self.id}: scope {self.scope!r} matches no hooks; use one of "
                             f"{', '.join(SCOPES)} or register_scope(...) your own")
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "figures", tuple(self.figures))
        if self.tolerance is not None and not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ClaimError(f"claim {self.id}: tolerance {self.tolerance!r} must be a finite number >= 0")

    @property
    def drift_tolerance(self) -> float:
        return self.tolerance if self.tolerance is not None else 0.1 * abs(self.threshold)

    @property
    def drift_tolerance_why(self) -> str:
        if self.tolerance is not None:
            return self.tolerance_why or "set with the claim"
        return "a tenth of the threshold's magnitude (default): a change that size can carry a verdict across it"

    @property
    def scope_info(self) -> Scope:
        return SCOPES[self.scope]

    def rows(self, info: HookListing) -> list[str]:
        """The rows (hooks, or the scope's single row) this claim has on a subject."""
        return self.scope_info.rows(info)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> Claim:
        """The claim `to_dict` wrote (JSON turns its tuples into lists; the constructor turns them back)."""
        return cls(**fields)


class Catalog:
    """Registered claims by id, in registration order."""

    def __init__(self, claims: Sequence[Claim] = ()) -> None:
        self._claims: dict[str, Claim] = {}
        for c in claims:
            self.register(c)

    def register(self, claim: Claim) -> Claim:
        old = self._claims.get(claim.id)
        if old is not None and old != claim:
            raise ClaimError(f"claim {claim.id!r} is registered twice with different definitions; "
                             "give the second one another id")
        self._claims[claim.id] = claim
        return claim

    def get(self, claim_id: str) -> Claim:
        try:
            return self._claims[claim_id]
        except KeyError:
            raise ClaimError(f"unknown claim {claim_id!r}; register it with saeclaims.register_claim(...) "
                             f"(registered: {', '.join(self._claims) or 'none'})") from None

    def __contains__(self, claim_id: object) -> bool:
        return claim_id in self._claims

    def __iter__(self) -> Iterator[Claim]:
        return iter(list(self._claims.values()))

    def __len__(self) -> int:
        return len(self._claims)

    @property
    def ids(self) -> list[str]:
        return list(self._claims)


CATALOG = Catalog()


def register_claim(claim: Claim | None = None, /, **fields) -> Claim:
    """Register a claim in the catalogue the pytest plugin judges against; returns it.

    `register_claim(Claim(...))` or `register_claim(id=..., words=..., ...)`. Registering the same
    definition again is harmless; another definition under a registered id is an error.
    """
    if claim is None:
        claim = Claim(**fields)
    elif fields:
        raise ClaimError("register_claim takes a Claim or keyword fields, not both")
    return CATALOG.register(claim)
