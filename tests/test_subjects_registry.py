"""The subject registry dispatches specs to sources; the organism loads without the builder's
training code; organism_dir() finds the organism or says in one line how to get it."""

import subprocess
import sys
import textwrap

import pytest

import saeclaims.subjects as subjects
from saeclaims.subjects import (
    SubjectError,
    SubjectInfo,
    SubjectSource,
    describe_subject,
    load_subject,
    organism_dir,
    register_source,
    unregister_source,
)
from tests.conftest import tiny_subject

needs_organism = pytest.mark.skipif(not (organism_dir() / "card.json").exists(), reason="organism not built")


def test_unknown_spec_is_one_line_listing_the_valid_forms():
    for call in (load_subject, describe_subject):
        with pytest.raises(SubjectError) as err:
            call("no-such-release")
        msg = str(err.value)
        assert "\n" not in msg
        assert "'no-such-release'" in msg
        assert "organism" in msg and "local:DIR" in msg and "gpt2-small-res-jb[:id,id]" in msg


@pytest.fixture
def tiny_source():
    """A custom `tiny:` prefix, removed again after the test."""
    calls = []

    def load(spec, device, n_seqs, seq_len, text_file):
        calls.append((spec, device, n_seqs, seq_len, text_file))
        return tiny_subject()

    source = register_source(SubjectSource(
        form="tiny:NAME", prefix="tiny:", load=load, help="a random test model",
        describe=lambda spec: SubjectInfo(spec, ["blocks.0.hook_resid_pre"])))
    yield source, calls
    assert unregister_source("tiny:NAME") is source


def test_a_registered_prefix_is_dispatched(tiny_source):
    source, calls = tiny_source
    s = load_subject("tiny:x", "cpu", 3, 16)
    assert s.name == "tiny" and calls == [("tiny:x", "cpu", 3, 16, None)]
    assert describe_subject("tiny:x").sae_ids == ["blocks.0.hook_resid_pre"]
    assert subjects.find_source("tiny:x") is source
    with pytest.raises(SubjectError, match=r"tiny:NAME \(a random test model\)"):
        load_subject("nope")


def test_names_and_prefixes_are_tried_before_the_release_matcher(tiny_source):
    forms = [s.form for s in subjects.sources()]
    assert forms[-1] == "RELEASE[:id,id]" and {"organism", "local:DIR", "tiny:NAME"} <= set(forms[:-1])


def test_a_source_sets_exactly_one_way_to_match():
    with pytest.raises(ValueError, match="exactly one of"):
        SubjectSource(form="x", load=None, describe=None, help="h", name="x", prefix="x:")
    with pytest.raises(ValueError, match="one line"):
        SubjectSource(form="x", load=None, describe=None, help="two\nlines", name="x")


def test_builtin_loaders_are_looked_up_at_call_time(monkeypatch):
    monkeypatch.setattr("saeclaims.subjects.organism.load_organism", lambda **kw: ("patched", kw))
    assert load_subject("organism", n_seqs=2) == ("patched", {"device": "cpu", "n_seqs": 2, "seq_len": None})


def test_offline_when_the_hub_is_unreachable(monkeypatch):
    """Patch hub_reachable where it is defined (saeclaims.subjects.loading), not its re-export."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("saeclaims.subjects.loading.hub_reachable", lambda timeout=3.0: False)
    with subjects.offline_unless_reachable():
        assert hf.HF_HUB_OFFLINE is True
    assert hf.HF_HUB_OFFLINE is False


@needs_organism
def test_loading_the_organism_does_not_import_the_builder():
    code = textwrap.dedent("""
        import sys
        from saeclaims.subjects import load_organism
        load_organism(n_seqs=1, seq_len=8)
        print(" ".join(sorted(m for m in sys.modules if m.startswith("saeclaims.organism"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "saeclaims.organism.layout" in loaded
    assert not loaded & {f"saeclaims.organism.{m}" for m in ("build", "saes", "model", "corpus")}, loaded


def test_organism_dir_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAECLAIMS_ORGANISM", str(tmp_path))
    assert organism_dir() == tmp_path


def test_organism_dir_without_an_organism_says_how_to_get_one(monkeypatch, tmp_path):
    from saeclaims.subjects import organism as mod

    monkeypatch.delenv("SAECLAIMS_ORGANISM", raising=False)
    monkeypatch.setattr(mod, "_packaged_organism", lambda: None)
    monkeypatch.setattr(mod, "_REPO_ORGANISM", tmp_path / "missing")
    with pytest.raises(SubjectError) as err:
        organism_dir()
    msg = str(err.value)
    assert "\n" not in msg and "pip install saeclaims" in msg and "SAECLAIMS_ORGANISM" in msg
    assert "python -m saeclaims.organism build" in msg
