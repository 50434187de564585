"""When a claim does not apply to a subject or hook: the shared checks, each skipping with its reason."""

from __future__ import annotations

from collections.abc import Callable

from .subjects import Subject

Skip = Callable[[str, str, str, str], None]


def needs_hook(subject: Subject, hook: str, claim_id: str, skip: Skip) -> None:
    if hook == "n/a":
        skip(claim_id, subject.name, hook, "the subject has no SAE at this claim's hooks")


def needs_positions(subject: Subject, hook: str, claim_id: str, skip: Skip) -> None:
    if not subject.has_learned_positions:
        skip(claim_id, subject.name, hook, f"the model's positions are "
             f"{subject.model.cfg.positional_embedding_type}, not a learned absolute W_pos")


def needs_beyond_context(subject: Subject, hook: str, claim_id: str, skip: Skip) -> None:
    needs_hook(subject, hook, claim_id, skip)
    ctx = subject.context_sizes[hook]
    if subject.seq_len <= ctx + 1:
        skip(claim_id, subject.name, hook,
             f"--seq-len {subject.seq_len} leaves no position beyond the SAE's training context {ctx}: "
             f"raise it above {ctx + 1}")
