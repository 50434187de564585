"""Every SAE a user has: the mixed subject (standard, JumpReLU and TopK SAEs on resid_pre, attn.hook_z,
attn_out, resid_mid and mlp_out, two of them on one hook) and the rotary subject run every claim to a verdict
or a not-applicable with its reason, never an exception; describing a subject and loading it agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from saeclaims.subjects import describe_subject, load_subject
from tests.conftest import MIXED_DIR, ROTARY_DIR, shared_dir

ROOT = Path(__file__).resolve().parents[1]
MIXED, ROTARY = "local:fixtures/mixed", "local:fixtures/rotary"
SAMPLE = ("--n-seqs", "16", "--seq-len", "256")  # as claims/expected/local_fixtures_{mixed,rotary}.toml were drafted

pytestmark = [
    pytest.mark.xdist_group("reach"),
    pytest.mark.skipif(not (MIXED_DIR / "card.json").exists() or not (ROTARY_DIR / "card.json").exists(),
                       reason="fixtures/mixed or fixtures/rotary not built"),
]


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def run(tmp_path_factory) -> dict:
    """The claims on both subjects in one run, judged against their committed ledgers (made once a session)."""

    def build(out: Path) -> None:
        cmd = [sys.executable, "-m", "pytest", "claims", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               "--sae-progress", "off", "--sae-subject", MIXED, "--sae-subject", ROTARY, *SAMPLE,
               "--sae-report", str(out / "REPORT.md")]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        (out / "proc.json").write_text(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout,
                                                   "stderr": proc.stderr}))

    out = shared_dir(tmp_path_factory, "reach-run", build)
    proc = SimpleNamespace(**json.loads((out / "proc.json").read_text()))
    data = json.loads((out / "report" / "report.json").read_text()) if (out / "report").exists() else {}
    return {"proc": proc, "data": data}


def test_every_claim_on_every_sae_kind_is_a_verdict_or_not_applicable(run):
    proc, data = run["proc"], run["data"]
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert {o["outcome"] for o in data["outcomes"]} <= {"passed", "skipped"}
    judged = {(e["subject"], e["claim"], e["sae_id"]) for e in data["evidence"]}
    na = {(n["subject"], n["claim"], n["sae_id"]): n["reason"] for n in data["not_applicable"]}
    assert all(reason for reason in na.values())
    assert not judged & set(na)
    ids = {i for s, _, i in judged | set(na) if s == MIXED}
    assert {"blocks.0.hook_resid_pre", "blocks.0.hook_resid_pre.topk", "blocks.1.attn.hook_z",
            "blocks.1.hook_attn_out", "blocks.2.hook_resid_mid", "blocks.2.hook_mlp_out"} <= ids
    # every SAE kind is judged by some claim, and the reasons are the ones the premises imply
    for sae_id in ("blocks.1.attn.hook_z", "blocks.1.hook_attn_out", "blocks.2.hook_mlp_out",
                   "blocks.0.hook_resid_pre.topk"):
        assert any(s == MIXED and i == sae_id for s, _, i in judged), sae_id
    mlp = (MIXED, "position-not-most-of-it-output", "blocks.2.hook_mlp_out")
    assert "summand of the residual stream only" in na[mlp]
    assert "fixed by construction" in na[(MIXED, "encoder-off-distribution", "blocks.1.attn.hook_z")]
    assert "no mean dCE_sae(I) to divide by" in na[(MIXED, "beyond-context-degrades", "blocks.1.attn.hook_z")]
    assert "fixed by construction" in na[(MIXED, "encoder-off-distribution", "blocks.0.hook_resid_pre.topk")]


def test_the_thread_claims_declare_every_variant_they_read(run):
    """The claims' markers list what they read (reads=): a read they left out would be measured in a pass of its
    own with a warning, on every SAE kind these subjects have."""
    out = run["proc"].stdout + run["proc"].stderr
    assert run["proc"].returncode == 0, out[-6000:]
    assert "no selected claim test declares it" not in out, out[-6000:]


def test_the_rotary_subject_runs_every_context_claim(run):
    data = run["data"]
    judged = {e["claim"] for e in data["evidence"] if e["subject"] == ROTARY}
    na = {n["claim"]: n["reason"] for n in data["not_applicable"] if n["subject"] == ROTARY}
    for cid in ("beyond-context-degrades", "in-context-performs-well", "errors-worse-than-random",
                "errors-worse-than-random-beyond"):
        assert cid in judged, (cid, na.get(cid))
    # control-relative claims reach a verdict, or say the control is not shown to be like the SAE in context
    for cid in ("encoder-off-distribution", "beyond-context-degrades-vs-control", "full-context-training-fixes"):
        assert cid in judged or "the control is not shown to be like the SAE" in na.get(cid, ""), (cid, na.get(cid))
    for cid in ("adding-wpos-recovers", "wpos-helix", "position-not-most-of-it-output"):
        assert cid in na and "rotary" in na[cid], (cid, na.get(cid))
    # an instrument that failed its planted controls is not run anywhere, whatever the subject's positions
    assert "failed validation on planted controls" in na["position-not-most-of-it-input"]


@pytest.mark.parametrize("spec", [MIXED, ROTARY])
def test_describing_and_loading_agree(spec):
    info = describe_subject(spec)
    subject = load_subject(spec, n_seqs=2, seq_len=64)
    assert info.sae_ids == subject.sae_ids
    assert {i: info.hook_of(i) for i in info.sae_ids} == {i: subject.hook_of(i) for i in subject.sae_ids}
    assert info.full_context_sae_ids == sorted(subject.full_context_saes, key=subject.sae_ids.index)
