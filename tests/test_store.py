"""The run's evidence store (store.py): series replace by key, and the xdist payload round trip."""

from saeclaims.series import HookNorms, L0Curve
from saeclaims.stats import Evidence
from saeclaims.store import EvidenceStore, NotApplicable, SubjectRecord
from saeclaims.subject_facts import SubjectFact


def _evidence(claim: str, hook: str) -> Evidence:
    return Evidence(claim=claim, subject="s", sae_id=hook, statistic="x", estimate=1.0, ci_low=0.5, ci_high=1.5,
                    confidence=0.99, threshold=0.5, direction=">", n_seqs=4, n_tokens=40, verdict="holds")


def test_a_later_series_of_the_same_key_replaces_the_earlier():
    store = EvidenceStore()
    store.add_series(L0Curve("s", "h", 8, [1.0]))
    store.add_series(HookNorms("s", "h", 1.0, 0.1))
    store.add_series(L0Curve("s", "h", 8, [2.0]))
    assert [type(x).__name__ for x in store.series] == ["HookNorms", "L0Curve"]
    assert store.series[-1].l0 == [2.0]


def test_a_worker_payload_merges_into_the_controller():
    worker = EvidenceStore(family_size=7, claims=[{"id": "a"}], untested_claims=["b"])
    worker.evidence.append(_evidence("a", "h0"))
    worker.not_applicable.append(NotApplicable("a", "s", "h1", "no premise", {"excess": "0 [-1, 1]"}))
    worker.series.append(L0Curve("s", "h0", 8, [1.0, 2.0]))
    worker.subjects["s"] = SubjectRecord("s", "m", "r", ["h0", "h1"], {"h0": 8, "h1": 8}, 64, 4, 32)
    worker.replicates["s|a|h0"] = [0.9, 1.1]
    worker.failed_subjects["t"] = "OSError: gone"
    worker.add_fact(SubjectFact("s", "wpos_helix_share", "", 0.95, None, None, True))
    worker.add_fact(SubjectFact("s", "l0", "h0", 20.0, 19.0, 21.0, True))
    controller = EvidenceStore(claims=[{"id": "a"}])
    controller.merge_json(worker.to_json())
    assert controller.evidence == worker.evidence and controller.not_applicable == worker.not_applicable
    assert controller.series == worker.series and controller.subjects == worker.subjects
    assert controller.family_size == 7 and controller.claims == [{"id": "a"}]  # a claim is listed once
    assert controller.untested_claims == ["b"] and controller.replicates == {"s|a|h0": [0.9, 1.1]}
    assert controller.failed_subjects == {"t": "OSError: gone"} and controller.facts == worker.facts
    other = EvidenceStore(family_size=3)
    other.evidence.append(_evidence("a", "h1"))
    controller.merge_json(other.to_json())
    assert controller.family_size == 7 and [e.sae_id for e in controller.evidence] == ["h0", "h1"]


def test_a_later_fact_of_the_same_key_replaces_the_earlier():
    store = EvidenceStore()
    store.add_fact(SubjectFact("s", "l0", "h", 20.0, 19.0, 21.0, True))
    store.add_fact(SubjectFact("s", "l0", "g", 5.0, 4.0, 6.0, False))
    store.add_fact(SubjectFact("s", "l0", "h", 22.0, 21.0, 23.0, True))
    assert [(f.sae_id, f.estimate) for f in store.facts] == [("g", 5.0), ("h", 22.0)]
