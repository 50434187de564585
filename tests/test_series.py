"""Typed figure data (series.py): every type survives the JSON payload, keys say what replaces what."""

import json

import pytest

from saeclaims.series import (
    SERIES_TYPES,
    DecodedPositions,
    FeatureShares,
    HookNorms,
    L0Curve,
    PositionCurves,
    Recoveries,
    WposRows,
    from_payload,
    series_key,
    to_payload,
)

ONE_OF_EACH = [
    PositionCurves("s", "h", 8, {"sae": [0.1, 0.2]}, [0.0, 0.1]), L0Curve("s", "h", 8, [3.0]),
    HookNorms("s", "h", 2.0, 0.1, None), Recoveries("s", "h", {"shift_pos": [0.5, 0.4, 0.6]}, None),
    DecodedPositions("s", "h", 8, 1, [1.0, 2.0]), FeatureShares("s", "h", [0.1], [0.9]),
    WposRows("s", 8, [[1.0, 2.0]]),
]


def test_every_series_type_round_trips_through_json():
    assert {type(s).__name__ for s in ONE_OF_EACH} == set(SERIES_TYPES)
    for s in ONE_OF_EACH:
        assert from_payload(json.loads(json.dumps(to_payload(s)))) == s


def test_unknown_payload_type_is_named_and_unknown_fields_are_dropped():
    with pytest.raises(ValueError, match="unknown figure series type"):
        from_payload({"type": "Nope", "subject": "s"})
    assert from_payload({**to_payload(ONE_OF_EACH[1]), "added_later": 1}) == ONE_OF_EACH[1]


def test_keys():
    assert series_key(ONE_OF_EACH[1]) == ("L0Curve", "s", "h")
    assert series_key(ONE_OF_EACH[-1]) == ("WposRows", "s", "")  # one per subject
