"""README's "Sweeping a release", run verbatim: the GitHub Actions matrix (by tests/ci_replica.py's runner) and
the SLURM job array (by its sbatch stand-in), the shards as separate processes on this machine. The merged
report.json must equal one unsharded run's in every row: estimates, intervals, verdicts and statuses.

Each sweep judges two subjects at once, the organism (the examples' $SUBJECT) and `local:fixtures/mixed`
(several SAEs, several hook kinds, two SAEs on one hook), so its 11 SAEs split across subjects too: the
commands stay as README writes them, and PYTEST_ADDOPTS adds the second subject and makes every run smaller
(4 sequences of 192 tokens, 2 re-encoded: 27 s a run instead of 40 s at 8 x 256). At that size some verdicts differ
from the ledgers (drafted at full size), so shards exit 1; the examples merge whatever the shards wrote
(`if: always()`, `afterany`), and the rows must still equal the unsharded run's.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci_replica import install_sbatch, run_workflow
from tests.conftest import shared_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- example: (sweep-\w+) (\S+) -->\s*```[a-z]*\n(.*?)```", re.S)
SMALL = ("--sae-subject local:fixtures/mixed --n-seqs 4 --seq-len 192 --reencode-seqs 2 -p no:cacheprovider "
         "-p no:xdist")
CHECKOUT = [ROOT / p for p in ("claims", "conftest.py", "pyproject.toml", "fixtures")]

pytestmark = pytest.mark.xdist_group("sweep-examples")


def examples() -> dict[tuple[str, str], str]:
    return {(kind, name): text for kind, name, text in BLOCK.findall(README.read_text())}


def test_the_readme_has_both_sweep_examples():
    assert set(examples()) == {("sweep-github", ".github/workflows/sweep.yml"), ("sweep-slurm", "sweep.sbatch"),
                               ("sweep-slurm", "submit")}


def _workspace(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for p in CHECKOUT:
        (path / p.name).symlink_to(p)
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env.update(PYTEST_ADDOPTS=SMALL, PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def unsharded(tmp_path_factory) -> dict:
    """report.json of one unsharded run of both subjects (the main command, the same small size), made once."""

    def build(work: Path) -> None:
        _workspace(work)
        done = subprocess.run(["pytest", "claims", "-m", "gpu", "--sae-subject", "organism", "--sae-report",
                               "one/REPORT.md"], cwd=work, env=_env(), capture_output=True, text=True, timeout=900)
        assert (work / "one" / "report" / "report.json").is_file(), done.stdout[-3000:] + done.stderr[-3000:]

    work = shared_dir(tmp_path_factory, "sweep-one-run", build)
    one = json.loads((work / "one" / "report" / "report.json").read_text())
    assert set(one["header"]["subjects"]) == {"organism", "local:fixtures/mixed"}
    return one


def _same_rows(merged: Path, one: dict) -> None:
    got = json.loads(merged.read_text())
    for key in ("evidence", "not_applicable", "outcomes", "facts"):
        assert got[key] == one[key], key
    assert got["evidence"], "the sweep judged no row"
    assert len(got["header"]["shards"]) == 3
    figures = {p.name for p in merged.parent.glob("*.png")}
    assert figures and all(f"report/{name}" in (merged.parent.parent / "REPORT.md").read_text() for name in figures
                           if name.startswith("evidence-"))


def test_the_github_actions_matrix_runs_verbatim_and_merges_to_one_run(tmp_path, unsharded):
    text = examples()[("sweep-github", ".github/workflows/sweep.yml")]
    run = run_workflow(text, tmp_path, CHECKOUT, _env())
    shards = [s for s in run.steps if s.job.startswith("shard ") and s.step.startswith("pytest")]
    assert [s.returncode for s in shards] != [] and len(shards) == 3, run.log()
    assert all(s.returncode in (0, 1) for s in shards), run.log()  # 1: a claim differs from its ledger
    merge = next(s for s in run.steps if s.job == "merge" and "saeclaims merge" in s.step)
    assert merge.returncode == 0, run.log()
    _same_rows(run.artifacts / "sae-claims-report" / "organism" / "report" / "report.json", unsharded)


def test_the_slurm_job_array_runs_verbatim_and_merges_to_one_run(tmp_path, unsharded):
    work = _workspace(tmp_path / "cluster")
    (work / "sweep.sbatch").write_text(examples()[("sweep-slurm", "sweep.sbatch")])
    log = install_sbatch(tmp_path / "bin")
    submit = examples()[("sweep-slurm", "submit")]
    env = _env(SBATCH_REPLICA_LOG=str(log))
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", submit], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tasks = log.read_text().split("\n")
    assert [t.split()[:2] for t in tasks if t.startswith("task")] == [["task", "1"], ["task", "2"], ["task", "3"]]
    assert "wrap 0" in tasks
    _same_rows(work / "reports" / "organism" / "report" / "report.json", unsharded)
