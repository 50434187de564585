"""Layer-0 positional analyses: W_pos geometry, decoded positions, token/position feature split.

At blocks.0.hook_resid_pre the activation is exactly W_E[t] + W_pos[p], so these need no forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def top_k_variance_share(rows: np.ndarray, k: int = 3) -> float:
    """Share of the variance of `rows` in their top k principal components (exact SVD)."""
    x = np.asarray(rows, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False) ** 2
    return float(s[:k].sum() / s.sum())


def principal_projection(rows: np.ndarray, k: int = 3) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:k].T


def position_of(resid: torch.Tensor, w_pos: torch.Tensor, chunk_bytes: int = 2**26) -> torch.Tensor:
    """The position a vector carries: argmax over q in [1, n_ctx) of cos(resid, W_pos[q]), for every
    row of `resid` [..., d] at once (on its device), returning [...] long.

    Position 0 is BOS, never patched, and not a candidate: its W_pos row is not a content position.
    Rows are scored a chunk at a time so at most `chunk_bytes` of similarities exist at once.
    """
    cand = torch.nn.functional.normalize(w_pos[1:].to(resid.dtype), dim=-1)
    flat = torch.nn.functional.normalize(resid.reshape(-1, resid.shape[-1]), dim=-1)
    step = max(1, chunk_bytes // (4 * len(cand)))
    out = torch.cat([(flat[i : i + step] @ cand.T).argmax(-1) for i in range(0, len(flat), step)]) if len(flat) \
        else torch.zeros(0, dtype=torch.long, device=resid.device)
    return (out + 1).reshape(resid.shape[:-1])


@torch.no_grad()
def decoded_positions(model, sae, tokens: torch.Tensor, batch: int = 8) -> np.ndarray:
    """`position_of(SAE(x) - W_E[t])` for every token [n, T], with x = W_E[t] + W_pos[p] (layer 0).

    The `pos_repair_out` variant (variants.py) swaps exactly this position for the true one at layer 0.
    """
    w_e, w_pos = model.W_E.detach(), model.W_pos.detach()
    out = []
    for i in range(0, len(tokens), batch):
        t = tokens[i : i + batch]
        x = w_e[t] + w_pos[: t.shape[1]]
        out.append(position_of(sae.decode(sae.encode(x)) - w_e[t], w_pos).cpu().numpy())
    return np.concatenate(out)


@dataclass
class FeatureSplit:
    """Two-way (token x position) variance decomposition of each live layer-0 feature."""

    token_share: np.ndarray  # [n_live] SS_token / SS_total
    position_share: np.ndarray  # [n_live]
    n_features: int
    n_tokens: int
    n_positions: int

    def one_factor(self, level: float = 0.9) -> np.ndarray:
        return np.maximum(self.token_share, self.position_share) >= level


@torch.no_grad()
def feature_split(model, sae, token_ids: np.ndarray, positions: np.ndarray,
                  chunk_bytes: int = 2**27) -> FeatureSplit:
    """Activations of every feature on the grid W_E[t] + W_pos[p]; per feature the shares of its
    variance explained by token main effects and by position main effects (balanced two-way ANOVA)."""
    w_e, w_pos = model.W_E.detach(), model.W_pos.detach()
    pos = torch.as_tensor(positions)
    n_t, n_p, f = len(token_ids), len(pos), sae.cfg.d_sae
    chunk = max(1, chunk_bytes // (8 * n_p * f))
    dev = w_e.device  # the accumulators live where the SAE's codes are formed
    s1 = torch.zeros(f, dtype=torch.float64, device=dev)  # sum
    s2 = torch.zeros(f, dtype=torch.float64, device=dev)  # sum of squares
    row_sums = []  # per token: [f]
    col_sums = torch.zeros(n_p, f, dtype=torch.float64, device=dev)
    for i in range(0, n_t, chunk):
        t = torch.as_tensor(token_ids[i : i + chunk])
        x = w_e[t][:, None, :] + w_pos[pos][None, :, :]  # [c, P, d]
        a = sae.encode(x).double()  # [c, P, f]
        s1 += a.sum((0, 1))
        s2 += a.pow(2).sum((0, 1))
        row_sums.append(a.sum(1))
        col_sums += a.sum(0)
    rows = torch.cat(row_sums)  # [T, f]
    n = n_t * n_p
    grand = s1 / n
    ss_total = s2 - n * grand**2
    ss_token = n_p * ((rows / n_p) - grand).pow(2).sum(0)
    ss_pos = n_t * ((col_sums / n_t) - grand).pow(2).sum(0)
    live = ss_total > 1e-12 * max(1.0, float(ss_total.max()))
    return FeatureSplit(
        token_share=(ss_token[live] / ss_total[live]).cpu().numpy(),
        position_share=(ss_pos[live] / ss_total[live]).cpu().numpy(),
        n_features=f, n_tokens=n_t, n_positions=n_p,
    )


def frequent_tokens(tokens: np.ndarray, k: int, exclude: tuple[int, ...] = ()) -> np.ndarray:
    """The k most frequent token ids of the evaluation set: the grid's token axis."""
    ids, counts = np.unique(np.asarray(tokens).ravel(), return_counts=True)
    keep = ~np.isin(ids, exclude)
    ids, counts = ids[keep], counts[keep]
    return ids[np.argsort(-counts, kind="stable")[:k]]
