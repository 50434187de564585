"""GPT-2's W_pos helix for the organism: component count, the orthonormal map, the scale."""

from pathlib import Path

import numpy as np
import pytest

from saeclaims.organism.positions import components_for_share, helix_positions, load_reference
from saeclaims.positional import top_k_variance_share

GPT2_WPOS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "gpt2-small" / "W_pos.npy"


def _known_spectrum(variances: list[float], n: int = 64, seed: int = 0) -> np.ndarray:
    """Centred rows whose principal variances are exactly `variances` (orthogonal columns, zero-mean)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, len(variances))) - 0.0)
    u -= u.mean(axis=0)
    u, _ = np.linalg.qr(u)
    v, _ = np.linalg.qr(rng.standard_normal((16, len(variances))))
    return (u * np.sqrt(variances)) @ v.T


def test_components_for_share_edges():
    rows = _known_spectrum([6.0, 3.0, 1.0])
    assert components_for_share(rows, 0.6) == 1  # exactly 0.6 reached by the first
    assert components_for_share(rows, 0.61) == 2
    assert components_for_share(rows, 0.9) == 2
    assert components_for_share(rows, 0.91) == 3
    assert components_for_share(rows, 1.0) == 3


def _helix(n: int = 200, d: int = 24) -> np.ndarray:
    t = np.arange(n)[:, None]
    base = np.hstack([np.cos(t / 30), np.sin(t / 30), t / n, 0.05 * np.cos(t / 3)])
    return base @ np.random.default_rng(1).standard_normal((4, d))


def test_map_preserves_geometry_and_sets_the_scale():
    ref = _helix()
    h = helix_positions(ref, 150, 32, mean_row_norm=2.5, share=1.0, seed=3)
    assert h.table.shape == (150, 32) and h.table.dtype == np.float32
    assert np.linalg.norm(h.table[1:], axis=1).mean() == pytest.approx(2.5, rel=1e-5)
    # pairwise distances are those of the kept components, up to the one scale factor
    centred = ref[:150] - ref[:150].mean(0)
    d_ref = np.linalg.norm(centred[:, None] - centred[None], axis=-1)
    d_new = np.linalg.norm(h.table[:, None].astype(np.float64) - h.table[None], axis=-1)
    ratio = d_new[d_ref > 0] / d_ref[d_ref > 0]
    assert h.n_components == 4 and ratio.std() / ratio.mean() < 1e-5  # all four components kept
    assert top_k_variance_share(h.table[1:], 3) == pytest.approx(top_k_variance_share(ref[1:150], 3), abs=1e-5)


def test_map_is_fixed_by_its_seed():
    ref = _helix()
    a, b, c = (helix_positions(ref, 100, 32, 1.0, 0.99, seed=s).table for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_refusals():
    ref = _helix(n=50)
    with pytest.raises(ValueError, match="exceeds the reference's 50 positions"):
        helix_positions(ref, 60, 32, 1.0)
    with pytest.raises(ValueError, match="components needed"):
        helix_positions(ref, 50, 2, 1.0, share=0.999)
    with pytest.raises(FileNotFoundError, match="--gpt2-wpos"):
        load_reference(Path("/nonexistent/W_pos.npy"))


@pytest.mark.skipif(not GPT2_WPOS.is_file(), reason=f"GPT-2 reference not found at {GPT2_WPOS}")
def test_gpt2_helix_survives_the_reduction():
    """8 components carry 98% of GPT-2's W_pos; the reduced table keeps the helix (top-3 of rows 1..127
    0.957 on GPT-2 itself; the issue's target for the organism is >= 0.9)."""
    ref = load_reference(GPT2_WPOS)
    h = helix_positions(ref, 1024, 128, 1.0, 0.98, seed=0)
    assert h.n_components == 8 and h.variance_share >= 0.98
    assert top_k_variance_share(h.table[1:128], 3) >= 0.9
