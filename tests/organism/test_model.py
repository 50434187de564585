"""The organism's model training pieces: planted repeats, the frozen helix, the fused training loss."""

import numpy as np
import pytest
import torch

from saeclaims.organism.model import ModelSpec, TrainSpec, initial_model, plant_repeats, training_loss


def test_planted_repeats_copy_spans_later_in_the_row():
    spec = TrainSpec(repeat_fraction=1.0, repeat_spans=1, repeat_len=(5, 5), repeat_lag=(20, 20))
    batch = np.arange(2 * 60).reshape(2, 60) + 1000
    batch[:, 0] = 0
    out = plant_repeats(batch.copy(), np.random.default_rng(0), spec)
    for row, orig in zip(out, batch, strict=True):
        changed = np.flatnonzero(row != orig)
        assert len(changed) == 5 and row[0] == 0
        s = changed[0] - 20
        assert s >= 1 and (row[changed] == orig[s : s + 5]).all()


def test_no_repeats_at_fraction_zero_or_in_rows_too_short():
    batch = np.arange(3 * 30).reshape(3, 30)
    assert (plant_repeats(batch.copy(), np.random.default_rng(0), TrainSpec(repeat_fraction=0.0)) == batch).all()
    short = TrainSpec(repeat_fraction=1.0, repeat_len=(16, 16), repeat_lag=(128, 896))
    assert (plant_repeats(batch.copy(), np.random.default_rng(0), short) == batch).all()


def test_helix_is_scaled_to_the_token_norm_and_frozen():
    spec = ModelSpec(n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=32, d_vocab=50, pos_to_token_norm=0.5)
    table = np.random.default_rng(0).standard_normal((32, 16)) * 7
    m = initial_model(spec, 0, table)
    assert not m.W_pos.requires_grad
    ratio = m.W_pos[1:].norm(dim=1).mean() / m.W_E.norm(dim=1).mean()
    assert ratio.item() == pytest.approx(0.5, rel=1e-5)
    assert torch.allclose(m.W_pos / m.W_pos[1:].norm(dim=1).mean(),
                          torch.from_numpy(table).float() / torch.from_numpy(table[1:]).float().norm(dim=1).mean(),
                          atol=1e-5)


def test_fused_training_loss_and_gradients_equal_transformerlens():
    """T 150 > the CPU query chunk, so the chunked SDPA path and its backward are exercised."""
    spec = ModelSpec(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=150, d_vocab=97)
    m = initial_model(spec, 0, np.random.default_rng(0).standard_normal((150, 32)))
    m.train()
    tokens = torch.randint(0, 97, (3, 150), generator=torch.Generator().manual_seed(0))
    grads = []
    for fused in (False, True):
        m.zero_grad()
        loss = training_loss(m, tokens, fused)
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    assert l1 == pytest.approx(l0, abs=1e-5)
    assert g0.keys() == g1.keys() and "pos_embed.W_pos" not in g0
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-5, rtol=1e-3), name
