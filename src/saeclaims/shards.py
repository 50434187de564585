"""Splitting one claims run into N shards (`--sae-shard K/N`): which rows each shard judges.

Why: a release family outgrows one machine, and a CI matrix or a cluster job array wants to spread its SAEs
over many jobs and still read one report (`python -m saeclaims merge`) whose rows are exactly a single run's.

The split is of SAEs, not tests: each subject's SAE ids, in the order the subjects are given and the ids'
forward order, are cut into N contiguous blocks as equal as they can be, so a shard loads each model once and
measures only its block. A row goes where its SAEs are:

- a per-SAE row (one test per SAE id) goes to the shard that holds that SAE;
- a row of a scope without one row per SAE (the layer contrasts over every resid_pre SAE, a "model" row) and
  a subject's "no-hook" row go to the shard that holds the subject's first SAE, which also measures what such
  a row reads at the other SAEs (for the layer contrasts, the SAE's own splice at each resid_pre hook);
- reference rows (fixed reference data, no subject) and tests that are not claim tests go to shard 1.

The family of intervals is fixed before any selection, so every shard judges at the confidence of the full
run, and the union of the shards' rows is the full run's rows, each once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A --sae-shard value that names no shard of this run; the message says why and what to give."""


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` of `count` (1-based, as CI matrices and SLURM array ids count)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        m = SHARD.match(str(text))
        if m is None:
            raise ShardError(f"--sae-shard {text!r} is not K/N (e.g. --sae-shard 2/4: the second of four shards)")
        k, n = int(m.group(1)), int(m.group(2))
        if n < 1:
            raise ShardError(f"--sae-shard {text}: N is the number of shards, a positive integer")
        if not 1 <= k <= n:
            raise ShardError(f"--sae-shard {text}: K counts the shards from 1 to N={n}")
        return cls(k, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardPlan:
    """The run's SAEs (subject, SAE id) in order, and which shard holds each."""

    count: int
    units: tuple[tuple[str, str], ...]

    @classmethod
    def make(cls, count: int, sae_ids: Mapping[str, Sequence[str]]) -> ShardPlan:
        """`sae_ids`: each subject's SAE ids in the run's order of subjects. A shard with no SAE would judge
        nothing the others do not, so more shards than SAEs is refused."""
        units = tuple((spec, i) for spec, ids in sae_ids.items() for i in ids)
        if count > max(1, len(units)):
            per = ", ".join(f"{spec}: {len(ids)}" for spec, ids in sae_ids.items())
            raise ShardError(f"--sae-shard K/{count}: this run has {len(units)} SAEs to split ({per}), so at most "
                             f"{max(1, len(units))} shards; give N <= {max(1, len(units))}")
        return cls(count, units)

    def shard_of_sae(self, subject: str, sae_id: str) -> int | None:
        """The shard (1-based) that holds an SAE; None when the run has no such SAE."""
        return self._shard_by_unit.get((subject, sae_id))

    @functools.cached_property
    def _shard_by_unit(self) -> dict[tuple[str, str], int]:
        """Each SAE's shard, once (a run asks for every test it collects)."""
        return {u: i * self.count // len(self.units) + 1 for i, u in enumerate(self.units)}

    def model_shard(self, subject: str) -> int:
        """The shard that judges a subject's rows that are not one SAE's: the one holding its first SAE."""
        first = next((i for s, i in self.units if s == subject), None)
        return 1 if first is None else self.shard_of_sae(subject, first)

    def shard_of_row(self, subject: str | None, row: str, per_sae: bool) -> int:
        """The shard that judges a row. subject None: a reference row (shard 1); per_sae: the row is an SAE id."""
        if subject is None:
            return 1
        held = self.shard_of_sae(subject, row) if per_sae else None
        return held if held is not None else self.model_shard(subject)

    def sae_ids_of(self, index: int, subject: str) -> list[str]:
        """The SAE ids of a subject that shard `index` holds, in order."""
        return [i for s, i in self.units if s == subject and self.shard_of_sae(s, i) == index]
