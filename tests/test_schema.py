"""report.json: versioned, validated against the JSON Schema generated from the typed classes."""

import json
from pathlib import Path

import pytest

from saeclaims.report import write_report
from saeclaims.schema import SCHEMA_FILE, SCHEMA_VERSION, ReportFileError, json_schema, load_report, validate
from tests.test_report import _ev, _header, _store


def test_the_shipped_schema_is_the_generators_output():
    """Regenerate with `python -m saeclaims.schema > src/saeclaims/report.schema.json`."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()


def test_a_written_report_validates_and_loads_typed(tmp_path):
    store = _store()
    store.evidence.append(_ev("encoder-off-distribution", "blocks.0.hook_resid_pre", "holds"))
    write_report(tmp_path / "REPORT.md", _header(), store)
    payload = json.loads((tmp_path / "report" / "report.json").read_text())
    assert payload["schema_version"] == SCHEMA_VERSION
    validate(payload)
    report = load_report(tmp_path / "report" / "report.json")
    assert report.header.subjects["organism"].n_ctx == 512
    assert {e.claim for e in report.evidence} == {"wpos-helix", "encoder-off-distribution"}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: p.update(schema_version=0), "report schema version 0, this saeclaims reads version"),
    (lambda p: p.update(schema_version=SCHEMA_VERSION + 1), "this saeclaims reads version"),
    (lambda p: p["evidence"][0].pop("verdict"), "not a valid sae-claims report at evidence/0"),
    (lambda p: p["evidence"][0].update(estimate="high"), "not a valid sae-claims report at evidence/0/estimate"),
    (lambda p: p["header"].update(surprise=1), "not a valid sae-claims report at header"),
])
def test_departures_from_the_schema_are_named(tmp_path, mutate, message):
    write_report(tmp_path / "REPORT.md", _header(), _store())
    path = tmp_path / "report" / "report.json"
    payload = json.loads(path.read_text())
    mutate(payload)
    path.write_text(json.dumps(payload))
    with pytest.raises(ReportFileError, match=message):
        load_report(path)


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "is not a sae-claims report.json"),
    ('{"rows": []}', "no evidence rows"),
    ("[1, 2]", "no evidence rows"),
])
def test_a_file_that_is_not_a_report(tmp_path, text, message):
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(ReportFileError, match=message):
        load_report(tmp_path / "x.json")


def test_nan_estimates_survive_a_round_trip(tmp_path):
    store = _store()
    store.evidence[0].estimate = float("nan")
    write_report(tmp_path / "REPORT.md", _header(), store)
    report = load_report(tmp_path / "report" / "report.json")
    assert report.evidence[0].estimate != report.evidence[0].estimate


V1_REPORT = Path(__file__).with_name("data") / "report-v1.json"  # the main command's report before schema 2


def test_a_version_1_report_is_migrated_on_read():
    """Users keep last release's report as their baseline: version 1 named each row's SAE id `hook`."""
    raw = json.loads(V1_REPORT.read_text())
    assert raw["schema_version"] == 1 and "hook" in raw["evidence"][0]
    report = load_report(V1_REPORT)
    assert [e.sae_id for e in report.evidence] == [e["hook"] for e in raw["evidence"]]
    assert [n.sae_id for n in report.not_applicable] == [n["hook"] for n in raw["not_applicable"]]
    assert len(report.evidence) == 54 and report.header.subjects["organism"].n_ctx == 512


def test_a_version_1_report_serves_as_a_baseline_and_drafts_a_ledger(capsys):
    from saeclaims.baseline import Baseline
    from saeclaims.ledger import main as ledger_main

    base = Baseline.load(V1_REPORT, ("organism",))
    assert "organism|wpos-helix|model" in base.rows()
    assert ledger_main([str(V1_REPORT)]) == 0
    assert '[beyond-context-degrades]' in capsys.readouterr().out


def test_migration_edges():
    from saeclaims.schema import migrate

    v2 = {"schema_version": 2, "evidence": [{"sae_id": "a", "hook": "kept"}]}
    assert migrate(json.loads(json.dumps(v2))) == v2  # a current file is left alone
    v1 = {"schema_version": 1, "evidence": [{"hook": "a"}], "not_applicable": [], "baseline": None}
    assert migrate(v1) == {"schema_version": 2, "evidence": [{"sae_id": "a"}], "not_applicable": [], "baseline": None}
    v9 = {"schema_version": 9, "evidence": []}
    assert migrate(dict(v9)) == v9  # a newer one is left for validate to refuse by name
