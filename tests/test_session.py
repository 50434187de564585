"""One claims run (session.py): the family's confidence, the device, when a report is (not) written, and the
xdist payload. End to end it is exercised by tests/test_pytest_plugin.py's sandboxed runs."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from saeclaims.catalog import Catalog
from saeclaims.session import ClaimSession, Family, resolve_device
from saeclaims.settings import RunSettings
from saeclaims.store import EvidenceStore, Outcome


def test_family_size_and_bonferroni_confidence():
    fam = Family({"a": 3, "b": 2}, 0.95)
    assert fam.size == 5 and fam.confidence == pytest.approx(1 - 0.05 / 5)
    assert Family({"a": 1}, 0.9).confidence == pytest.approx(0.9)


def test_device_resolution(monkeypatch):
    plain = SimpleNamespace()
    assert resolve_device(plain, "cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(plain, None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    worker = SimpleNamespace(workerinput={"workerid": "gw4"})
    assert resolve_device(worker, "cuda") == torch.device("cuda:1")  # worker i on cuda:i mod the GPUs
    assert resolve_device(worker, "cuda:0") == torch.device("cuda:0")  # an explicit index is kept


def _session(tmp_path, **settings) -> ClaimSession:
    s = ClaimSession.__new__(ClaimSession)
    s.is_worker, s.store, s.published, s.worker_peak = False, EvidenceStore(), [], {}
    s._ledgers, s._infos, s.catalog = {}, {}, Catalog()
    s.settings = replace(RunSettings(subjects=("organism",), device=None, n_seqs=None, seq_len=None, seed=0,
                                     family_confidence=0.95, n_resamples=2000, batch_size=16, autocast="none",
                                     text_file=None, report=tmp_path / "REPORT.md", write_report=True,
                                     ledger_dir=tmp_path, ledger_dir_given=False, progress="auto"), **settings)
    return s


def test_no_report_is_written_without_measurements_or_after_an_interruption(tmp_path):
    s = _session(tmp_path)
    assert s.finish(pytest.ExitCode.OK) is None  # nothing ran: no line, no report
    s.store.outcomes["t"] = Outcome("t", "passed")
    assert s.finish(pytest.ExitCode.INTERRUPTED) == (f"saeclaims: run interrupted or stopped (exit 2); "
                                                     f"{tmp_path / 'REPORT.md'} left as it was")
    assert s.finish(pytest.ExitCode.OK) == (f"saeclaims: no claim was measured on a subject; "
                                            f"{tmp_path / 'REPORT.md'} left as it was")
    s.store.failed_subjects["organism"] = "OSError: gone"
    assert "a subject failed to load (organism)" in s.finish(pytest.ExitCode.TESTS_FAILED)
    assert _session(tmp_path, write_report=False).finish(pytest.ExitCode.OK) is None
    worker = _session(tmp_path)
    worker.is_worker = True
    assert worker.finish(pytest.ExitCode.OK) is None
    assert not (tmp_path / "REPORT.md").exists()


def test_worker_payloads_merge_with_the_largest_peak_memory(tmp_path):
    worker = _session(tmp_path)
    worker.store.outcomes["t"] = Outcome("t", "passed")
    payload = worker.worker_payload()
    controller = _session(tmp_path)
    controller.worker_peak = {"rss": 1e9}
    controller.merge_worker_payload(payload)
    assert controller.worker_peak["rss"] == 1e9  # the largest over workers
    controller.worker_peak = {}
    controller.merge_worker_payload(payload)
    assert 0 < controller.worker_peak["rss"] < 1e9


def test_a_report_that_cannot_be_written_is_one_line_and_a_failed_run(tmp_path, monkeypatch):
    from saeclaims import session as session_mod
    from saeclaims.store import SubjectRecord
    from tests.test_store import _evidence

    (tmp_path / "REPORT.md").write_text("the last good report")
    s = _session(tmp_path)
    s.config = SimpleNamespace(rootpath=tmp_path, invocation_params=SimpleNamespace(args=("claims",)))
    s.t0, s.baseline = 0.0, None
    s.store.subjects["s"] = SubjectRecord("s", "m", "r", ["h0"], {"h0": 8}, 64, 4, 32)
    s.store.evidence.append(_evidence("a", "h0"))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "report"))

    monkeypatch.setattr(session_mod, "write_report", denied)
    line = s.finish(pytest.ExitCode.OK)
    assert line == (f"saeclaims: could not write the report (PermissionError: [Errno 13] Permission denied: "
                    f"'{tmp_path / 'report'}'); {tmp_path / 'REPORT.md'} left as it was")
    assert s.report_failed and (tmp_path / "REPORT.md").read_text() == "the last good report"
