"""A run's options (settings.py): every validation rule at its edge, and the progress rule."""

from dataclasses import replace
from pathlib import Path

import pytest

from saeclaims.settings import RunSettings


def _ok(tmp_path: Path) -> RunSettings:
    return RunSettings(subjects=("organism",), device=None, n_seqs=None, seq_len=None, seed=0,
                       family_confidence=0.95, n_resamples=2000, batch_size=16, autocast="none", text_file=None,
                       report=tmp_path / "REPORT.md", write_report=True, ledger_dir=tmp_path,
                       ledger_dir_given=False, progress="auto")


@pytest.mark.parametrize(("change", "message"), [
    ({"seed": -1}, "--sae-seed -1: seeds are non-negative integers"),
    ({"n_seqs": 1}, "--n-seqs 1: a cluster bootstrap needs at least 2 sequences"),
    ({"seq_len": 1}, "--seq-len 1: sequences need at least 2 tokens"),
    ({"family_confidence": 1.0}, "--family-confidence 1.0 must be in (0, 1)"),
    ({"family_confidence": 0.0}, "--family-confidence 0.0 must be in (0, 1)"),
    ({"n_resamples": 99}, "--n-resamples 99: use at least 100"),
    ({"batch_size": 0}, "--sae-batch-size 0 must be >= 1"),
    ({"memory_budget_mib": 0.0}, "--sae-memory-budget 0.0 must be a positive number of MiB"),
    ({"reencode_seqs": 1}, "--reencode-seqs 1: a cluster bootstrap needs at least 2"),
    ({"fail_on_drift": True}, "--fail-on-drift needs --baseline PATH"),
])
def test_each_rule_refuses_just_past_its_edge(tmp_path, change, message):
    with pytest.raises(pytest.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        replace(_ok(tmp_path), **change).validate()


@pytest.mark.parametrize("change", [
    {"seed": 0}, {"n_seqs": 2}, {"seq_len": 2}, {"family_confidence": 0.999}, {"n_resamples": 100}, {"batch_size": 1},
    {"memory_budget_mib": 0.5}, {"reencode_seqs": 2}, {"write_report": False, "report": Path("/proc/x/R.md")},
])
def test_each_rule_accepts_its_edge(tmp_path, change):
    replace(_ok(tmp_path), **change).validate()


def test_files_named_by_options_must_exist(tmp_path):
    with pytest.raises(pytest.UsageError, match="ledger directory .* does not exist"):
        replace(_ok(tmp_path), ledger_dir=tmp_path / "nope", ledger_dir_given=True).validate()
    replace(_ok(tmp_path), ledger_dir=tmp_path / "nope", ledger_dir_given=False).validate()  # the default may lack it
    with pytest.raises(pytest.UsageError, match="--text-file .* does not exist"):
        replace(_ok(tmp_path), text_file=tmp_path / "none.txt").validate()
    with pytest.raises(pytest.UsageError, match="is a directory"):
        replace(_ok(tmp_path), report=tmp_path).validate()


@pytest.mark.parametrize(("progress", "worker", "terminal", "verbosity", "shown"), [
    ("off", False, True, 0, False), ("on", True, False, -1, True), ("auto", True, True, 0, False),
    ("auto", False, True, 0, True), ("auto", False, True, -1, False), ("auto", False, False, 0, True),
])
def test_progress_rule(tmp_path, progress, worker, terminal, verbosity, shown):
    s = replace(_ok(tmp_path), progress=progress, verbosity=verbosity)
    assert s.shows_progress(worker, terminal) is shown


def test_options_for_the_report_are_plain_json_values(tmp_path):
    opts = replace(_ok(tmp_path), text_file=tmp_path / "t.txt").as_options()
    assert opts["subjects"] == ["organism"] and opts["text_file"] == str(tmp_path / "t.txt")
    assert replace(_ok(tmp_path), memory_budget_mib=1.5).budget_bytes == int(1.5 * 2**20)
    assert _ok(tmp_path).budget_bytes is None


def test_defaults_resolve_from_the_ini_file_or_the_invocation_not_the_rootdir(tmp_path):
    """pytest's rootdir moves when an existing path follows an option with a space; the defaults do not."""
    from types import SimpleNamespace

    from saeclaims.settings import project_dir

    here = SimpleNamespace(dir=tmp_path / "project")
    assert project_dir(SimpleNamespace(inipath=None, rootpath=Path("/tmp"), invocation_params=here)) == here.dir
    ini = tmp_path / "repo" / "pyproject.toml"
    assert project_dir(SimpleNamespace(inipath=ini, rootpath=Path("/tmp"), invocation_params=here)) == ini.parent
