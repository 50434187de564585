"""Claims that do not apply skip with a reason the report can list."""

import pytest

from saeclaims.applicability import needs_beyond_context, needs_hook, needs_positions
from tests.conftest import tiny_model, tiny_subject


class Skipped(Exception):
    pass


def record(claim, subject, hook, reason):
    raise Skipped(reason)


def test_seq_len_not_beyond_the_context_says_so():
    s = tiny_subject(ctx=8, seq_len=9)
    with pytest.raises(Skipped, match="--seq-len 9 leaves no position beyond the SAE's training context 8"):
        needs_beyond_context(s, "blocks.0.hook_resid_pre", "beyond-context-degrades", record)
    needs_beyond_context(tiny_subject(ctx=8, seq_len=12), "blocks.0.hook_resid_pre", "x", record)


def test_no_learned_positions_and_no_hook():
    s = tiny_subject()
    s.model = tiny_model(positional="rotary")
    with pytest.raises(Skipped, match="rotary, not a learned absolute W_pos"):
        needs_positions(s, "blocks.0.hook_resid_pre", "wpos-helix", record)
    with pytest.raises(Skipped, match="no SAE at this claim's hooks"):
        needs_hook(s, "n/a", "layer0-error-is-positional", record)
