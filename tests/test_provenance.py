"""Where a run's numbers come from (provenance.py): digests that follow the weights, the subject's record."""

import torch

from saeclaims.provenance import module_sha256, peak_memory_mib, subject_record, tensor_sha256
from tests.conftest import tiny_sae, tiny_subject


def test_digests_follow_content_not_identity():
    hook = "blocks.0.hook_resid_pre"
    a, b = tiny_sae(16, 32, hook, 8, seed=1), tiny_sae(16, 32, hook, 8, seed=1)
    assert module_sha256(a) == module_sha256(b) != module_sha256(tiny_sae(16, 32, hook, 8, seed=2))
    t = torch.arange(6).reshape(2, 3)
    assert tensor_sha256(t) == tensor_sha256(t.clone()) != tensor_sha256(t + 1)


def test_the_record_lifts_model_release_and_ids_out_of_the_provenance():
    subj = tiny_subject(n_seqs=3, seq_len=12)
    subj.provenance.update(model="m", release="r", sae_ids=list(subj.sae_ids), note="kept")
    rec = subject_record("tiny", subj, "cpu")
    assert (rec.name, rec.model, rec.release, rec.sae_ids, rec.device) == ("tiny", "m", "r", subj.sae_ids, "cpu")
    assert (rec.n_seqs, rec.seq_len) == (3, 12) and rec.provenance == {"note": "kept"}
    assert set(rec.sae_sha256) == set(subj.saes) | set(subj.full_context_saes)
    assert rec.tokens_sha256 == tensor_sha256(subj.tokens)


def test_peak_memory_is_reported_in_mib():
    peak = peak_memory_mib()
    assert 10 < peak["rss"] < 1e6
