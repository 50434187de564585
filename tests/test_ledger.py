"""The ledger of expected verdicts."""

import pytest

from saeclaims.ledger import LedgerError, load_ledger


def test_default_is_holds_and_entries_override(tmp_path):
    (tmp_path / "organism.toml").write_text(
        '[adding-wpos-recovers-layer0]\ndefault = "refuted"\n"blocks.0.hook_resid_pre" = "holds"\n')
    led = load_ledger(tmp_path, "organism")
    assert led.expected("adding-wpos-recovers-layer0", "blocks.1.hook_resid_pre") == "refuted"
    assert led.expected("adding-wpos-recovers-layer0", "blocks.0.hook_resid_pre") == "holds"
    assert led.expected("wpos-helix", "model") == "holds"
    assert load_ledger(tmp_path, "other").expected("wpos-helix", "model") == "holds"


def test_unknown_claim(tmp_path):
    (tmp_path / "organism.toml").write_text('[no-such-claim]\ndefault = "holds"\n')
    with pytest.raises(LedgerError, match="unknown claim 'no-such-claim'"):
        load_ledger(tmp_path, "organism")


def test_unknown_verdict(tmp_path):
    (tmp_path / "organism.toml").write_text('[wpos-helix]\nmodel = "maybe"\n')
    with pytest.raises(LedgerError, match="'maybe' is not a verdict"):
        load_ledger(tmp_path, "organism")


def test_bad_toml(tmp_path):
    (tmp_path / "organism.toml").write_text("[wpos-helix\n")
    with pytest.raises(LedgerError, match="not valid TOML"):
        load_ledger(tmp_path, "organism")


def test_subject_names_map_to_safe_file_names(tmp_path):
    (tmp_path / "gpt2-small-res-jb_blocks.0.hook_resid_pre.toml").write_text('[wpos-helix]\nmodel = "refuted"\n')
    led = load_ledger(tmp_path, "gpt2-small-res-jb:blocks.0.hook_resid_pre")
    assert led.expected("wpos-helix", "model") == "refuted"
