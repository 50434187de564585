"""REPORT.md: content from evidence, and atomic replacement."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from saeclaims.report import (
    ReportHeader,
    outcome_lines,
    recover_interrupted_write,
    render_markdown,
    summary_lines,
    write_report,
)
from saeclaims.stats import Evidence
from saeclaims.store import EvidenceStore, NotApplicable, Outcome, SubjectRecord
from saeclaims.subject_facts import SubjectFact
from saeclaims.thread import THREAD_CLAIMS


def _ev(claim, hook, verdict, expected="holds", subject="organism"):
    return Evidence(claim, subject, hook, "stat", 1.2, 1.1, 1.3, 0.999, 1.0, ">", 8, 800, verdict, expected)


def _header():
    return ReportHeader({"organism": SubjectRecord("organism", "m", "r", ["h"], {"h": 64}, 512, 8, 512)},
                        "cpu", "float32", 0, 0.95, 17, 12.3, "abc123", "3.11", {"torch": "x"})


def test_summary_is_templated_from_the_evidence():
    evs = [_ev("beyond-context-degrades", "blocks.0.hook_resid_pre", "holds"),
           _ev("beyond-context-degrades", "blocks.1.hook_resid_pre", "refuted", "refuted"),
           _ev("wpos-helix", "model", "holds"),
           _ev("encoder-off-distribution", "blocks.0.hook_resid_pre", "inconclusive")]
    text = "\n".join(summary_lines(evs))
    assert "Hold: `wpos-helix`" in text
    assert "Inconclusive: `encoder-off-distribution`" in text
    assert "`beyond-context-degrades` (holds at 1, refuted at 1 of 2 hooks)" in text
    assert "3 of 4 verdicts as expected; **1 differ**" in text


def test_markdown_has_header_table_and_claim_sections():
    na = [NotApplicable("beyond-context-degrades", "organism", "blocks.0.hook_resid_pre", "no excess",
                        {"excess": "-0.08 [-0.1, -0.06]"})]
    md = render_markdown(_header(), [_ev("wpos-helix", "model", "refuted")], na, {"wpos-helix": ["wpos_pca.png"]},
                         list(THREAD_CLAIMS), ["my-claim"])
    assert "a family of 17 intervals" in md and "99.7059% confidence" in md and "Bonferroni" in md
    assert ("| `wpos-helix` | organism | model | 1.2 [1.1, 1.3] | exact | > 1 | refuted | holds | **MISMATCH** |"
            in md)
    assert "![wpos-helix](report/wpos_pca.png)" in md
    assert "https://www.lesswrong.com/posts/ctGeJGHg9pbc8memF" in md
    assert ("- no excess: `beyond-context-degrades` on organism/blocks.0.hook_resid_pre "
            "(excess -0.08 [-0.1, -0.06])") in md
    assert "registered claims with no test in this suite: my-claim" in md


def _store():
    s = EvidenceStore(claims=[c.to_dict() for c in THREAD_CLAIMS])
    s.evidence.append(_ev("wpos-helix", "model", "holds"))
    return s


def test_write_report_writes_markdown_json_and_figures(tmp_path):
    write_report(tmp_path / "REPORT.md", _header(), _store())
    assert (tmp_path / "REPORT.md").read_text().startswith("# SAE claims report")
    payload = json.loads((tmp_path / "report" / "report.json").read_text())
    assert payload["evidence"][0]["claim"] == "wpos-helix"
    assert (tmp_path / "report" / "evidence-wpos-helix.png").exists()
    assert not list(tmp_path.glob(".report-*"))


def test_a_crash_while_writing_keeps_the_previous_report(tmp_path, monkeypatch):
    write_report(tmp_path / "REPORT.md", _header(), _store())
    before_md = (tmp_path / "REPORT.md").read_text()
    before_json = (tmp_path / "report" / "report.json").read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("saeclaims.figures.draw_all", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(tmp_path / "REPORT.md", _header(), EvidenceStore())
    assert (tmp_path / "REPORT.md").read_text() == before_md
    assert (tmp_path / "report" / "report.json").read_text() == before_json
    assert not list(tmp_path.glob(".report-*"))


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failed_final_rename_keeps_the_previous_report_and_figures(tmp_path, monkeypatch):
    write_report(tmp_path / "REPORT.md", _header(), _store())
    before = _snapshot(tmp_path)
    real_replace = os.replace

    def fail_on_markdown(src, dst):
        if str(dst).endswith("REPORT.md"):
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr("saeclaims.report.os.replace", fail_on_markdown)
    bigger = _store()
    bigger.evidence.append(_ev("encoder-off-distribution", "blocks.0.hook_resid_pre", "holds"))
    with pytest.raises(OSError, match="rename failed"):
        write_report(tmp_path / "REPORT.md", _header(), bigger)
    assert _snapshot(tmp_path) == before  # markdown, report.json and every figure, byte for byte


def test_a_failed_figure_swap_keeps_the_previous_report(tmp_path, monkeypatch):
    write_report(tmp_path / "REPORT.md", _header(), _store())
    before = _snapshot(tmp_path)
    real_rename = Path.rename

    def fail_on_new_figures(self, target):
        if self.name.startswith(".report-"):
            raise OSError("rename failed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", fail_on_new_figures)
    with pytest.raises(OSError):
        write_report(tmp_path / "REPORT.md", _header(), _store())
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("killed_at", ["figures set aside", "new figures in, markdown not", "all in, old not removed"])
def test_a_run_killed_mid_swap_is_recovered_by_the_next_write(tmp_path, killed_at):
    path = tmp_path / "REPORT.md"
    write_report(path, _header(), _store())
    old_md, old_json = path.read_text(), (tmp_path / "report" / "report.json").read_text()
    (tmp_path / ".report-stale").mkdir()
    if killed_at == "figures set aside":
        (tmp_path / "report").rename(tmp_path / ".report.old")
    else:
        shutil.copytree(tmp_path / "report", tmp_path / ".report.old")
        if killed_at == "new figures in, markdown not":
            time.sleep(0.01)
            (tmp_path / "report" / "report.json").write_text("{}")  # newer than the markdown
        else:
            path.write_text(old_md)  # the markdown landed after the figures
    recover_interrupted_write(path)
    assert not (tmp_path / ".report.old").exists() and not (tmp_path / ".report-stale").exists()
    assert path.read_text() == old_md
    assert (tmp_path / "report" / "report.json").read_text() == old_json


def test_the_summary_counts_claim_test_outcomes_truthfully():
    outcomes = [Outcome("t::a", "passed"), Outcome("t::b", "failed", "toy-1 @ organism/model: ... -> refuted"),
                Outcome("t::c", "errored", "SubjectError: corrupt"), Outcome("t::d", "skipped", "x"),
                Outcome("t::e", "skipped", "gpt2 reference missing")]
    na = [NotApplicable("c", "organism", "h", "no excess", nodeid="t::d")]
    text = "\n".join(outcome_lines(outcomes, na))
    assert "Claim tests: 1 passed, 1 failed, 1 errored, 1 not applicable, 1 skipped." in text
    assert "- failed: `t::b`: toy-1 @ organism/model: ... -> refuted" in text
    assert "- errored: `t::c`: SubjectError: corrupt" in text


def test_the_report_names_the_command_that_made_it(tmp_path):
    header = _header()
    header.command = "pytest claims -k helix --n-seqs 8"
    write_report(tmp_path / "REPORT.md", header, _store())
    assert "Generated by `pytest claims -k helix --n-seqs 8` (sae-claims)" in (tmp_path / "REPORT.md").read_text()


def test_the_figures_folder_is_as_readable_as_any_other(tmp_path):
    """mkdtemp makes its folder 0700; the report's folder follows the umask like the markdown beside it."""
    import os

    old = os.umask(0o022)
    try:
        write_report(tmp_path / "REPORT.md", _header(), _store())
    finally:
        os.umask(old)
    assert (tmp_path / "report").stat().st_mode & 0o777 == 0o755


def test_two_runs_writing_one_report_take_turns(tmp_path):
    """Each writer clears stale `.report-*` folders before writing; without the lock one run cleared the other's
    half-written folder (FileNotFoundError). Two writers at once, several times: both succeed, the report is whole."""
    import threading

    errors = []

    def writer(n):
        try:
            for i in range(3):
                header = _header()
                header.command = f"writer {n} round {i}"
                write_report(tmp_path / "REPORT.md", header, _store())
        except Exception as exc:  # noqa: BLE001 (the test reports whatever a writer raised)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    md = (tmp_path / "REPORT.md").read_text()
    payload = json.loads((tmp_path / "report" / "report.json").read_text())
    assert f"Generated by `{payload['header']['command']}`" in md  # markdown and json of the same write
    assert not list(tmp_path.glob(".report-*"))


def test_subject_facts_come_first_apart_from_the_verdicts():
    facts = [SubjectFact("organism", "wpos_helix_share", "", 0.985, None, None, True),
             SubjectFact("organism", "long_context_gain", "", 0.0016, -0.01, 0.013, False),
             SubjectFact("organism", "l0", "blocks.1.hook_resid_pre", 42.8, 41.0, 44.0, True),
             SubjectFact("organism", "control_ce_gap", "blocks.0.hook_resid_pre", 0.0123, 0.011, 0.014, False),
             SubjectFact("organism", "l0", "blocks.0.hook_resid_pre", 21.5, 20.0, 23.0, True),
             SubjectFact("organism", "l0", "blocks.0.hook_resid_pre.topk", 16.0, 15.0, 17.0, True)]
    md = render_markdown(_header(), [_ev("wpos-helix", "model", "holds")], [], {}, list(THREAD_CLAIMS), facts=facts)
    assert md.index("## The subject beside GPT-2") < md.index("## Summary") < md.index("## Verdicts")
    assert "| 0.985 | yes | >= 0.9 | 0.957 (a helix) |" in md
    assert "| 0.0016 [-0.01, 0.013] | **short** | >= 0.05 |" in md
    assert "| SAE id | l0 (10 to 100) | control_ce_gap (<= 0.01) |" in md
    rows = [line for line in md.splitlines() if line.startswith("| organism | blocks.")]
    assert rows == ["| organism | blocks.0.hook_resid_pre | 21.5 (yes) | 0.0123 (**short**) |",
                    "| organism | blocks.0.hook_resid_pre.topk | 16 (yes) | - |",  # an id that is not a hook name
                    "| organism | blocks.1.hook_resid_pre | 42.8 (yes) | - |"]
    assert "The subject beside GPT-2" not in render_markdown(_header(), [], [], {}, list(THREAD_CLAIMS))


def test_not_applicable_rows_are_grouped_by_reason():
    na = [NotApplicable("a", "organism", h, "no learned W_pos", {}) for h in ("blocks.0.hook_resid_pre", "x")]
    na.append(NotApplicable("b", "organism", "model", "other reason", {"k": "1"}))
    md = render_markdown(_header(), [], na, {}, [])
    assert ("- no learned W_pos: `a` on organism/blocks.0.hook_resid_pre, `a` on organism/x\n"
            "- other reason: `b` on organism/model (k 1)") in md


def test_figures_of_claims_outside_the_run_are_not_drawn(tmp_path):
    """The workbench records series for every hook; a claim not in this run (-k) gets no chart."""
    from saeclaims.series import Recoveries

    store = _store()  # evidence for wpos-helix only
    store.series.append(Recoveries("organism", "blocks.0.hook_resid_pre", {"shift_pos": [0.7, 0.6, 0.8]},
                                   [0.3, 0.2, 0.4]))
    write_report(tmp_path / "REPORT.md", _header(), store)
    drawn = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert drawn == ["evidence-wpos-helix.png"]


def test_the_first_screen_says_what_each_judged_claim_says():
    md = render_markdown(_header(), [_ev("wpos-helix", "model", "holds")], [], {}, list(THREAD_CLAIMS))
    brief = md.index("What the judged claims say:")
    assert md.index("## Summary") < brief < md.index("## Run")
    assert "- `wpos-helix`: W_pos rows 1..127 lie on a helix" in md[brief:md.index("## Run")]
    assert "`beyond-context-degrades`:" not in md[brief:md.index("## Run")]  # not judged in this run
