"""A worked regression scenario: the organism's release "updated" (one SAE's decoder scaled and perturbed by
a seeded amount) is compared with the original run as baseline; only rows that read the changed SAE may drift, the
unchanged organism against its own report drifts nowhere, and --fail-on-drift turns drift into failures.

Small runs (16 sequences x 256 tokens, a subset of claims) keep this inside the test command's budget.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saeclaims.artifacts import sha256_file
from saeclaims.subjects import organism_dir

ROOT = Path(__file__).resolve().parents[1]
CHANGED = "blocks.1.hook_resid_pre"
SAE = f"saes/ctx128/{CHANGED}/sae_weights.safetensors"
SUBSET = "in_context_performs or beyond_context_degrades or layer0_norm"
SMALL = ("--n-seqs", "16", "--seq-len", "256")

pytestmark = pytest.mark.xdist_group("regression-scenario")


def run(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "claims", "-m", "gpu", "-k", SUBSET, "-p", "no:cacheprovider", "-q",
           "--sae-progress", "off", *SMALL, "--sae-report", str(out / "REPORT.md"), *args]
    import os

    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def perturbed_organism(tmp: Path, seed: int = 0, scale: float = 0.25, noise_share: float = 0.1) -> Path:
    """A copy of the organism whose blocks.1 SAE decoder is scaled by `scale` (a release whose decoder norms
    were folded wrongly) plus seeded noise of `noise_share` x its own norm."""
    from safetensors.numpy import load_file, save_file

    root = tmp / "organism-updated"
    shutil.copytree(organism_dir(), root, ignore=shutil.ignore_patterns(".build", "build.log"))
    tensors = load_file(str(root / SAE))
    w = tensors["W_dec"].copy()
    noise = np.random.default_rng(seed).normal(size=w.shape).astype(w.dtype)
    tensors["W_dec"] = scale * w + noise_share * noise * (np.linalg.norm(w) / np.linalg.norm(noise))
    save_file(tensors, str(root / SAE))
    card = json.loads((root / "card.json").read_text())
    card["sha256"][SAE] = sha256_file(root / SAE)
    (root / "card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def original(tmp_path_factory):
    out = tmp_path_factory.mktemp("original")
    run(out)
    assert (out / "report" / "report.json").exists()
    return out


def _comparison(out: Path) -> dict:
    return json.loads((out / "report" / "report.json").read_text())["baseline"]


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def unchanged(original, tmp_path_factory):
    """The unchanged organism against its own report, with --junitxml (one run serves both tests)."""
    out = tmp_path_factory.mktemp("unchanged")
    run(out, "--junitxml", str(out / "junit.xml"), "--baseline", str(original / "report" / "report.json"))
    return out


def test_the_unchanged_organism_drifts_nowhere(unchanged):
    cmp = _comparison(unchanged)
    assert cmp["rows"] and not cmp["added"] and not cmp["removed"]
    assert all(r["pairing"] in ("paired", "exact") for r in cmp["rows"])  # same tokens, same seed
    assert [r for r in cmp["rows"] if r["drifted"]] == []


def test_an_updated_sae_drifts_only_where_it_is_read(original, tmp_path):
    updated = perturbed_organism(tmp_path)
    result = run(tmp_path / "out", "--baseline", str(original / "report" / "report.json"), "--fail-on-drift",
                 env={"SAECLAIMS_ORGANISM": str(updated)})
    cmp = _comparison(tmp_path / "out")
    drifted = {(r["claim"], r["sae_id"]) for r in cmp["rows"] if r["drifted"]}
    assert ("in-context-performs-well", CHANGED) in drifted
    assert {hook for _, hook in drifted} == {CHANGED}  # the other SAEs and the norms did not change
    assert "drift: in-context-performs-well @ organism/blocks.1.hook_resid_pre: baseline" in result.stdout
    md = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## Changes since baseline" in md and "changes_since_baseline.png" in md


def test_junit_xml_carries_the_numbers(unchanged):
    text = (unchanged / "junit.xml").read_text()
    for name in ("saeclaims.estimate", "saeclaims.ci_low", "saeclaims.ci_high", "saeclaims.threshold",
                 "saeclaims.verdict", "saeclaims.drift"):
        assert f'name="{name}"' in text


@pytest.mark.slow
def test_false_drift_rate_over_seeds(original, tmp_path):
    """Other seeds against the seed-0 baseline (unpaired: other resamples and random directions): the share of
    drifted rows stays within what the run's family confidence allows."""
    rows = drifted = 0
    for seed in (1, 2, 3, 4):
        out = tmp_path / f"seed{seed}"
        run(out, "--sae-seed", str(seed), "--baseline", str(original / "report" / "report.json"))
        cmp = _comparison(out)
        rows += len(cmp["rows"])
        drifted += sum(r["drifted"] for r in cmp["rows"])
    print(f"false drift: {drifted} of {rows} rows over 4 seeds")
    assert drifted <= max(1, 0.05 * rows)
