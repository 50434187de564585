"""The shipped mixed and rotary subjects are what their cards say: sae_lens loads every SAE, each reads
the hook it claims with the card's quality, and the rotary builder gives a rotary model whose SAEs were
trained at a context shorter than the model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saeclaims.artifacts import verify_tree
from saeclaims.subjects.loading import load_hooked_model, load_tl_native
from tests.conftest import MIXED_DIR, ROTARY_DIR

needs_mixed = pytest.mark.skipif(not (MIXED_DIR / "card.json").exists(), reason="fixtures/mixed not built")
needs_rotary = pytest.mark.skipif(not (ROTARY_DIR / "card.json").exists(), reason="fixtures/rotary not built")


def _card(root: Path) -> dict:
    return json.loads((root / "card.json").read_text())


def _check_saes(model, folders: dict[str, Path], entries: dict[str, dict], tokens: np.ndarray) -> None:
    """Each SAE loads with sae_lens, reads a hook of the model as its card says, and reconstructs with the
    card's L0 and explained variance inside and beyond its context (recomputed here, one forward pass)."""
    from sae_lens import SAE

    assert sorted(folders) == sorted(entries)
    saes = {key: SAE.load_from_disk(str(d), device="cpu") for key, d in folders.items()}
    hooks = {s.cfg.metadata.hook_name for s in saes.values()}
    assert hooks <= set(model.hook_dict)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.from_numpy(tokens.astype(np.int64)), names_filter=list(hooks),
                                        stop_at_layer=max(int(h.split(".")[1]) for h in hooks) + 1)
    for key, sae in saes.items():
        entry, meta = entries[key], sae.cfg.metadata
        assert meta.hook_name == entry["hook_name"] and meta.context_size == entry["context_size"], key
        assert sae.cfg.d_sae == entry["d_sae"] and sae.cfg.architecture() == entry["architecture"], key
        for part, (lo, hi) in (("in_context", (1, meta.context_size)),
                               ("beyond_context", (meta.context_size, tokens.shape[1]))):
            if part not in entry:
                continue
            x = cache[meta.hook_name][:, lo:hi].flatten(0, 1)  # hook_z keeps its heads: the SAE reshapes
            with torch.no_grad():
                acts = sae.encode(x)
                rec = sae.decode(acts).reshape(len(x), -1)
            x = x.reshape(len(x), -1)
            ev = 1 - ((x - rec) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
            assert float(ev) == pytest.approx(entry[part]["explained_variance"], abs=1e-3), (key, part)
            assert float((acts > 0).sum(-1).float().mean()) == pytest.approx(entry[part]["l0"], abs=0.05), key


@needs_mixed
def test_mixed_saes_load_read_their_hooks_and_match_the_card():
    card = _card(MIXED_DIR)
    verify_tree(MIXED_DIR, card["sha256"])
    meta = json.loads((MIXED_DIR / "subject.json").read_text())
    model = load_hooked_model(str(MIXED_DIR / meta["model"]))  # the organism's native folder, not a copy
    organism = _card(MIXED_DIR / meta["model"])
    assert organism["sha256"]["model.safetensors"] == card["model_sha256"]
    tokens = np.load(MIXED_DIR / "eval_tokens.npy")
    assert tokens.shape[1] == model.cfg.n_ctx and (tokens[:, 0] == organism["bos_token_id"]).all()
    folders = {d.name: d for d in (MIXED_DIR / "saes").iterdir() if (d / "cfg.json").exists()}
    _check_saes(model, folders, card["saes"], tokens[: card["spec"]["quality_seqs"]])
    kinds = {(e["hook_name"].split(".", 2)[2], e["architecture"]) for e in card["saes"].values()}
    assert kinds == {("hook_resid_pre", "standard"), ("hook_resid_pre", "topk"), ("attn.hook_z", "topk"),
                     ("hook_attn_out", "standard"), ("hook_resid_mid", "standard"), ("hook_mlp_out", "jumprelu")}
    on_resid0 = sorted(k for k, e in card["saes"].items() if e["hook_name"] == "blocks.0.hook_resid_pre")
    assert on_resid0 == ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_pre.topk"]
    assert {e["context_size"] for e in card["saes"].values()} == {128}
    # working SAEs, not release-quality ones (the organism's are): this subject is for reach, every SAE kind
    # run to a verdict; on organism 2's model the weakest (resid_mid, 500k tokens) explains 0.68
    assert all(e["in_context"]["explained_variance"] >= 0.65 for e in card["saes"].values())


@needs_mixed
def test_the_mixed_hook_z_sae_reshapes_heads_as_sae_lens_does():
    """sae_lens's hook_z convention: d_in = n_heads * d_head, and the SAE takes and returns
    (..., n_heads, d_head) because its cfg says reshape_activations = "hook_z"."""
    from sae_lens import SAE

    model = load_tl_native(MIXED_DIR / "../organism")
    sae = SAE.load_from_disk(str(MIXED_DIR / "saes" / "blocks.1.attn.hook_z"))
    assert sae.cfg.reshape_activations == "hook_z"
    assert sae.cfg.d_in == model.cfg.n_heads * model.cfg.d_head
    _, cache = model.run_with_cache(torch.zeros(1, 8, dtype=torch.long), names_filter="blocks.1.attn.hook_z",
                                    stop_at_layer=2)
    z = cache["blocks.1.attn.hook_z"]
    with torch.no_grad():
        out = sae(z)
    assert out.shape == z.shape == (1, 8, model.cfg.n_heads, model.cfg.d_head)


@needs_rotary
def test_the_shipped_rotary_subject_matches_its_card(rotary_subject_dir):
    card = _card(rotary_subject_dir)
    verify_tree(rotary_subject_dir, card["sha256"])
    meta = json.loads((rotary_subject_dir / "subject.json").read_text())
    model = load_hooked_model(str(rotary_subject_dir / meta["model"]))
    assert model.cfg.positional_embedding_type == "rotary" and model.cfg.n_ctx == 256
    assert meta["full_context_size"] == model.cfg.n_ctx
    tokens = np.load(rotary_subject_dir / "eval_tokens.npy")
    assert tokens.shape[1] == model.cfg.n_ctx and (tokens[:, 0] == model.tokenizer.bos_token_id).all()
    folders = {f"{d.parent.name}/{d.name}": d for d in (rotary_subject_dir / "saes").glob("ctx*/*")}
    _check_saes(model, folders, card["saes"], tokens[: card["spec"]["quality_seqs"]])
    assert {e["context_size"] for e in card["saes"].values()} == {32, 256}
    # the model learned its synthetic language: loss well below uniform (ln 63 = 4.14), falling with position
    losses = card["eval_loss_by_position"]
    assert losses["[8,32)"] < losses["[0,8)"] < np.log(63) - 1


def test_the_rotary_builder_gives_a_rotary_model_with_short_context_saes(tmp_path):
    """The builder end to end at smoke sizes: a native rotary model, sae_lens SAEs at context 32 < n_ctx."""
    from sae_lens import SAE

    from saeclaims.organism.rotary import build_rotary, smoke_rotary_spec

    spec = smoke_rotary_spec()
    card = build_rotary(tmp_path, spec)
    model = load_tl_native(tmp_path / "model")
    assert model.cfg.positional_embedding_type == "rotary" and model.cfg.n_ctx == spec.n_ctx == 256
    assert not hasattr(model, "pos_embed") or "pos_embed.W_pos" not in model.state_dict()
    saes = [SAE.load_from_disk(str(d)) for d in (tmp_path / "saes").glob("ctx*/*")]
    assert [s.cfg.metadata.context_size for s in saes] == [32]
    assert saes[0].cfg.metadata.hook_name == spec.sae_hooks[0] and card["saes"]
    assert np.load(tmp_path / "eval_tokens.npy").shape == (spec.n_eval_seqs, spec.n_ctx)
    held = np.load(tmp_path / "held_out_tokens.npy")  # documents of their own, not the evaluation set
    assert held.shape == (spec.n_held_out_seqs, spec.n_ctx) and "held_out_tokens.npy" in card["sha256"]
    assert not {tuple(r) for r in held} & {tuple(r) for r in np.load(tmp_path / "eval_tokens.npy")}
