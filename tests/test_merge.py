"""Merging the reports of a run's shards (merge.py): the merged rows are the shards' rows, and shards that
are not all of one run are refused in one line naming the difference. The shards here are real runs of toy
claims on the organism (one row per SAE, nothing measured), in separate processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from saeclaims.merge import MergeError, check_one_run, load_shard, main, merge
from tests.conftest import shared_dir

pytestmark = pytest.mark.xdist_group("merge-shards")  # one worker makes the shards once

CONFTEST = '''
from saeclaims import register_claim

for i in range(3):
    register_claim(id=f"toy-{i}", family="toy", source="sandbox", url="https://example.org", words="a toy claim",
                   statistic="a number", direction=">", threshold=0.9, why="above 0.9", scope="all")
register_claim(id="toy-model", family="toy", source="sandbox", url="https://example.org", words="a toy claim",
               statistic="a number", direction=">", threshold=0.9, why="above 0.9", scope="model")
'''

CLAIM_TESTS = '''
import os

import pytest
from saeclaims.stats import Interval


def _make(cid):
    @pytest.mark.claim(cid)
    def test(claim):
        # a number of the row's own, so rows differ; TOY_SHIFT moves every row (drift against a baseline)
        est = 0.5 + 0.1 * len(claim.sae_id) + float(os.environ.get("TOY_SHIFT", "0"))
        claim.check(Interval(est, est - 0.001, est + 0.001, claim.boot.confidence, 4, 40))
    return test


for _c in ("toy-0", "toy-1", "toy-2", "toy-model"):
    globals()["test_" + _c.replace("-", "_")] = _make(_c)
'''


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_toys.py").write_text(CLAIM_TESTS)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "claims" / "expected").mkdir(parents=True, exist_ok=True)
    return root


def _run(root: Path, out: str, *args: str, shift: float = 0.0) -> subprocess.CompletedProcess:
    xdist = () if "-n" in args else ("-p", "no:xdist")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *xdist, "-q",
                           "--sae-report", str(root / out / "REPORT.md"), *args],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TOY_SHIFT": str(shift)})


DRIFT = ("--baseline", "full/report/report.json", "--fail-on-drift", "-k", "not toy_2")


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def runs(tmp_path_factory) -> Path:
    """As separate processes: one unsharded run and three shards of it, a shard 2/3 with another seed, shard 2/3
    on two xdist workers, and (every row moved by 0.3, toy-2 left out) the run and its shards against the first
    run as baseline with --fail-on-drift. Built once per session, whichever worker asks first."""
    return shared_dir(tmp_path_factory, "merge-runs", _make_runs)


def _make_runs(root: Path) -> None:
    _project(root)
    for out, args, shift, code in (
            ("full", (), 0, 0), ("s1", ("--sae-shard", "1/3"), 0, 0), ("s2", ("--sae-shard", "2/3"), 0, 0),
            ("s3", ("--sae-shard", "3/3"), 0, 0), ("s2-seed", ("--sae-shard", "2/3", "--sae-seed", "7"), 0, 0),
            ("s2-n2", ("--sae-shard", "2/3", "-n", "2", "--dist", "loadgroup"), 0, 0),
            ("drift", DRIFT, 0.3, 1), *((f"d{k}", (*DRIFT, "--sae-shard", f"{k}/3"), 0.3, 1) for k in (1, 2, 3))):
        done = _run(root, out, *args, shift=shift)
        assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]


def _rows(path: Path) -> dict:
    payload = json.loads((path / "report" / "report.json").read_text())
    return {k: payload[k] for k in ("evidence", "not_applicable", "outcomes", "facts")}


def test_shards_hold_each_row_once_and_merge_to_the_unsharded_rows(runs, tmp_path):
    counts = [len(_rows(runs / f"s{k}")["evidence"]) for k in (1, 2, 3)]
    assert sum(counts) == len(_rows(runs / "full")["evidence"]) == 3 * 5 + 1 and min(counts) >= 1
    header, store = merge([runs / "s1", runs / "s2", runs / "s3"], tmp_path / "merged" / "REPORT.md", "merge")
    assert _rows(tmp_path / "merged") == _rows(runs / "full")
    assert [(r.index, r.count) for r in header.shards] == [(1, 3), (2, 3), (3, 3)]
    md = (tmp_path / "merged" / "REPORT.md").read_text()
    assert "| shards (3, merged) | 1/3 on " in md and "**Shard" not in md
    assert "**Shard 2 of 3**: a partial report" in (runs / "s2" / "REPORT.md").read_text()


def test_the_command_writes_the_merged_report_and_says_so(runs, tmp_path, capsys):
    assert main([str(runs / "s3"), str(runs / "s1"), str(runs / "s2"), "--out", str(tmp_path / "m")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "m" / "report" / "report.json").is_file()


def test_a_shard_on_several_xdist_workers_judges_what_it_judges_alone(runs):
    assert _rows(runs / "s2-n2") == _rows(runs / "s2")


def test_each_shard_compares_its_rows_with_the_baseline_and_fails_its_drifted_ones(runs, tmp_path):
    one = json.loads((runs / "drift" / "report" / "report.json").read_text())
    for k in (1, 2, 3):
        shard = json.loads((runs / f"d{k}" / "report" / "shard.json").read_text())
        judged = {(e["claim"], e["sae_id"]) for e in shard["store"]["evidence"]}
        drifted = {(r["claim"], r["sae_id"]) for r in shard["baseline"]["rows"] if r["drifted"]}
        assert judged and drifted == judged  # every row moved by 0.3, beyond the tolerance 0.09
        assert {o["outcome"] for o in shard["outcomes"]} == {"failed"}  # --fail-on-drift, in this shard
    merge([runs / f"d{k}" for k in (1, 2, 3)], tmp_path / "m" / "REPORT.md", "merge")
    merged = json.loads((tmp_path / "m" / "report" / "report.json").read_text())
    for key in ("rows", "added", "removed", "not_comparable", "changed_saes"):
        assert merged["baseline"][key] == one["baseline"][key], key
    assert len(one["baseline"]["removed"]) == 5  # toy-2 at each of the organism's 5 SAEs
    assert _rows(tmp_path / "m") == _rows(runs / "drift")


def _edited(runs: Path, tmp_path: Path, shard: str, edit) -> Path:
    """A copy of a shard's folder whose shard.json was changed by `edit` (the step the check reads)."""
    dest = tmp_path / f"{shard}-edited"
    shutil.copytree(runs / shard, dest)
    path = dest / "report" / "shard.json"
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    return dest


def _refusal(dirs: list[Path]) -> str:
    with pytest.raises(MergeError) as err:
        check_one_run([load_shard(d) for d in dirs])
    assert "\n" not in str(err.value)
    return str(err.value)


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(payload):
        node = payload
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "says"), [
    (_set("header", "subjects", "organism", "model", "another-model"), "they differ in subjects (organism.model: "),
    (_set("header", "subjects", "organism", "tokens_sha256", "0" * 64), "subjects (organism.tokens_sha256: "),
    (_set("header", "options", "n_resamples", 4000), "they differ in options (n_resamples: 2000 vs 4000)"),
    (_set("header", "versions", "sae-lens", "0.0.1"), "they differ in package versions (sae-lens: "),
    (_set("schema_version", 1), "they differ in schema version (2 vs 1)"),
    (_set("store", "family_size", 99), "they differ in claim family (family_size: "),
    (_set("plan", [["organism", "x"]]), "they differ in split ("),
])
def test_shards_of_another_run_are_refused_naming_the_difference(runs, tmp_path, edit, says):
    msg = _refusal([runs / "s1", _edited(runs, tmp_path, "s2", edit), runs / "s3"])
    assert says in msg and msg.startswith("shard 2/3 (")


def test_a_shard_run_with_another_seed_is_refused(runs):
    assert "they differ in seed (0 vs 7)" in _refusal([runs / "s1", runs / "s2-seed", runs / "s3"])


def test_a_missing_shard_is_refused(runs):
    assert _refusal([runs / "s1", runs / "s3"]) == ("shard 2/3 missing: a merged report is of the whole run (give "
                                                    "all 3 shard folders)")


def test_a_shard_given_twice_is_refused(runs):
    assert _refusal([runs / "s1", runs / "s2", runs / "s2"]).startswith("shard 2/3 is given twice")


def test_a_row_present_in_two_shards_is_refused(runs, tmp_path):
    row = json.loads((runs / "s1" / "report" / "shard.json").read_text())["store"]["evidence"][0]

    def add(payload):
        payload["store"]["evidence"].append(row)
    msg = _refusal([runs / "s1", _edited(runs, tmp_path, "s2", add), runs / "s3"])
    assert f"row {row['claim']} @ {row['subject']}/{row['sae_id']} is in shard 1/3" in msg


def test_a_folder_that_is_no_shard_is_refused_naming_it(runs, tmp_path, capsys):
    assert main([str(runs / "full"), str(runs / "s2"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeclaims merge: ") and "no shard report here" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
