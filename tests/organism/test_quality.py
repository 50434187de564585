"""Quality gates of the shipped organism: the properties of GPT-2 small + gpt2-small-res-jb that the claims
depend on (issue 22), re-measured from the weights (not read from the card) and checked against the card's
recorded values as golden numbers.

The marks are GPT-2's, set before the organism was built: W_pos top-3 share of rows 1..127 >= 0.9 (GPT-2:
0.957); loss on [512, 1024) at least 0.05 nats below [64, 128); each short SAE's explained variance >= 0.9,
CE-loss score >= 0.95 and L0 in 10..100 in context, width >= 16 x d_model; each control's CE-loss score on
[1, 128) within 0.01 of its SAE's. Where the shipped organism misses a mark, the gate is a strict expected
failure naming the card's number (README's organism section and the card's README say the same): it fails
the suite the day the mark is met, so this list stays true.
"""

import json

import pytest

from saeclaims.artifacts import verify_tree
from saeclaims.fact_measurement import helix_share
from saeclaims.organism.model import per_token_loss
from saeclaims.organism.saes import ce_loss_score, sae_quality
from saeclaims.subjects import load_organism, organism_dir

ROOT = organism_dir()
pytestmark = [pytest.mark.skipif(not (ROOT / "card.json").exists(), reason="organism not built"),
              pytest.mark.xdist_group("organism-quality")]  # one worker measures the organism once

N_CTX, SHORT = 1024, 128
HOOKS = [f"blocks.{i}.hook_resid_pre" for i in range(4)] + ["blocks.3.hook_resid_post"]
QUALITY_SEQS = 32  # the card's quality_seqs: the first rows of the evaluation set

# (gate, hook) -> the card's number where the shipped organism misses GPT-2's mark
SHORT_OF_MARK: dict[tuple[str, str], str] = {
    ("long_context_gain", ""): "the model does not use context past ~64 (card: long_context_gain -0.019 nats on "
                               "the 64 evaluation rows)",
}


def _gate(name: str, hook: str = "") -> list:
    reason = SHORT_OF_MARK.get((name, hook))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def card():
    return json.loads((ROOT / "card.json").read_text())


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def organism():
    return load_organism()


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def losses(organism):
    return per_token_loss(organism.model, organism.tokens.numpy())


def test_artifact_hashes_match_the_card(card):
    verify_tree(ROOT, card["sha256"])
    assert {"model.safetensors", "tokenizer.json", "eval_tokens.npy"} <= set(card["sha256"])


def test_weights_within_30_mb():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and ".build" not in p.parts)
    assert total <= 30 * 2**20


def test_eval_loss_and_late_positions(losses, card):
    overall = float(losses.mean())
    # golden value: the card's is over the build's 128 evaluation rows, the shipped set is their first rows
    assert card["spec"]["n_eval_seqs"] == losses.shape[0]
    assert overall == pytest.approx(card["eval_loss"]["overall"], abs=1e-3)
    assert overall <= 5.2
    assert losses[:, 64:].mean() <= losses[:, 8:64].mean()  # late positions are trained


def test_model_has_gpt2_conventions(organism, card):
    cfg = organism.model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.n_ctx, cfg.d_vocab) == (4, 128, 4, 512, N_CTX, 4096)
    assert cfg.act_fn == "gelu_new" and cfg.positional_embedding_type == "standard"
    assert card["weight_processing"] == {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}


def test_w_pos_is_gpt2s_helix(organism, card):
    share = helix_share(organism.model.W_pos.detach().numpy(), SHORT)
    assert share == pytest.approx(card["w_pos_top3_share"][f"rows 1..{SHORT - 1}"], abs=1e-6)
    assert share >= 0.9
    assert card["positions"]["frozen"] and card["positions"]["variance_share_of_reference"] >= 0.98


@pytest.mark.parametrize("gate", [pytest.param("long_context_gain", marks=_gate("long_context_gain"))])
def test_model_uses_long_context(losses, gate):
    gain = float(losses[:, SHORT // 2 : SHORT].mean() - losses[:, N_CTX // 2 :].mean())
    assert gain >= 0.05, f"loss on [64,128) minus on [512,1024) is {gain:.4f} nats"


def _per_hook(gate: str) -> list:
    return [pytest.param(h, marks=_gate(gate, h), id=h) for h in HOOKS]


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def quality(organism):
    toks = organism.tokens[:QUALITY_SEQS].numpy()
    return {h: sae_quality(organism.model, organism.saes[h], h, toks, 1, SHORT) for h in HOOKS}


@pytest.fixture(scope="session")  # not "module": here xdist spreads a module (even a group) over workers
def ce_scores(organism):
    """CE-loss scores on [1, 128) of both families; the sequences are cut at 128 (the loss there is causal)."""
    toks = organism.tokens[:QUALITY_SEQS, :SHORT].numpy()
    return {(fam, h): ce_loss_score(organism.model, saes[h], h, toks, 1, SHORT)
            for fam, saes in (("short", organism.saes), ("control", organism.full_context_saes)) for h in HOOKS}


@pytest.mark.parametrize("hook", HOOKS)
def test_short_family_matches_its_card(organism, card, quality, ce_scores, hook):
    sae = organism.saes[hook]
    assert sae.cfg.metadata.context_size == SHORT and sae.cfg.metadata.prepend_bos
    assert sae.cfg.d_sae >= 16 * organism.model.cfg.d_model
    recorded = card["saes"][f"ctx{SHORT}/{hook}"]
    assert quality[hook]["explained_variance"] == pytest.approx(recorded["in_context"]["explained_variance"], abs=1e-3)
    assert quality[hook]["l0"] == pytest.approx(recorded["in_context"]["l0"], abs=1e-2)
    assert ce_scores[("short", hook)] == pytest.approx(recorded["ce_loss_score_short_context"], abs=1e-3)


@pytest.mark.parametrize("hook", _per_hook("explained_variance"))
def test_short_sae_explained_variance(quality, hook):
    assert quality[hook]["explained_variance"] >= 0.9


@pytest.mark.parametrize("hook", _per_hook("ce_loss_score"))
def test_short_sae_ce_loss_score(ce_scores, hook):
    assert ce_scores[("short", hook)] >= 0.95


@pytest.mark.parametrize("hook", _per_hook("l0"))
def test_short_sae_l0_in_the_release_range(quality, hook):
    assert 10 <= quality[hook]["l0"] <= 100


@pytest.mark.parametrize("hook", _per_hook("control_gap"))
def test_control_matches_its_sae_in_context(ce_scores, hook):
    gap = ce_scores[("short", hook)] - ce_scores[("control", hook)]
    assert abs(gap) <= 0.01, f"CE-loss score gap (short - control) on [1, 128) is {gap:+.4f}"


def test_full_context_family_is_kept_apart(organism):
    assert sorted(organism.full_context_saes) == sorted(organism.saes)
    assert {s.cfg.metadata.context_size for s in organism.full_context_saes.values()} == {N_CTX}


def test_short_of_mark_names_real_gates():
    gates = {"long_context_gain", "explained_variance", "ce_loss_score", "l0", "control_gap"}
    assert {g for g, _ in SHORT_OF_MARK} <= gates
    assert all(h in ("", *HOOKS) for _, h in SHORT_OF_MARK) and all(SHORT_OF_MARK.values())
