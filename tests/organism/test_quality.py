"""Quality gates of the shipped organism, re-measured (not just read from the card) and checked against
the card's recorded values as golden numbers."""

import json

import numpy as np
import pytest

from saeclaims.artifacts import verify_tree
from saeclaims.organism.model import per_token_loss
from saeclaims.organism.saes import sae_quality
from saeclaims.subjects import load_organism, organism_dir

ROOT = organism_dir()
pytestmark = pytest.mark.skipif(not (ROOT / "card.json").exists(), reason="organism not built")


@pytest.fixture(scope="module")
def card():
    return json.loads((ROOT / "card.json").read_text())


@pytest.fixture(scope="module")
def organism():
    return load_organism()


def test_artifact_hashes_match_the_card(card):
    verify_tree(ROOT, card["sha256"])
    assert {"model.safetensors", "tokenizer.json", "eval_tokens.npy"} <= set(card["sha256"])


def test_under_40_mb():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and ".build" not in p.parts)
    assert total < 40 * 2**20


def test_eval_loss_and_late_positions(organism, card):
    losses = per_token_loss(organism.model, organism.tokens.numpy())
    overall = float(losses.mean())
    assert overall == pytest.approx(card["eval_loss"]["overall"], abs=1e-3)  # golden value
    assert overall <= 5.2
    # late positions are trained: no worse than [8, 64)
    assert losses[:, 64:].mean() <= losses[:, 8:64].mean()


def test_model_has_gpt2_conventions(organism, card):
    cfg = organism.model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_ctx, cfg.d_vocab) == (4, 128, 4, 512, 512, 4096)
    assert cfg.act_fn == "gelu_new" and cfg.positional_embedding_type == "standard"
    assert card["weight_processing"] == {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}


@pytest.mark.parametrize("hook", [f"blocks.{i}.hook_resid_pre" for i in range(4)] + ["blocks.3.hook_resid_post"])
def test_short_context_sae_quality(organism, card, hook):
    sae = organism.saes[hook]
    assert sae.cfg.metadata.context_size == 64 and sae.cfg.metadata.prepend_bos
    q = sae_quality(organism.model, sae, hook, organism.tokens[:32].numpy(), 1, 64)
    recorded = card["saes"][f"ctx64/{hook}"]["in_context"]
    assert q["explained_variance"] == pytest.approx(recorded["explained_variance"], abs=1e-3)
    assert q["l0"] == pytest.approx(recorded["l0"], abs=1e-2)
    assert q["explained_variance"] >= 0.7
    assert 5 <= q["l0"] <= 80


def test_full_context_family_is_kept_apart(organism):
    assert sorted(organism.full_context_saes) == sorted(organism.saes)
    assert {s.cfg.metadata.context_size for s in organism.full_context_saes.values()} == {512}


def test_w_pos_structure_is_reported(card, organism):
    from saeclaims.positional import top_k_variance_share

    share = top_k_variance_share(organism.model.W_pos.detach().numpy()[1:64], 3)
    assert share == pytest.approx(card["w_pos_top3_share"]["rows 1..63"], abs=1e-6)
    assert np.isfinite(share)
