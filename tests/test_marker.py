"""A claim test's marker (marker.py): the id, and the typed record collection keeps in the item's stash."""

from types import SimpleNamespace

import pytest

from saeclaims.marker import CLAIM_MARKER, ClaimMarker, claim_id, parsed, record


def test_claim_id_of_a_mark():
    assert claim_id(pytest.mark.claim("x", reads=("sae",)).mark) == "x"
    assert claim_id(pytest.mark.claim().mark) is None
    assert claim_id(None) is None


def test_record_parses_once_into_the_stash():
    item = SimpleNamespace(stash={})
    mark = pytest.mark.claim("x", reads=["sae", "zero"], reference="ref").mark
    got = record(item, mark, {"sae_subject": "organism", "sae_hook": "blocks.0.hook_resid_pre"})
    assert got == ClaimMarker("x", ("sae", "zero"), "ref", "organism", "blocks.0.hook_resid_pre")
    assert parsed(item) is got and item.stash[CLAIM_MARKER] is got
    assert parsed(SimpleNamespace(stash={})) is None
    bare = record(SimpleNamespace(stash={}), pytest.mark.claim("y").mark, {"sae_subject": "s", "sae_hook": "model"})
    assert bare.reads is None and bare.reference is None  # no reads=: every variant
