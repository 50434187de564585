"""The open catalogue: registration, validation, scopes and rows."""

from dataclasses import replace

import pytest

from saeclaims.catalog import SCOPES, Catalog, Claim, ClaimError, Scope, register_scope


def _claim(**kw) -> Claim:
    base = dict(id="my-claim", family="mine", source="notes", url="https://example.org", words="words",
                statistic="a ratio", direction=">", threshold=1.0, why="above 1", scope="all")
    return Claim(**{**base, **kw})


class Info:
    def __init__(self, hooks, full=()):
        self.sae_ids = list(hooks)
        self.full_context_sae_ids = list(full)


HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.2.hook_resid_post",
         "blocks.1.hook_mlp_out"]


@pytest.mark.parametrize(("scope", "rows"), [
    ("all", HOOKS),
    ("resid_pre", HOOKS[:3]),
    ("resid_pre0", HOOKS[:1]),
    ("later_resid_pre", HOOKS[1:3]),
    ("full_context", ["blocks.1.hook_resid_pre"]),
    ("across_resid_pre", ["resid_pre"]),
    ("model", ["model"]),
])
def test_each_scope_selects_its_rows(scope, rows):
    assert _claim(scope=scope).rows(Info(HOOKS, ["blocks.1.hook_resid_pre"])) == rows


def test_a_scope_with_no_hooks_on_a_subject_has_no_rows():
    assert _claim(scope="resid_pre0").rows(Info(["blocks.3.hook_resid_post"])) == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("scope", "layer_zero", "scope 'layer_zero' matches no hooks"),
    ("direction", "=>", "direction '=>' is not one of"),
    ("threshold", float("nan"), "must be a finite number"),
    ("threshold", "0.5", "must be a finite number"),
    ("id", "My Claim", "must be lower-case"),
])
def test_malformed_claims_are_refused(field, value, message):
    with pytest.raises(ClaimError, match=message):
        _claim(**{field: value})


def test_duplicates_unknown_ids_and_idempotent_registration():
    cat = Catalog()
    c = cat.register(_claim())
    assert cat.register(_claim()) is not None and len(cat) == 1  # the same definition again is harmless
    with pytest.raises(ClaimError, match="registered twice with different definitions"):
        cat.register(replace(c, threshold=2.0))
    with pytest.raises(ClaimError, match=r"unknown claim 'nope'.*registered: my-claim"):
        cat.get("nope")


def test_user_scopes_join_the_vocabulary():
    s = register_scope(Scope("mlp_out", "per mlp_out hook", lambda i: [h for h in i.sae_ids if h.endswith("mlp_out")]))
    try:
        assert _claim(scope="mlp_out").rows(Info(HOOKS)) == ["blocks.1.hook_mlp_out"]
        with pytest.raises(ClaimError, match="already registered with another meaning"):
            register_scope(Scope("mlp_out", "something else", None, "x"))
    finally:
        SCOPES.pop(s.name)
