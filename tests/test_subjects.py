"""Subjects: the organism loads offline and is verified; bad input fails with one clear line;
the release path's loading code works on local files and fails fast without the hub."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from saeclaims.artifacts import ArtifactError
from saeclaims.subjects import (
    HubUnavailableError,
    SubjectError,
    hook_order,
    load_hooked_model,
    load_local,
    load_organism,
    load_subject,
    organism_dir,
    start_layer,
    validate_subject,
)
from tests.conftest import tiny_sae, tiny_subject

ORGANISM = organism_dir()
needs_organism = pytest.mark.skipif(not (ORGANISM / "card.json").exists(), reason="organism not built")


def test_hook_order_and_start_layer():
    from saeclaims.subjects.core import is_residual, replaced_inside_block

    kinds = ["hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"]
    assert [hook_order(f"blocks.3.{k}") for k in kinds] == [(3, r) for r in range(6)]
    assert [start_layer(f"blocks.3.{k}") for k in kinds] == [3, 3, 3, 3, 3, 4]
    assert [replaced_inside_block(f"blocks.3.{k}") for k in kinds] == [False, True, True, True, True, False]
    assert [is_residual(f"blocks.3.{k}") for k in kinds] == [True, False, False, True, False, True]
    for bad in ("blocks.0.attn.hook_q", "blocks.0.ln2.hook_normalized", "hook_embed", "blocks.x.hook_resid_pre"):
        with pytest.raises(SubjectError, match="not one sae_lens SAEs are trained on"):
            hook_order(bad)


def test_release_ids_name_their_hooks_without_downloading():
    from saeclaims.subjects import describe_subject
    from saeclaims.subjects.core import hook_in_id

    assert hook_in_id("blocks.8.hook_resid_pre_768") == "blocks.8.hook_resid_pre"
    assert hook_in_id("blocks.0.hook_z") == "blocks.0.attn.hook_z"
    assert hook_in_id("blocks.2.attn.hook_z") == "blocks.2.attn.hook_z"
    assert hook_in_id("layer_5/width_16k/average_l0_68") is None
    info = describe_subject("gpt2-small-res-jb-feature-splitting")
    assert len(info.sae_ids) == 8 and {info.hook_of(i) for i in info.sae_ids} == {"blocks.8.hook_resid_pre"}
    info = describe_subject("gpt2-small-hook-z-kk:blocks.3.hook_z,blocks.1.hook_z")
    assert info.sae_ids == ["blocks.1.hook_z", "blocks.3.hook_z"]
    assert info.hook_of("blocks.3.hook_z") == "blocks.3.attn.hook_z"
    info = describe_subject("gpt2-small-mlp-out-v5-32k:blocks.0.hook_mlp_out")
    assert info.sae_ids == ["blocks.0.hook_mlp_out"]


def test_scopes_select_by_the_hook_each_sae_reads():
    from saeclaims.catalog import SCOPES
    from saeclaims.subjects import SubjectInfo

    info = SubjectInfo("x", ["b.small", "a.big", "blocks.1.hook_resid_pre", "mlp"],
                       hook_names={"b.small": "blocks.0.hook_resid_pre", "a.big": "blocks.0.hook_resid_pre",
                                   "mlp": "blocks.0.hook_mlp_out"})
    assert info.sae_ids == ["a.big", "b.small", "mlp", "blocks.1.hook_resid_pre"]
    assert SCOPES["resid_pre"].rows(info) == ["a.big", "b.small", "blocks.1.hook_resid_pre"]
    assert SCOPES["resid_pre0"].rows(info) == ["a.big", "b.small"]
    assert SCOPES["later_resid_pre"].rows(info) == ["blocks.1.hook_resid_pre"]
    assert SCOPES["all"].rows(info) == info.sae_ids


@needs_organism
def test_organism_loads_offline_with_its_saes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = load_organism(n_seqs=4, seq_len=128)
    card = json.loads((ORGANISM / "card.json").read_text())
    n_layers = card["spec"]["model"]["n_layers"]
    assert s.sae_ids == [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"]
    assert set(s.context_sizes.values()) == {card["spec"]["model"]["n_ctx"] // card["spec"]["context_ratio"]}
    assert sorted(s.full_context_saes) == sorted(s.saes)
    assert s.tokens.shape == (4, 128) and (s.tokens[:, 0] == card["bos_token_id"]).all()
    assert s.has_learned_positions


def _copy_organism(tmp_path: Path) -> Path:
    dst = tmp_path / "organism"
    shutil.copytree(ORGANISM, dst, ignore=shutil.ignore_patterns(".build"))
    return dst


@needs_organism
def test_corrupt_artifact_is_named(tmp_path):
    root = _copy_organism(tmp_path)
    target = root / "eval_tokens.npy"
    target.write_bytes(target.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="corrupt artifact .*eval_tokens.npy"):
        load_organism(root)


@needs_organism
def test_missing_artifact_is_named(tmp_path):
    root = _copy_organism(tmp_path)
    (root / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing artifact .*model.safetensors"):
        load_organism(root)


def test_missing_organism_card(tmp_path):
    with pytest.raises(SubjectError, match="card .* is missing"):
        load_organism(tmp_path)


@needs_organism
def test_too_many_sequences_or_tokens():
    with pytest.raises(SubjectError, match="asked for 100000 sequences"):
        load_organism(n_seqs=100000)
    with pytest.raises(SubjectError, match="--n-seqs must be >= 1"):
        load_organism(n_seqs=0)


def test_unknown_subject():
    with pytest.raises(SubjectError, match="unknown subject or sae_lens release 'no-such-release'"):
        load_subject("no-such-release")


def test_unknown_sae_id_in_a_release():
    with pytest.raises(SubjectError, match="has no SAE id 'blocks.99.hook_resid_pre'"):
        load_subject("gpt2-small-res-jb:blocks.99.hook_resid_pre")


def test_hook_not_in_model_is_an_error_not_a_log_line():
    s = tiny_subject()
    s.saes["blocks.7.hook_resid_pre"] = tiny_sae(16, 32, "blocks.7.hook_resid_pre", 8)
    s.context_sizes["blocks.7.hook_resid_pre"] = 8
    with pytest.raises(SubjectError, match="hook 'blocks.7.hook_resid_pre' is not in model"):
        validate_subject(s)


def test_d_in_mismatch():
    s = tiny_subject()
    s.saes["blocks.0.hook_resid_pre"] = tiny_sae(8, 16, "blocks.0.hook_resid_pre", 8)
    with pytest.raises(SubjectError, match="d_in 8 != the width 16 of blocks.0.hook_resid_pre"):
        validate_subject(s)


def test_sequences_longer_than_n_ctx():
    s = tiny_subject(n_ctx=32)
    s.tokens = torch.zeros(2, 40, dtype=torch.long)
    with pytest.raises(SubjectError, match="40 tokens exceed the model's n_ctx 32"):
        validate_subject(s)


def test_nan_weights():
    s = tiny_subject()
    with torch.no_grad():
        s.saes["blocks.1.hook_resid_pre"].W_dec[0, 0] = float("nan")
    with pytest.raises(SubjectError, match="W_dec holds NaN or inf"):
        validate_subject(s)
    s = tiny_subject()
    with torch.no_grad():
        s.model.blocks[0].attn.W_Q[0, 0, 0] = float("inf")
    with pytest.raises(SubjectError, match="model parameter blocks.0.attn.W_Q holds NaN or inf"):
        validate_subject(s)


def test_empty_evaluation_set():
    s = tiny_subject()
    s.tokens = torch.zeros(0, 16, dtype=torch.long)
    with pytest.raises(SubjectError, match="empty evaluation set"):
        validate_subject(s)


def test_missing_context_size():
    s = tiny_subject()
    s.saes["blocks.0.hook_resid_pre"].cfg.metadata.context_size = None
    with pytest.raises(SubjectError, match="context_size is None"):
        validate_subject(s)


@pytest.fixture
def local_gpt2_subject(tmp_path):
    """A tiny random GPT-2 checkpoint written by transformers, and an SAE written by save_model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=96, n_positions=64, n_ctx=64, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "model")
    sae = tiny_sae(32, 64, "blocks.1.hook_resid_pre", 8)
    sae.save_model(tmp_path / "saes" / "blocks.1.hook_resid_pre")
    tokens = np.random.default_rng(0).integers(1, 96, size=(4, 32)).astype(np.int64)
    tokens[:, 0] = 0
    np.save(tmp_path / "eval_tokens.npy", tokens)
    (tmp_path / "subject.json").write_text(json.dumps(
        {"model": "model", "from_pretrained_kwargs": {"center_writing_weights": True}}))
    return tmp_path


def test_local_hf_checkpoint_loads_through_the_release_code(local_gpt2_subject):
    s = load_subject(f"local:{local_gpt2_subject}")
    assert s.sae_ids == ["blocks.1.hook_resid_pre"]
    assert s.model.cfg.d_model == s.saes["blocks.1.hook_resid_pre"].cfg.d_in == 32
    assert s.context_sizes == {"blocks.1.hook_resid_pre": 8}
    assert s.model.cfg.n_ctx == 64 and s.has_learned_positions
    # the same weight processing as from_pretrained: LN folded, writing weights centred
    assert s.model.cfg.normalization_type == "LNPre"
    torch.testing.assert_close(s.model.W_pos.mean(-1), torch.zeros(64), atol=1e-5, rtol=0)


def test_local_checkpoint_matches_transformers_logits(local_gpt2_subject):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(local_gpt2_subject / "model").eval()
    model = load_hooked_model(str(local_gpt2_subject / "model"))
    toks = torch.randint(0, 96, (2, 16))
    with torch.no_grad():
        ref = torch.log_softmax(hf(toks).logits, -1)
        got = torch.log_softmax(model(toks), -1)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_gpt2_checkpoint_without_n_ctx_gets_a_clear_error(local_gpt2_subject):
    cfg_path = local_gpt2_subject / "model" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["n_ctx"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SubjectError, match='add "n_ctx": 64'):
        load_hooked_model(str(local_gpt2_subject / "model"))


def test_local_subject_without_saes(tmp_path):
    with pytest.raises(SubjectError, match="no SAEs below"):
        load_local(tmp_path)
    with pytest.raises(SubjectError, match="does not exist"):
        load_local(tmp_path / "nope")


def test_release_path_fails_fast_and_clearly_without_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "ENDPOINT", "https://hub.invalid")
    with pytest.raises(HubUnavailableError) as err:
        load_subject("gpt2-small-res-jb:blocks.0.hook_resid_pre", n_seqs=2, seq_len=16)
    msg = str(err.value)
    assert "gpt2-small" in msg and "HF_HOME" in msg and "HF_HUB_OFFLINE" in msg and "huggingface-cli" in msg


def test_an_evaluation_set_of_bos_alone_is_refused():
    from saeclaims.subjects import SubjectError, validate_subject
    from tests.conftest import tiny_subject

    s = tiny_subject()
    s.tokens[:] = 0  # BOS everywhere: a tokenizer that returned nothing
    with pytest.raises(SubjectError, match=r"every evaluation token in positions \[1, 8\) is BOS"):
        validate_subject(s)
    s = tiny_subject()
    s.tokens[:, 8:] = 0
    with pytest.raises(SubjectError, match="every evaluation token beyond position 8 is BOS"):
        validate_subject(s)


def test_documents_get_one_bos_even_from_a_tokenizer_that_adds_its_own():
    from saeclaims.subjects import tokens_from_texts

    class Prepends:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [0] + [ord(c) % 50 + 1 for c in text]}

    toks = tokens_from_texts(["abcdef", "ghijkl"], Prepends(), 1, 12, bos=0)
    assert toks[0].tolist().count(0) == 2  # one BOS per document, never two in a row


def test_a_transcoder_is_refused_with_the_reason():
    from sae_lens.saes.transcoder import Transcoder, TranscoderConfig

    from saeclaims.subjects import SubjectError, validate_sae
    from tests.conftest import tiny_model

    cfg = TranscoderConfig(d_in=16, d_sae=32, d_out=16, apply_b_dec_to_input=False)
    cfg.metadata.hook_name, cfg.metadata.context_size = "blocks.0.hook_resid_pre", 8
    with pytest.raises(SubjectError, match="is a transcoder .*its output is not a reconstruction of its input"):
        validate_sae(Transcoder(cfg), tiny_model(), "tc")


def test_a_single_head_sae_is_refused_naming_its_head_not_another_model():
    from saeclaims.subjects import SubjectError, validate_sae
    from tests.conftest import tiny_model, tiny_sae

    model = tiny_model()
    d_head = model.cfg.d_head
    sae = tiny_sae(d_head, 2 * d_head, "blocks.0.attn.hook_z", 8)
    sae.cfg.metadata.hook_head_index = 1
    with pytest.raises(SubjectError, match=r"one attention head \(hook_head_index 1\) of blocks.0.attn.hook_z"):
        validate_sae(sae, model, "head1")


@needs_organism
def test_a_transformerlens_native_folder_loads_as_the_organism_does(tmp_path):
    """`local:DIR` may name a TransformerLens-native model (model_config.json + model.safetensors +
    tokenizer.json): it loads as saved, with no weight processing, so its logits are the organism's."""
    folder = tmp_path / "native"
    folder.mkdir()
    for name in ("model_config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(ORGANISM / name, folder / name)
    s = load_organism(n_seqs=3, seq_len=96)
    # sae_lens records center_writing_weights with every SAE; it does not apply to a processed state dict
    model = load_hooked_model(str(folder), center_writing_weights=False)
    with torch.no_grad():
        assert torch.equal(model(s.tokens), s.model(s.tokens))
    assert model.cfg.normalization_type == s.model.cfg.normalization_type == "LNPre"
    assert model.tokenizer.bos_token_id == s.model.tokenizer.bos_token_id == 0
    assert model.cfg.tokenizer_prepends_bos is False
    with pytest.raises(SubjectError, match="TransformerLens-native model.*cannot apply"):
        load_hooked_model(str(folder), trust_remote_code=True)
    (folder / "model.safetensors").unlink()
    shutil.copy(ORGANISM / "model_config.json", folder / "model.safetensors")
    with pytest.raises(SubjectError, match="model.safetensors"):
        load_hooked_model(str(folder))


class _ProtocolSAE:
    """Not a sae_lens object: encode/decode and a cfg with sae_lens's metadata fields, nothing else."""

    def __init__(self, d_in: int, hook: str, ctx: int):
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(d_in=d_in, metadata=SimpleNamespace(hook_name=hook, context_size=ctx))
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(d_in, 2 * d_in, generator=g) / d_in**0.5

    def encode(self, x):
        return torch.relu(x @ self.w)

    def decode(self, codes):
        return codes @ self.w.T / 2


def test_an_object_following_the_sae_protocol_is_measured():
    from saeclaims.splice import measure
    from saeclaims.subjects import validate_subject

    s = tiny_subject(n_seqs=2, seq_len=12, hooks=["blocks.0.hook_mlp_out"])
    s.saes = {"mine": _ProtocolSAE(16, "blocks.0.hook_mlp_out", 8)}
    s.context_sizes = {"mine": 8}
    validate_subject(s)
    m = measure(s, variants=("sae", "zero"), progress=False)
    assert np.isfinite(m.get("sae", "mine", "dce")).all()
    del _ProtocolSAE.decode
    try:
        with pytest.raises(SubjectError, match="does not follow the SAE protocol: it needs encode"):
            validate_subject(s)
    finally:
        _ProtocolSAE.decode = lambda self, codes: codes @ self.w.T / 2


def test_an_sae_at_a_hook_the_model_lacks_or_under_a_wrong_id_is_refused():
    from saeclaims.subjects import validate_subject

    s = tiny_subject(n_seqs=2, seq_len=12, hooks=["blocks.0.hook_resid_pre"])
    s.saes = {"x": tiny_sae(16, 32, "blocks.5.hook_mlp_out", 8)}
    s.context_sizes = {"x": 8}
    with pytest.raises(SubjectError, match="hook 'blocks.5.hook_mlp_out' is not in model"):
        validate_subject(s)
    s.saes = {"blocks.1.hook_resid_pre": tiny_sae(16, 32, "blocks.0.hook_resid_pre", 8)}
    s.context_sizes = {"blocks.1.hook_resid_pre": 8}
    with pytest.raises(SubjectError, match="reads blocks.0.hook_resid_pre, but its id names blocks.1.hook_resid_pre"):
        validate_subject(s)


def test_two_saes_with_one_id_are_refused(tmp_path):
    from saeclaims.subjects import describe_subject

    with pytest.raises(SubjectError, match="'blocks.0.hook_resid_pre' is named twice"):
        describe_subject("gpt2-small-res-jb:blocks.0.hook_resid_pre,blocks.0.hook_resid_pre")
    cfg = {"metadata": {"hook_name": "blocks.0.hook_resid_pre", "context_size": 8}}
    for part in ("a", "b"):
        d = tmp_path / part / "blocks.0.hook_resid_pre"
        d.mkdir(parents=True)
        (d / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SubjectError, match="two SAEs below .* have the id 'blocks.0.hook_resid_pre'"):
        describe_subject(f"local:{tmp_path}")


def test_document_labels_must_cover_every_sequence_and_name_two_documents():
    """The bootstrap resamples documents: one label per sequence, and at least two documents (else refused once,
    at load, naming the fix); None means each sequence is its own."""
    import numpy as np

    from saeclaims.subjects.validation import validate_subject
    from tests.conftest import tiny_subject

    subj = tiny_subject(n_seqs=3, seq_len=12)
    for ok in (None, np.array([0, 0, 1]), np.array([5, 6, 7])):
        subj.documents = ok
        validate_subject(subj)
    subj.documents = np.array([2, 2, 2])
    with pytest.raises(SubjectError, match="all come from one document.*raise --n-seqs"):
        validate_subject(subj)
    subj.documents = np.array([0, 1])
    with pytest.raises(SubjectError, match=r"\(2,\) document labels for 3 sequences"):
        validate_subject(subj)
