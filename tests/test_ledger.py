"""The ledger of expected verdicts."""

import pytest

from saeclaims.catalog import Catalog
from saeclaims.ledger import Ledger, LedgerError, Sample, draft, load_ledger
from saeclaims.thread import THREAD_CLAIMS

CAT = Catalog(THREAD_CLAIMS)


def test_default_is_holds_and_entries_override(tmp_path):
    (tmp_path / "organism.toml").write_text(
        '[adding-wpos-recovers]\ndefault = "refuted"\n"blocks.0.hook_resid_pre" = "holds"\n')
    led = load_ledger(tmp_path, "organism", CAT)
    assert led.expected("adding-wpos-recovers", "blocks.1.hook_resid_pre") == "refuted"
    assert led.expected("adding-wpos-recovers", "blocks.0.hook_resid_pre") == "holds"
    assert led.expected("wpos-helix", "model") == "holds"
    assert load_ledger(tmp_path, "other", CAT).expected("wpos-helix", "model") == "holds"


def test_unknown_claim(tmp_path):
    (tmp_path / "organism.toml").write_text('[no-such-claim]\ndefault = "holds"\n')
    with pytest.raises(LedgerError, match="unknown claim 'no-such-claim'"):
        load_ledger(tmp_path, "organism", CAT)


def test_unknown_verdict(tmp_path):
    (tmp_path / "organism.toml").write_text('[wpos-helix]\nmodel = "maybe"\n')
    with pytest.raises(LedgerError, match="'maybe' is not a verdict"):
        load_ledger(tmp_path, "organism", CAT)


def test_bad_toml(tmp_path):
    (tmp_path / "organism.toml").write_text("[wpos-helix\n")
    with pytest.raises(LedgerError, match="not valid TOML"):
        load_ledger(tmp_path, "organism", CAT)


def test_subject_names_map_to_safe_file_names(tmp_path):
    (tmp_path / "gpt2-small-res-jb_blocks.0.hook_resid_pre.toml").write_text('[wpos-helix]\nmodel = "refuted"\n')
    led = load_ledger(tmp_path, "gpt2-small-res-jb:blocks.0.hook_resid_pre", CAT)
    assert led.expected("wpos-helix", "model") == "refuted"


@pytest.mark.parametrize(("verdict", "expected", "sample", "agreement"), [
    ("holds", "holds", Sample(8, 64), "ok"),
    ("refuted", "holds", None, "MISMATCH"),                   # no sample known: strict
    ("inconclusive", "holds", Sample(128, 512), "MISMATCH"),  # at the ledger's own size: strict
    ("inconclusive", "holds", Sample(8, 512), "differs"),     # fewer sequences, wider interval
    ("holds", "inconclusive", Sample(128, 256), "differs"),
    ("inconclusive", "refuted", Sample(8, 512), "differs"),
    ("holds", "refuted", Sample(8, 512), "MISMATCH"),         # a contradiction at any size
    ("refuted", "holds", Sample(8, 512), "MISMATCH"),
])
def test_agreement_at_other_sample_sizes(verdict, expected, sample, agreement):
    led = Ledger("organism", {}, None, Sample(128, 512))
    assert led.agreement(verdict, expected, sample) == agreement


def test_a_ledger_without_its_sample_is_strict_everywhere():
    assert Ledger("organism").agreement("inconclusive", "holds", Sample(8, 512)) == "MISMATCH"


def test_the_drafted_sample_round_trips(tmp_path):
    ev = [{"subject": "organism", "claim": "wpos-helix", "sae_id": "model", "verdict": "refuted", "estimate": 0.48,
           "ci_low": 0.48, "ci_high": 0.48, "confidence": 0.999, "direction": ">=", "threshold": 0.945}]
    text = draft(ev, "organism", Catalog(THREAD_CLAIMS), Sample(128, 512), seed=0, family_confidence=0.95)
    assert "[_drafted]\nn_seqs = 128\nseq_len = 512\nseed = 0\nfamily_confidence = 0.95" in text
    (tmp_path / "organism.toml").write_text(text)
    led = load_ledger(tmp_path, "organism", Catalog(THREAD_CLAIMS))
    assert led.drafted_at == Sample(128, 512) and led.expected("wpos-helix", "model") == "refuted"


def test_a_malformed_drafted_table(tmp_path):
    (tmp_path / "organism.toml").write_text('[_drafted]\nn_seqs = "many"\nseq_len = 512\n')
    with pytest.raises(LedgerError, match=r"\[_drafted\] needs integer n_seqs and seq_len"):
        load_ledger(tmp_path, "organism", CAT)


def test_hook_name_keys_stand_for_the_one_sae_that_reads_the_hook(tmp_path):
    hooks = {"a": "blocks.0.hook_resid_pre", "b": "blocks.0.hook_resid_pre", "c": "blocks.1.hook_mlp_out"}
    (tmp_path / "s.toml").write_text('[beyond-context-degrades]\n"blocks.1.hook_mlp_out" = "refuted"\n')
    led = load_ledger(tmp_path, "s", CAT)
    led.check_rows({"beyond-context-degrades": ["a", "b", "c"]}, hooks.__getitem__)
    assert led.expected("beyond-context-degrades", "c") == "refuted"
    assert led.expected("beyond-context-degrades", "a") == "holds"
    (tmp_path / "s.toml").write_text('[beyond-context-degrades]\n"blocks.0.hook_resid_pre" = "refuted"\n')
    led = load_ledger(tmp_path, "s", CAT)
    with pytest.raises(LedgerError, match=r"names hook 'blocks.0.hook_resid_pre', which 2 SAEs read \(a, b\)"):
        led.check_rows({"beyond-context-degrades": ["a", "b", "c"]}, hooks.__getitem__)
