"""The organism's positional embedding, taken from GPT-2 small's real W_pos.

The positional claims are about GPT-2's W_pos, a low-dimensional helix (three principal components carry
0.957 of the variance of rows 1..127). A small model trained briefly on CPU does not grow one, so the
builder takes GPT-2's: the top principal components of its rows (as many as reach `share` of the variance),
mapped into the organism's d_model by a fixed orthonormal map drawn from `seed`, scaled to a chosen mean row
norm, and kept frozen in training (`model.freeze_positions`) so the geometry survives.

The reference W_pos (`shared/reference/gpt2-small/W_pos.npy`) is read at build time only; the shipped
organism carries the result in its own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class HelixPositions:
    """The table and the facts the card records about how it was made."""

    table: np.ndarray  # [n_ctx, d_model], float32
    n_components: int
    variance_share: float  # of rows 0..n_ctx-1 of the reference, in the kept components
    map_seed: int
    source_sha256: str


def load_reference(path: Path) -> np.ndarray:
    """GPT-2's W_pos as float64 [1024, 768]; a clear error when the reference is absent."""
    if not path.is_file():
        raise FileNotFoundError(
            f"GPT-2 reference W_pos not found at {path}: pass --gpt2-wpos (the build reads "
            "shared/reference/gpt2-small/W_pos.npy)"
        )
    w = np.load(path).astype(np.float64)
    if w.ndim != 2:
        raise ValueError(f"{path}: expected a [n_ctx, d_model] matrix, got shape {w.shape}")
    return w


def components_for_share(rows: np.ndarray, share: float) -> int:
    """Fewest principal components of `rows` (centred) whose variance reaches `share`."""
    x = rows - rows.mean(axis=0, keepdims=True)
    s2 = np.linalg.svd(x, compute_uv=False) ** 2
    cum = np.cumsum(s2) / s2.sum()
    return int(np.searchsorted(cum, share - 1e-12) + 1)


def helix_positions(
    reference: np.ndarray, n_ctx: int, d_model: int, mean_row_norm: float, share: float = 0.98, seed: int = 0,
    source_sha256: str = "",
) -> HelixPositions:
    """Rows 0..n_ctx-1 of the reference projected on its top components, mapped into d_model.

    The map is orthonormal (Q of a QR of a Gaussian matrix from `seed`), so distances and the variance shares
    of the kept components are preserved exactly; the table is then scaled so that rows 1..n_ctx-1 have mean
    norm `mean_row_norm` (row 0, GPT-2's outlier, keeps its relative size).
    """
    if n_ctx > len(reference):
        raise ValueError(f"n_ctx {n_ctx} exceeds the reference's {len(reference)} positions")
    rows = reference[:n_ctx]
    k = components_for_share(rows, share)
    if k > d_model:
        raise ValueError(f"{k} components needed for {share:.0%} of the variance, d_model is {d_model}")
    centred = rows - rows.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:k].T  # [n_ctx, k]
    kept = float((s[:k] ** 2).sum() / (s**2).sum())
    gauss = np.random.default_rng([seed, 2024]).standard_normal((d_model, k))
    q, r = np.linalg.qr(gauss)
    q = q * np.sign(np.diag(r))  # a unique Q for the draw
    table = coords @ q.T  # [n_ctx, d_model]
    table *= mean_row_norm / np.linalg.norm(table[1:], axis=1).mean()
    return HelixPositions(table.astype(np.float32), k, kept, seed, source_sha256)
