"""The split of a run into shards (shards.py): parsing K/N, the blocks of SAEs, and where each row goes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saeclaims.shards import ShardError, ShardPlan, ShardSpec


@pytest.mark.parametrize(("text", "k", "n"), [("1/1", 1, 1), ("2/3", 2, 3), (" 3 / 3 ", 3, 3), ("10/12", 10, 12)])
def test_a_shard_is_k_of_n(text, k, n):
    assert ShardSpec.parse(text) == ShardSpec(k, n)
    assert str(ShardSpec(k, n)) == f"{k}/{n}"


@pytest.mark.parametrize(("text", "says"), [
    ("0/3", "K counts the shards from 1 to N=3"),
    ("4/3", "K counts the shards from 1 to N=3"),
    ("1/0", "N is the number of shards, a positive integer"),
    ("-1/3", "is not K/N"),
    ("1.5/3", "is not K/N"),
    ("a/b", "is not K/N"),
    ("3", "is not K/N"),
    ("", "is not K/N"),
])
def test_a_bad_shard_says_what_to_give(text, says):
    with pytest.raises(ShardError, match=says.replace("(", r"\(").replace(")", r"\)")):
        ShardSpec.parse(text)


IDS = {"organism": ["a0", "a1", "a2", "a3", "a4"], "other": ["b0", "b1"]}


def test_saes_are_cut_into_contiguous_blocks_as_equal_as_they_can_be():
    plan = ShardPlan.make(3, IDS)
    held = {k: [(s, i) for s in IDS for i in plan.sae_ids_of(k, s)] for k in (1, 2, 3)}
    assert held == {1: [("organism", "a0"), ("organism", "a1"), ("organism", "a2")],
                    2: [("organism", "a3"), ("organism", "a4")],
                    3: [("other", "b0"), ("other", "b1")]}


def test_one_shard_holds_everything():
    plan = ShardPlan.make(1, IDS)
    assert all(plan.shard_of_sae(s, i) == 1 for s, ids in IDS.items() for i in ids)


def test_rows_go_with_their_saes_and_rows_over_several_go_with_the_subjects_first():
    plan = ShardPlan.make(4, IDS)  # organism a0 a1 | a2 a3 | a4 b0 | b1
    assert plan.shard_of_row("organism", "a3", per_sae=True) == 2
    assert plan.shard_of_row("other", "b1", per_sae=True) == 4
    assert plan.shard_of_row("organism", "resid_pre", per_sae=False) == 1  # a layer contrast: a0's shard
    assert plan.shard_of_row("other", "model", per_sae=False) == 3  # b0 is in shard 3
    assert plan.shard_of_row("organism", "no-hook", per_sae=True) == 1  # not an SAE id: the subject's first
    assert plan.shard_of_row(None, "model", per_sae=False) == 1  # reference data: shard 1
    assert plan.shard_of_row("unknown", "x", per_sae=True) == 1
    assert plan.shard_of_sae("organism", "zz") is None


def test_more_shards_than_saes_is_refused_naming_how_many_there_are():
    with pytest.raises(ShardError, match=r"this run has 7 SAEs to split \(organism: 5, other: 2\), so at most 7 "
                                         r"shards; give N <= 7"):
        ShardPlan.make(8, IDS)
    assert ShardPlan.make(7, IDS).count == 7


def test_a_run_without_saes_is_one_shard():
    assert ShardPlan.make(1, {"organism": []}).model_shard("organism") == 1
    with pytest.raises(ShardError, match="at most 1 shards"):
        ShardPlan.make(2, {"organism": []})


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 9), min_size=1, max_size=4), n=st.integers(1, 12))
def test_every_sae_is_in_exactly_one_shard_and_no_shard_is_empty(sizes, n):
    ids = {f"s{j}": [f"h{i}" for i in range(m)] for j, m in enumerate(sizes)}
    total = sum(sizes)
    if n > max(1, total):
        with pytest.raises(ShardError):
            ShardPlan.make(n, ids)
        return
    plan = ShardPlan.make(n, ids)
    held = [sum(len(plan.sae_ids_of(k, s)) for s in ids) for k in range(1, n + 1)]
    assert sum(held) == total
    if total:
        assert min(held) >= 1 and max(held) - min(held) <= 1
