"""Planted SAEs for the token-only claims and the feature split at blocks.0.hook_resid_pre of planted_model.

Why: `token-only-goes-poorly` (token_then_pos), `token-only-goes-poorly-mixing` (token_mean_pos) and
`features-disjoint-layer0` (feature_split) are trusted only where their instruments, run through the real pipeline
on real sae_lens SAEs, tell an SAE on which the words hold from one on which they fail (issue 23).

At resid_pre 0 of planted_model the activation is exactly W_E[t] + W_pos[p]: a token part in coordinates
[0, D_TOK) and POS_SCALE on position p's own coordinate. Every SAE here computes the same map on that grid,
`shrink_map` (the token part shrunk by SHRINK, the position part kept), so dCE_sae(I) > 0 and the claims' ratios
are defined; they differ only in which inputs their token latents fire on. SHRINK and N_SEQS are larger than
planted_subjects' IN_CONTEXT_SHRINK (0.1) and 16 sequences: at layer 0 in context a 10% shrink's added loss is
lost in the noise of sampled tokens (measured on 16 sequences: -0.003 [-0.021, 0.0065] nats), so the claims
would find nothing to divide by (not applicable). A 30% shrink on 256 sequences adds 0.020 [0.011, 0.030] nats,
small beside the 0.46 nats of losing the token part (token_then_pos on `mixed`):

- `separable`: token latents read the token part alone (±r_j over a frame of the token subspace), position
  latents one coordinate each (±e_p). It computes shrink_map exactly on any input, so SAE(x - W_pos[p]) + W_pos[p]
  == SAE(x): token-only input does not go poorly (both token-only claims fail by construction), and every live
  feature is pure token or pure position (the feature split holds).
- `mixed`: every token latent is a conjunction of a token direction and one position, relu(±x_i + GATE (x_p /
  POS_SCALE - 1)): it reads the token coordinate i only at position p (one latent per coordinate, sign and
  position); position latents ±e_p as in `separable`. shrink_map on the grid; without the position (token-only) or
  with only the mean position (1/(ctx-1) of POS_SCALE on each) no token latent fires, so the token part is lost
  in both readings (both token-only claims hold), and the token latents are token x position interactions, not
  one factor (the feature split fails).
- `off_distribution`: token latents read the token part plus the mean in-context position w̄, relu(±<r_j, x> +
  GATE (g(x) - 1)) with g(x) = <w̄, x> (ctx - 1) / POS_SCALE^2, which is 1 at every in-context position and at
  w̄ itself, 0 with no position. Token-only input fires no token latent (token-only goes poorly), but with the
  mean position restored every latent fires as in context (ratio 1: what goes poorly is the missing mean, an
  input off the training distribution, not mixing; the mixing claim fails by construction). On the grid its
  token latents are pure token (the feature split holds).

GATE exceeds every |<r_j, W_E[t]>| several times over (checked), so a gate that is shut keeps a latent off
whatever the token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .planted_subjects import (
    CTX,
    D_MODEL,
    D_TOK,
    N_CTX,
    POS_SCALE,
    planted_model,
    pos_coord,
    sample_tokens,
)

HOOK = "blocks.0.hook_resid_pre"
GATE = 10.0  # a shut gate's deficit in the pre-activation: far beyond any token reading
N_DIRS = 64  # the token frame of `separable` and `off_distribution` (4x the token subspace): enough live pure
# features (2 x 64 token + 15 position) for a Clopper-Pearson lower bound above 0.9 at confidence 0.999
SHRINK = 0.3  # the in-context error every SAE here shares (the token part x 0.7)
N_SEQS = 256  # evaluation sequences (sampled from the model)
KINDS = ("separable", "mixed", "off_distribution")


def token_frame(n_dirs: int = N_DIRS, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Readers R [n, D_TOK] (random unit vectors) and their dual frame D [n, D_TOK] (D^T R = I): sum_j <r_j, x>
    d_j = x for any token part x."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n_dirs, D_TOK, generator=g, dtype=torch.float64)
    r = r / r.norm(dim=-1, keepdim=True)
    d = r @ torch.linalg.inv(r.T @ r)
    return r.float(), d.float()


def mean_position(model, ctx: int = CTX) -> torch.Tensor:
    """w̄: the mean of W_pos over the in-context positions [1, ctx), as token_mean_pos forms it."""
    return model.W_pos.detach()[1:ctx].mean(0)


def _sae(w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor, ctx: int):
    """A real sae_lens ReLU StandardSAE at HOOK with the given weights (W_enc [d, f], W_dec [f, d], b_dec = 0)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=D_MODEL, d_sae=w_enc.shape[1], apply_b_dec_to_input=False,
                            normalize_activations="none")
    cfg.metadata.hook_name = HOOK
    cfg.metadata.context_size = ctx
    cfg.metadata.prepend_bos = True
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.zero_()
    return sae.eval()


def _position_latents() -> tuple[torch.Tensor, torch.Tensor]:
    """±e_p for every position coordinate: encoder columns [d, 2 N_CTX] and decoder rows [2 N_CTX, d] (x_pos kept)."""
    e = torch.eye(D_MODEL)[D_TOK:] / POS_SCALE  # [N_CTX, d]: reads x_p / POS_SCALE
    dec = torch.eye(D_MODEL)[D_TOK:] * POS_SCALE
    return torch.cat([e, -e], 0).T, torch.cat([dec, -dec], 0)


def _token_readers(r: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """±r_j over the token part, decoded to ±(1 - SHRINK) d_j: encoder columns [d, 2n], decoder rows."""
    enc = torch.zeros(len(r), D_MODEL)
    enc[:, :D_TOK] = r
    dec = torch.zeros(len(d), D_MODEL)
    dec[:, :D_TOK] = (1 - SHRINK) * d
    return torch.cat([enc, -enc], 0).T, torch.cat([dec, -dec], 0)


def _check_gate(model, r: torch.Tensor) -> None:
    reach = float((model.W_E.detach()[:, :D_TOK] @ r.T).abs().max())
    if not GATE > 4 * reach:
        raise ValueError(f"GATE {GATE} does not dominate the token readings (up to {reach:.3g})")


def separable_sae(model, ctx: int = CTX):
    """Token latents ±r_j read the token part alone, position latents ±e_p one coordinate each: shrink_map on any
    input."""
    r, d = token_frame()
    te, td = _token_readers(r, d)
    pe, pd = _position_latents()
    w_enc = torch.cat([te, pe], 1)
    return _sae(w_enc, torch.zeros(w_enc.shape[1]), torch.cat([td, pd], 0), ctx)


def mixed_sae(model, ctx: int = CTX):
    """Token latents are conjunctions: latent (i, ±, p) = relu(±x_i + GATE (x_p / POS_SCALE - 1)) reads token
    coordinate i only where position p's coordinate is fully present, decoded to ±(1 - SHRINK) e_i; for
    every position of the model; position latents ±e_p. shrink_map on the grid W_E[t] + W_pos[p]; the token part is
    lost wherever no position's coordinate is whole (token-only input, the mean position)."""
    r, d = torch.eye(D_TOK), torch.eye(D_TOK)
    _check_gate(model, r)
    te, td = _token_readers(r, d)  # [d, 2 D_TOK], [2 D_TOK, d]
    encs, decs = [], []
    for p in range(N_CTX):
        gate = torch.zeros(D_MODEL, 1)
        gate[pos_coord(p)] = GATE / POS_SCALE
        encs.append(te + gate)
        decs.append(td)
    pe, pd = _position_latents()
    w_enc = torch.cat([*encs, pe], 1)
    b_enc = torch.cat([torch.full((2 * D_TOK * N_CTX,), -GATE), torch.zeros(pe.shape[1])])
    return _sae(w_enc, b_enc, torch.cat([*decs, pd], 0), ctx)


def off_distribution_sae(model, ctx: int = CTX):
    """Token latents relu(±<r_j, x> + GATE (g(x) - 1)), g(x) = <w̄, x> (ctx - 1) / POS_SCALE^2 (1 at any
    in-context position and at w̄, 0 with no position): they need the average in-context position present, not
    any one position; position latents ±e_p. shrink_map at in-context positions and with w̄ in place of the
    position; the token part is lost with no position at all."""
    r, d = token_frame()
    _check_gate(model, r)
    w_bar = mean_position(model, ctx)
    g = (ctx - 1) / POS_SCALE**2 * w_bar  # <g, W_pos[p]> = 1 for p in [1, ctx), <g, w̄> = 1
    te, td = _token_readers(r, d)
    pe, pd = _position_latents()
    w_enc = torch.cat([te + GATE * g[:, None], pe], 1)
    b_enc = torch.cat([torch.full((te.shape[1],), -GATE), torch.zeros(pe.shape[1])])
    return _sae(w_enc, b_enc, torch.cat([td, pd], 0), ctx)


def shrink_map() -> torch.Tensor:
    """What every SAE here computes in context: the token part shrunk by SHRINK, the position part kept."""
    m = torch.eye(D_MODEL)
    m[:D_TOK, :D_TOK] *= 1 - SHRINK
    return m


BUILDERS = {"separable": separable_sae, "mixed": mixed_sae, "off_distribution": off_distribution_sae}


@dataclass
class PlantedTokenOnly:
    """The subject (SAE ids = KINDS, all at HOOK, training context CTX) and the map each computes in context."""

    subject: object
    in_context_map: torch.Tensor  # shrink_map: what every SAE here computes on W_E[t] + W_pos[p], p in [1, ctx)


def token_only_subject(seed: int = 0) -> PlantedTokenOnly:
    from saeclaims.subjects import Subject

    model = planted_model(seed)
    tokens = sample_tokens(model, n_seqs=N_SEQS, seed=seed)
    saes = {kind: build(model) for kind, build in BUILDERS.items()}
    subject = Subject(name="planted-token-only", model=model, saes=saes, tokens=tokens,
                      context_sizes={k: CTX for k in saes})
    return PlantedTokenOnly(subject, shrink_map())
