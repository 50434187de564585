"""The SmolLM2 fixture builder: its data provider, token stream and quality measure on known inputs, and a
smoke build (needs the smollm2 extra and ../shared's corpus; skipped without either, with the reason)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saeclaims.organism import smollm2 as build
from saeclaims.subjects import smollm2 as smol
from tests.conftest import tiny_sae

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "gutenberg"


def test_cached_activations_cover_each_epoch_once_and_are_seeded():
    acts = torch.arange(10.0).unsqueeze(1)
    provider = build.CachedActivations(acts, batch=5, seed=3)
    epoch = torch.cat([next(provider), next(provider)]).flatten().tolist()
    assert sorted(epoch) == list(range(10))  # every row once per epoch
    first = build.CachedActivations(acts, batch=5, seed=3)  # same seed, same order
    assert next(first).flatten().tolist() == epoch[:5]
    # a batch that does not fit the rest of an epoch starts a new, reshuffled epoch
    odd = build.CachedActivations(acts, batch=4, seed=0)
    first_epoch = torch.cat([next(odd), next(odd)]).flatten().tolist()
    assert len(set(first_epoch)) == 8
    third = next(odd).flatten().tolist()  # 2 rows left: a new epoch, 4 distinct rows from a new order
    assert len(third) == 4 and len(set(third)) == 4 and odd.pos == 4


class _Tok:
    def __call__(self, text, add_special_tokens=False):
        assert not add_special_tokens
        return {"input_ids": [ord(c) for c in text]}


def test_token_stream_puts_the_separator_before_every_document():
    from saeclaims.organism.corpus import Document

    stream = build.token_stream(_Tok(), [Document("a", 0, "hi"), Document("b", 0, "yo!")], separator=0)
    assert stream.dtype == np.uint16
    assert stream.tolist() == [0, ord("h"), ord("i"), 0, ord("y"), ord("o"), ord("!")]


def test_quality_of_an_identity_sae_is_perfect_and_positions_are_respected():
    sae = tiny_sae(4, 8, "blocks.0.hook_resid_pre", 4, identity=True)
    acts = torch.randn(3, 10, 4, generator=torch.Generator().manual_seed(0))
    q = build.sae_quality_cached(sae, acts, 2, 7)
    assert q["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert q["positions"] == [2, 7] and q["n_tokens"] == 15
    assert 0 < q["l0"] <= 8


def test_quality_of_a_zero_sae_explains_nothing():
    sae = tiny_sae(4, 8, "blocks.0.hook_resid_pre", 4)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    acts = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(1)) + 5.0
    q = build.sae_quality_cached(sae, acts, 0, 6)
    # EV subtracts the mean: reconstructing 0 for data centred at 5 is worse than the mean, EV < 0
    assert q["explained_variance"] < 0


@pytest.mark.skipif(not smol.smollm2_available(), reason=smol.INSTALL_HINT)
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
def test_smoke_build_writes_saes_a_card_and_resumes(tmp_path):
    out, work = tmp_path / "smol", tmp_path / "work"
    spec = build.smoke_smol_spec()
    model = smol.load_smollm2_model(n_ctx=spec.full_context)
    card = build.build_smollm2(out, CORPUS, work, spec, model=model)
    assert sorted(card["saes"]) == [f"ctx{c}/blocks.{i}.hook_resid_pre" for c in (16, 64) for i in (0, 1)]
    assert "beyond_context" in card["saes"]["ctx16/blocks.0.hook_resid_pre"]
    assert json.loads((out / "subject.json").read_text()) == {"model": "smollm2", "full_context_size": 64}
    cfg = json.loads((out / "saes/ctx16/blocks.1.hook_resid_pre/cfg.json").read_text())
    assert cfg["metadata"]["context_size"] == 16 and cfg["metadata"]["prepend_bos"] is False
    assert cfg["metadata"]["model_name"] == build.MODEL_NAME
    tokens = np.load(out / "eval_tokens.npy")
    assert tokens.shape == (4, 64) and (tokens[:, 0] == 0).all()  # every window starts at a separator
    held = np.load(out / "held_out_tokens.npy")  # training text for run-time estimates, not the evaluation set
    assert held.shape == (4, 64) and (held[:, 0] == 0).all()
    assert not {tuple(r) for r in held} & {tuple(r) for r in tokens}
    stamp = (out / "saes/ctx64/blocks.0.hook_resid_pre/sae_weights.safetensors").stat().st_mtime_ns
    build.build_smollm2(out, CORPUS, work, spec, model=model)  # resumes: nothing retrained
    assert (out / "saes/ctx64/blocks.0.hook_resid_pre/sae_weights.safetensors").stat().st_mtime_ns == stamp
