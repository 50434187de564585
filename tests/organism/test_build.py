"""The organism builder end to end at smoke size: tokenizer, model, one SAE, card; and resumption."""

import json
from pathlib import Path

import numpy as np
import pytest

from saeclaims.artifacts import verify_tree
from saeclaims.organism.build import build, smoke_spec
from saeclaims.organism.corpus import cut_documents, split_corpus, windows
from saeclaims.subjects import load_organism

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "gutenberg"
GPT2_WPOS = CORPUS.parents[1] / "reference" / "gpt2-small" / "W_pos.npy"
needs_corpus = pytest.mark.skipif(not (CORPUS.is_dir() and GPT2_WPOS.is_file()),
                                  reason=f"corpus or GPT-2 reference not found under {CORPUS.parents[1]}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if not (CORPUS.is_dir() and GPT2_WPOS.is_file()):
        pytest.skip(f"corpus or GPT-2 reference not found under {CORPUS.parents[1]}")
    out = tmp_path_factory.mktemp("smoke") / "organism"
    return out, build(CORPUS, out, smoke_spec(seed=1), GPT2_WPOS)


@needs_corpus
def test_smoke_build_writes_every_artifact_and_a_card(smoke):
    out, card = smoke
    for name in ("tokenizer.json", "model.safetensors", "model_config.json", "eval_tokens.npy", "card.json"):
        assert (out / name).exists(), name
    assert (out / "saes" / "ctx8" / "blocks.0.hook_resid_pre" / "cfg.json").exists()
    verify_tree(out, card["sha256"])
    assert set(card["eval_loss"]["by_position"]) == {"[0,8)", "[8,64)"}
    sae = card["saes"]["ctx8/blocks.0.hook_resid_pre"]
    assert sae["context_size"] == 8 and sae["hook_name"] == "blocks.0.hook_resid_pre" and sae["prepend_bos"]
    assert np.isfinite(sae["ce_loss_score_short_context"]) and card["control_ce_score_gap"] == {}  # no control here
    assert card["positions"]["n_components"] >= 3 and card["positions"]["frozen"]
    assert card["corpus"]["n_eval_docs"] > 0 and len(card["corpus"]["file_sha256"]) == 18


@needs_corpus
def test_smoke_organism_loads_as_a_subject(smoke):
    out, card = smoke
    s = load_organism(out)
    assert s.sae_ids == ["blocks.0.hook_resid_pre"] and s.context_sizes == {"blocks.0.hook_resid_pre": 8}
    assert s.tokens.shape == (8, 64) and (s.tokens[:, 0] == card["bos_token_id"]).all()


@needs_corpus
def test_an_interrupted_build_resumes_without_retraining(smoke):
    out, _ = smoke
    model_bytes = (out / "model.safetensors").read_bytes()
    sae_dir = out / "saes" / "ctx8" / "blocks.0.hook_resid_pre"
    for f in sae_dir.iterdir():
        f.unlink()
    sae_dir.rmdir()
    card = build(CORPUS, out, smoke_spec(seed=1), GPT2_WPOS)
    assert (out / "model.safetensors").read_bytes() == model_bytes
    assert sae_dir.exists() and "ctx8/blocks.0.hook_resid_pre" in card["saes"]


def test_documents_and_held_out_split(tmp_path):
    for i in range(3):
        (tmp_path / f"book{i}.txt").write_text(("word " * 200 + "\n\n") * 60)
    split = split_corpus(tmp_path, seed=0, doc_bytes=2000, eval_fraction=0.1)
    books = {d.book for d in split.eval}
    assert books == {"book0", "book1", "book2"}  # evaluation text spans every book
    train_ids = {(d.book, d.index) for d in split.train}
    assert not train_ids & {(d.book, d.index) for d in split.eval}
    assert all(len(d.text) <= 2000 for d in cut_documents("b", "x" * 5000, 2000))


def test_windows_begin_with_bos():
    w = windows(np.arange(1, 100, dtype=np.uint16), 10, 0)
    assert w.shape == (11, 10) and (w[:, 0] == 0).all()
    with pytest.raises(ValueError, match="need 50 windows"):
        windows(np.arange(1, 100, dtype=np.uint16), 10, 0, n=50)


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.txt books"):
        split_corpus(tmp_path, seed=0)


def test_cli_rejects_a_missing_corpus(tmp_path, capsys):
    from saeclaims.organism.__main__ import main

    with pytest.raises(SystemExit):
        main(["build", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "does not exist" in capsys.readouterr().err


def test_card_is_json_serialisable(smoke):
    out, card = smoke
    assert json.loads((out / "card.json").read_text())["seed"] == 1
