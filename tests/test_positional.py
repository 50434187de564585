"""Layer-0 analyses on constructed cases with known answers."""

import numpy as np
import pytest
import torch

from saeclaims.positional import (
    decoded_positions,
    feature_split,
    frequent_tokens,
    position_of,
    principal_projection,
    top_k_variance_share,
)
from tests.conftest import tiny_model, tiny_sae


def test_a_helix_has_all_variance_in_three_components():
    t = np.linspace(0, 6 * np.pi, 127)
    helix = np.stack([np.cos(t), np.sin(t), 0.1 * t], 1) @ np.random.default_rng(0).normal(size=(3, 64))
    assert top_k_variance_share(helix, 3) == pytest.approx(1.0)
    assert top_k_variance_share(np.random.default_rng(1).normal(size=(127, 64)), 3) < 0.2
    assert principal_projection(helix, 3).shape == (127, 3)


def test_identity_sae_decodes_the_true_position():
    model = tiny_model(n_ctx=32, d_model=16)
    sae = tiny_sae(16, 32, "blocks.0.hook_resid_pre", 8, identity=True)
    tokens = torch.randint(1, 50, (3, 32))
    decoded = decoded_positions(model, sae, tokens)
    np.testing.assert_array_equal(decoded[:, 1:], np.broadcast_to(np.arange(1, 32), (3, 31)))


class _Features:
    """An 'SAE' whose features are known functions of token and position."""

    class cfg:
        d_sae = 3

    def __init__(self, d_model):
        self.d = d_model

    def encode(self, x):
        # x = W_E[t] + W_pos[p] with W_E on the first half of dims, W_pos on the second
        tok = x[..., 0]
        pos = x[..., -1]
        return torch.stack([tok.relu() + 1, pos.relu() + 1, (tok * pos).relu() + (tok + pos).relu()], -1)


def test_feature_split_separates_token_and_position_features():
    model = tiny_model(n_ctx=16, d_model=8)
    with torch.no_grad():
        model.W_E.zero_()
        model.W_pos.zero_()
        model.W_E[:, 0] = torch.linspace(-1, 2, model.cfg.d_vocab)
        model.W_pos[:, -1] = torch.linspace(-1, 2, 16)
    split = feature_split(model, _Features(8), np.arange(1, 40), np.arange(1, 16))
    one = split.one_factor(0.9)
    assert split.token_share[0] == pytest.approx(1.0) and split.position_share[1] == pytest.approx(1.0)
    assert one[0] and one[1] and not one[2]


def test_frequent_tokens_excludes_bos():
    toks = np.array([[0, 5, 5, 5, 7, 7, 9]])
    np.testing.assert_array_equal(frequent_tokens(toks, 2, exclude=(0,)), [5, 7])


def test_position_of_reads_the_closest_w_pos_row_never_bos_and_in_chunks():
    g = torch.Generator().manual_seed(0)
    w_pos = torch.randn(40, 16, generator=g)
    q = torch.randint(1, 40, (3, 25), generator=g)
    resid = 2.5 * w_pos[q] + 0.01 * torch.randn(3, 25, 16, generator=g)  # scale does not matter: cosine
    torch.testing.assert_close(position_of(resid, w_pos), q)
    torch.testing.assert_close(position_of(resid, w_pos, chunk_bytes=4 * 39 * 7), q)  # 7 rows a chunk
    assert (position_of(w_pos[:1].expand(5, 16), w_pos) >= 1).all()  # position 0 is not a candidate
    assert position_of(torch.zeros(0, 16), w_pos).shape == (0,)
