"""Seed stability of the organism's verdicts: the claims under 5 bootstrap / random-direction seeds.

A verdict that flips between seeds must be expected `inconclusive` in the ledger, or its statistic
needs more data; never a moved threshold. Slow (five claim runs): `pytest -m slow tests/test_stability.py`.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from saeclaims.subjects import organism_dir

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2, 3, 4)


def verdicts_for_seed(seed: int, out: Path, *extra: str) -> dict[tuple[str, str, str], str]:
    report = out / f"seed{seed}{'-'.join(extra)}" / "REPORT.md"
    subprocess.run([sys.executable, "-m", "pytest", "claims", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                    "--sae-seed", str(seed), "--sae-report", str(report), *extra], cwd=ROOT, check=False,
                   capture_output=True, text=True)
    payload = json.loads((report.parent / "report" / "report.json").read_text())
    return {(e["subject"], e["claim"], e["sae_id"]): e["verdict"] for e in payload["evidence"]}


@pytest.mark.slow
@pytest.mark.skipif(not (organism_dir() / "card.json").exists(), reason="organism not built")
def test_verdicts_are_stable_across_seeds(tmp_path):
    runs = {seed: verdicts_for_seed(seed, tmp_path) for seed in SEEDS}
    keys = set().union(*runs.values())
    flips = {k: [runs[s].get(k) for s in SEEDS] for k in keys if len({runs[s].get(k) for s in SEEDS}) > 1}
    print(f"{len(keys)} verdicts x {len(SEEDS)} seeds; {len(flips)} change between seeds")
    for k, v in sorted(flips.items()):
        print("  flips:", k, v)
    assert not flips, f"verdicts that depend on the seed: {flips}"


@pytest.mark.slow
@pytest.mark.skipif(not (organism_dir() / "card.json").exists(), reason="organism not built")
def test_autocast_changes_no_verdict(tmp_path, device):
    """Reduced precision (--sae-precision bf16; auto on GPUs) must not change any verdict against float32."""
    fp32 = verdicts_for_seed(0, tmp_path)
    bf16 = verdicts_for_seed(0, tmp_path, "--sae-precision", "bf16", "--sae-device", str(device))
    changed = {k: (fp32[k], bf16.get(k)) for k in fp32 if bf16.get(k) != fp32[k]}
    assert not changed, f"verdicts that change under bf16: {changed}"
