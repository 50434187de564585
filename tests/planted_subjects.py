"""Planted subjects for the real pipeline: a tiny TransformerLens model and sae_lens SAEs whose failure is known.

Why: an instrument is trusted only where it tells a claim that holds from one that fails on effects planted by
construction (issue 23). These subjects go through `splice.measure` and the claims' own statistics exactly as a
run does; only the weights are chosen by hand.

The model (`planted_model`): d_model = D_TOK + N_CTX. Token embeddings live in the first D_TOK coordinates,
learned positions in the other N_CTX, one coordinate per position (W_pos[p] = POS_SCALE e_p), so a token part and
a positional part of any residual vector are exact. The blocks are random but write the token part only, so at
every residual hook the positional part is W_pos[p] exactly. The unembedding is random; the evaluation
tokens are sampled from the model itself, so the clean model is the data's distribution and any change to the
residual stream adds loss in expectation (its KL).

The SAEs (`linear_sae`): a ReLU StandardSAE with W_enc = [I | -I], b_enc = 0, W_dec = [M^T ; -M^T], b_dec = 0
computes relu(x) M^T - relu(-x) M^T = M x exactly, so any linear map M is planted as a real sae_lens SAE. Every
planted SAE shrinks the token part by IN_CONTEXT_SHRINK everywhere (a small in-context error, so in-context
losses and the control's position trend are defined); beyond the training context CTX:

- `positional`: position p >= CTX is mapped to CTX - 1 (the SAE 'thinks earlier'): its whole excess error is
  in the positional part.
- `smeared`: position p >= CTX is carried as an even blend of positions CTX - 2 and CTX - 1: all positional
  too, but no single position to decode.
- `token`: positions are kept, and p >= CTX adds a fixed token-part vector v_p, its norm calibrated so the
  excess loss matches `positional`'s: its excess error is in the token part, triggered by the position.
- `exact`: no failure beyond the context (the full-context control, and the null for the excess gates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

D_TOK = 16  # token subspace: coordinates [0, D_TOK)
N_CTX = 48  # model context; the position subspace is coordinates [D_TOK, D_TOK + N_CTX), one per position
D_MODEL = D_TOK + N_CTX
D_VOCAB = 32
BOS = 0
CTX = 16  # the planted SAEs' training context
POS_SCALE = 1.0
UNEMBED_POS_WEIGHT = 0.2  # the unembedding reads position weakly: a wrong position costs a moderate loss
IN_CONTEXT_SHRINK = 0.1  # every planted SAE's token part is (1 - this) x the input's
N_SEQS, SEQ_LEN = 16, N_CTX
N_HELD_OUT = 64  # held-out windows (another sample of the model) for the position-conditional mean
HOOKS = ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre")
KINDS = ("positional", "smeared", "token", "exact")
HELIX_DIMS = 4  # the helix model's position subspace: coordinates [D_TOK, D_TOK + HELIX_DIMS)
HELIX_D_MODEL = D_TOK + HELIX_DIMS
N_POSITION_MEANS = 512  # windows of the large independent sample the `computed` failure's position means come from


def planted_model(seed: int = 0, positions: str = "one_hot"):
    """A 2-layer HookedTransformer with token and position embeddings in orthogonal coordinate blocks: one
    coordinate per position (`one_hot`) or a helix in HELIX_DIMS coordinates (`helix`, helix_positions)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    d_model = D_TOK + (HELIX_DIMS if positions == "helix" else N_CTX)
    cfg = HookedTransformerConfig(n_layers=2, d_model=d_model, n_heads=4, d_head=d_model // 4, d_mlp=2 * d_model,
                                  n_ctx=N_CTX, d_vocab=D_VOCAB, act_fn="gelu_new", normalization_type="LN",
                                  positional_embedding_type="standard", seed=seed)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:  # random blocks, writing about as much as the embeddings hold
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith(("W_O", "W_out")) else 0.5)
                        / p.shape[-2] ** 0.5)
        for block in model.blocks:  # the blocks write the token part only: the positional part stays W_pos[p]
            block.attn.W_O[..., D_TOK:] = 0.0
            block.attn.b_O[D_TOK:] = 0.0
            block.mlp.W_out[..., D_TOK:] = 0.0
            block.mlp.b_out[D_TOK:] = 0.0
        model.W_E.zero_()
        model.W_E[:, :D_TOK] = torch.randn(D_VOCAB, D_TOK, generator=g) / D_TOK**0.5
        if positions == "helix":
            model.W_pos.zero_()
            model.W_pos[:, D_TOK:] = helix_positions()
        else:
            model.W_pos.copy_(POS_SCALE * torch.eye(N_CTX, d_model).roll(D_TOK, dims=1))
        model.W_U.copy_(torch.randn(d_model, D_VOCAB, generator=g) * 0.5)
        model.W_U[D_TOK:] *= UNEMBED_POS_WEIGHT
        model.b_U.zero_()
        model.b_U[BOS] = -30.0  # BOS is never predicted, so sampled sequences hold it only at position 0
    return model.eval()


@torch.no_grad()
def sample_tokens(model, n_seqs: int = N_SEQS, seq_len: int = SEQ_LEN, seed: int = 0) -> torch.Tensor:
    """Sequences sampled from the model itself (BOS first): the clean model is their true distribution."""
    g = torch.Generator().manual_seed(seed)
    toks = torch.full((n_seqs, 1), BOS, dtype=torch.long)
    for _ in range(seq_len - 1):
        probs = model(toks)[:, -1].softmax(-1)
        toks = torch.cat([toks, torch.multinomial(probs, 1, generator=g)], 1)
    return toks


def linear_sae(m: torch.Tensor, hook: str, ctx: int):
    """A real sae_lens StandardSAE computing SAE(x) = M x exactly (M [d, d] acts on column vectors)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    d = m.shape[0]
    cfg = StandardSAEConfig(d_in=d, d_sae=2 * d, apply_b_dec_to_input=False, normalize_activations="none")
    cfg.metadata.hook_name = hook
    cfg.metadata.context_size = ctx
    cfg.metadata.prepend_bos = True
    sae = StandardSAE(cfg)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([m.T, -m.T], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def pos_coord(p: int) -> int:
    return D_TOK + p


def base_map(d: int = D_MODEL) -> torch.Tensor:
    """The in-context error every planted SAE shares: the token part shrunk by IN_CONTEXT_SHRINK."""
    m = torch.eye(d)
    m[:D_TOK, :D_TOK] *= 1 - IN_CONTEXT_SHRINK
    return m


def positional_map(ctx: int = CTX) -> torch.Tensor:
    """Beyond ctx, position p is carried as position ctx - 1: the error is all in the positional part."""
    m = base_map()
    for p in range(ctx, N_CTX):
        m[:, pos_coord(p)] = 0.0
        m[pos_coord(ctx - 1), pos_coord(p)] = 1.0
    return m


def smeared_map(ctx: int = CTX) -> torch.Tensor:
    """Beyond ctx, position p is carried as an even blend of the last two trained positions (the SAE 'thinks
    earlier' but is unsure where): the error is all positional, but not a clean swap of one position."""
    m = base_map()
    for p in range(ctx, N_CTX):
        m[:, pos_coord(p)] = 0.0
        m[pos_coord(ctx - 1), pos_coord(p)] = m[pos_coord(ctx - 2), pos_coord(p)] = 0.5
    return m


def token_directions(seed: int = 1, ctx: int = CTX, d: int = D_MODEL) -> torch.Tensor:
    """Unit vectors v_p [N_CTX, d] in the token part for p >= ctx (zero rows in context)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(N_CTX, d)
    v[ctx:, :D_TOK] = torch.randn(N_CTX - ctx, D_TOK, generator=g)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def token_map(scale: float, ctx: int = CTX) -> torch.Tensor:
    """Positions kept; beyond ctx, x's coordinate along position p adds scale x v_p to the token part."""
    m = base_map()
    v = token_directions(ctx=ctx)
    for p in range(ctx, N_CTX):
        m[:, pos_coord(p)] += scale * v[p] / POS_SCALE
    return m


@torch.no_grad()
def excess_loss(model, tokens: torch.Tensor, hook: str, m: torch.Tensor, ctx: int = CTX,
                clean: torch.Tensor | None = None, corrections: torch.Tensor | None = None) -> float:
    """Mean added CE beyond ctx minus within it, with x -> M x (+ corrections[p] at position p) spliced at `hook`
    (position 0 kept): the calibration target, computed directly (not by the instruments under test)."""
    def splice(act, hook):
        out = act @ m.T
        if corrections is not None:
            out = out + corrections[: act.shape[1]]
        out[:, 0] = act[:, 0]
        return out

    if clean is None:
        clean = model(tokens, return_type="loss", loss_per_token=True)
    spliced = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, splice)])
    d = (spliced - clean).mean(0)  # d[i]: predicting token i + 1 from position i
    return float(d[ctx:].mean() - d[1:ctx].mean())


@torch.no_grad()
def calibrate_token_scale(model, tokens: torch.Tensor, hook: str, target: float, iters: int = 10,
                          failure: Callable[[float], tuple[torch.Tensor, torch.Tensor | None]] | None = None) -> float:
    """The norm of v_p whose token failure adds `target` excess loss, to about 0.1% of the norm (bisection;
    the excess grows with it). `failure(scale)` gives the failure's (map, corrections) (default: token_map's)."""
    clean = model(tokens, return_type="loss", loss_per_token=True)
    failure = failure or (lambda scale: (token_map(scale), None))

    def short(scale: float) -> bool:
        m, corrections = failure(scale)
        return excess_loss(model, tokens, hook, m, clean=clean, corrections=corrections) < target

    lo, hi = 0.0, 1.0
    while short(hi):
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            raise ValueError(f"no token distortion reaches an excess of {target:.4g} at {hook}")
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if short(mid) else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Planted:
    """The planted subject and what was planted: SAE ids `{kind}-l{layer}`, each SAE's map, the token
    failure's calibrated scale per hook and the excess losses the calibration matched."""

    subject: object
    maps: dict[str, torch.Tensor]
    token_scale: dict[str, float]
    excess: dict[str, float]


def sae_id(kind: str, hook: str) -> str:
    return f"{kind}-l{hook.split('.')[1]}"


def planted_subject(seed: int = 0, hooks: tuple[str, ...] = HOOKS) -> Planted:
    """Every planted SAE at every hook, each with the `exact` full-context control."""
    from saeclaims.subjects import Subject

    model = planted_model(seed)
    tokens = sample_tokens(model, seed=seed)
    saes, controls, maps, scale, excess = {}, {}, {}, {}, {}
    for hook in hooks:
        excess[sae_id("positional", hook)] = excess_loss(model, tokens, hook, positional_map())
        scale[hook] = calibrate_token_scale(model, tokens, hook, excess[sae_id("positional", hook)])
        excess[sae_id("token", hook)] = excess_loss(model, tokens, hook, token_map(scale[hook]))
        excess[sae_id("smeared", hook)] = excess_loss(model, tokens, hook, smeared_map())
        planted = {"positional": positional_map(), "smeared": smeared_map(), "token": token_map(scale[hook]),
                   "exact": base_map()}
        for kind, m in planted.items():
            key = sae_id(kind, hook)
            maps[key] = m
            saes[key] = linear_sae(m, hook, CTX)
            controls[key] = linear_sae(base_map(), hook, N_CTX)
    subject = Subject(name="planted", model=model, saes=saes, tokens=tokens,
                      context_sizes={k: CTX for k in saes}, full_context_saes=controls,
                      held_out_tokens=sample_tokens(model, N_HELD_OUT, seed=seed + 1000))
    return Planted(subject, maps, scale, excess)


# The helix model: positions outnumber their directions, as in real models (GPT-2's 1024 positions lie mostly in a
# few directions of W_pos; a rotary model's computed positional features too). W_pos[p] lies on two circles,
# frequencies 1 and 3, in HELIX_DIMS coordinates, |W_pos[p]| = POS_SCALE. An SAE cannot move such a position with a
# linear map, so each failure is planted by detector latents: latent q reads the frequency-1 circle,
# cos(theta_p - theta_q), and fires only at p = q (a bias of cos^2(step / 2) leaves it sin^2(step / 2) there and
# below zero at every other position, the same margin on both sides); its decoder row writes position q's
# correction. The SAE is base_map plus corrections[p] at position p, exactly, for any correction vectors.

def helix_angles() -> torch.Tensor:
    return 2 * torch.pi * torch.arange(N_CTX, dtype=torch.float64) / N_CTX


def helix_positions() -> torch.Tensor:
    """W_pos's HELIX_DIMS coordinates [N_CTX, HELIX_DIMS]: (cos t, sin t, cos 3t, sin 3t) x POS_SCALE / sqrt 2."""
    t = helix_angles()
    return (POS_SCALE / 2**0.5 * torch.stack([t.cos(), t.sin(), (3 * t).cos(), (3 * t).sin()], 1)).float()


def helix_w_pos() -> torch.Tensor:
    w = torch.zeros(N_CTX, HELIX_D_MODEL)
    w[:, D_TOK:] = helix_positions()
    return w


def detector_sae(hook: str, ctx: int, corrections: torch.Tensor):
    """A StandardSAE over the helix model's residual: latents [I | -I] decode base_map (the shared in-context
    shrink), and one detector latent per position q decodes corrections[q] [N_CTX, d] at position q alone."""
    from sae_lens import StandardSAE, StandardSAEConfig

    d = HELIX_D_MODEL
    cfg = StandardSAEConfig(d_in=d, d_sae=2 * d + N_CTX, apply_b_dec_to_input=False, normalize_activations="none")
    cfg.metadata.hook_name = hook
    cfg.metadata.context_size = ctx
    cfg.metadata.prepend_bos = True
    sae = StandardSAE(cfg)
    t = helix_angles()
    step = 2 * torch.pi / N_CTX
    read = torch.zeros(d, N_CTX, dtype=torch.float64)  # <read[:, q], W_pos[p]> = cos(theta_p - theta_q)
    read[D_TOK], read[D_TOK + 1] = t.cos() * 2**0.5 / POS_SCALE, t.sin() * 2**0.5 / POS_SCALE
    fires = float(torch.sin(torch.tensor(step / 2, dtype=torch.float64)) ** 2)  # a detector's value at its position
    eye, m = torch.eye(d), base_map(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye, read.float()], 1))
        sae.b_enc.zero_()
        sae.b_enc[2 * d :] = -float(torch.cos(torch.tensor(step / 2, dtype=torch.float64)) ** 2)
        sae.W_dec.copy_(torch.cat([m.T, -m.T, corrections / fires], 0))
        sae.b_dec.zero_()
    return sae.eval()


def helix_positional_corrections(ctx: int = CTX) -> torch.Tensor:
    """Beyond ctx, position p is carried as position ctx - 1: W_pos[ctx - 1] - W_pos[p]."""
    w = helix_w_pos()
    c = torch.zeros_like(w)
    c[ctx:] = w[ctx - 1] - w[ctx:]
    return c


def helix_smeared_corrections(ctx: int = CTX) -> torch.Tensor:
    """Beyond ctx, position p is carried as the even blend of positions ctx - 2 and ctx - 1."""
    w = helix_w_pos()
    c = torch.zeros_like(w)
    c[ctx:] = (w[ctx - 1] + w[ctx - 2]) / 2 - w[ctx:]
    return c


def helix_token_corrections(scale: float, ctx: int = CTX) -> torch.Tensor:
    """Positions kept; beyond ctx, position p adds scale x v_p to the token part."""
    return scale * token_directions(ctx=ctx, d=HELIX_D_MODEL)


@torch.no_grad()
def position_means(model, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    """The activation's mean at each position [T, d] with its token's mean taken out first (BOS left out),
    computed directly over `tokens` in float64: what the model computes from position, token held fixed."""
    x = model.run_with_cache(tokens, names_filter=hook)[1][hook].double()
    use = tokens != BOS
    vocab, idx = torch.unique(tokens, return_inverse=True)
    tok_mean = torch.zeros(len(vocab), x.shape[-1], dtype=torch.float64)
    tok_mean.index_add_(0, idx[use], x[use])
    tok_mean /= torch.bincount(idx[use], minlength=len(vocab)).clamp(min=1)[:, None]
    centred = (x - tok_mean[idx]) * use[..., None]
    return centred.sum(0) / use.sum(0).clamp(min=1)[:, None]


def helix_computed_corrections(means: torch.Tensor, ctx: int = CTX) -> torch.Tensor:
    """Beyond ctx, position p carries position ctx - 1's computed features: mu_{ctx-1} - mu_p, mu the position
    means (position_means): a positional failure in the sense of whatever the model computes from position."""
    c = torch.zeros(N_CTX, means.shape[1])
    c[ctx:] = (means[ctx - 1] - means[ctx:]).float()
    return c


def helix_subject(seed: int = 0, hooks: tuple[str, ...] = HOOKS) -> Planted:
    """planted_subject's failures on the helix model (maps: base_map; the failures are the SAEs' corrections),
    plus `computed` (position ctx - 1's computed features, from the position means of a large independent
    sample; the token failure is calibrated to its excess), each SAE with the `exact` full-context control, and
    held-out windows for the position-conditional mean."""
    from saeclaims.subjects import Subject

    model = planted_model(seed, positions="helix")
    tokens = sample_tokens(model, seed=seed)
    base = base_map(HELIX_D_MODEL)
    saes, controls, maps, scale, excess = {}, {}, {}, {}, {}
    none = torch.zeros(N_CTX, HELIX_D_MODEL)
    large = sample_tokens(model, N_POSITION_MEANS, seed=seed + 2000)
    for hook in hooks:
        computed = helix_computed_corrections(position_means(model, large, hook))
        target = excess_loss(model, tokens, hook, base, corrections=computed)
        scale[hook] = calibrate_token_scale(model, tokens, hook, target,
                                            failure=lambda s: (base, helix_token_corrections(s)))
        planted = {"positional": helix_positional_corrections(), "smeared": helix_smeared_corrections(),
                   "computed": computed, "token": helix_token_corrections(scale[hook]), "exact": none}
        for kind, corrections in planted.items():
            key = sae_id(kind, hook)
            excess[key] = excess_loss(model, tokens, hook, base, corrections=corrections)
            maps[key] = base
            saes[key] = detector_sae(hook, CTX, corrections)
            controls[key] = detector_sae(hook, N_CTX, none)
    subject = Subject(name="planted-helix", model=model, saes=saes, tokens=tokens,
                      context_sizes={k: CTX for k in saes}, full_context_saes=controls,
                      held_out_tokens=sample_tokens(model, N_HELD_OUT, seed=seed + 1000))
    return Planted(subject, maps, scale, excess)


# The compressed-sensing instrument (false-positive mass, oracle_support): SAEs exact in context, plus one latent
# that fires NOISE on every token and writes along W_pos[0]'s coordinate, which no patched token (p >= 1) uses: a
# false positive everywhere, never in the oracle support (it correlates with no target), the same in every SAE and
# in the control. Beyond ctx:
# - `spurious`: the noise latent fires NOISE + SPURIOUS instead (the encoder turns on what is not in the true code);
# - `magnitude`: the code keeps the right support but carries the positional latent at MAGNITUDE x its value (a
#   failure of magnitudes, which removing false positives cannot fix);
# - the control (ctx N_CTX): no failure.
NOISE, SPURIOUS, MAGNITUDE = 0.05, 3.0, 3.0  # the two failures cost about the same excess loss (0.42, 0.35 nats)
FP_KINDS = ("spurious", "magnitude")


def noisy_sae(hook: str, ctx: int, spurious: float = 0.0, magnitude: float = 1.0, fail_from: int = CTX):
    """A StandardSAE with latents [I | -I | noise] over d_model: codes relu(x), relu(-x) (decoded through
    base_map, the shared in-context shrink) and the noise latent relu(NOISE + spurious x [p >= fail_from]) decoded
    along W_pos[0]'s coordinate; the positional latents of p >= fail_from are read at `magnitude` x."""
    from sae_lens import StandardSAE, StandardSAEConfig

    d = D_MODEL
    cfg = StandardSAEConfig(d_in=d, d_sae=2 * d + 1, apply_b_dec_to_input=False, normalize_activations="none")
    cfg.metadata.hook_name = hook
    cfg.metadata.context_size = ctx
    cfg.metadata.prepend_bos = True
    sae = StandardSAE(cfg)
    gain = torch.ones(d)
    noise_in = torch.zeros(d)
    for p in range(fail_from, N_CTX):
        gain[pos_coord(p)] = magnitude
        noise_in[pos_coord(p)] = spurious / POS_SCALE
    m = base_map()
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([torch.diag(gain), -torch.diag(gain), noise_in[:, None]], 1))
        sae.b_enc.zero_()
        sae.b_enc[-1] = NOISE
        sae.W_dec.copy_(torch.cat([m.T, -m.T, torch.eye(d)[pos_coord(0)][None]], 0))
        sae.b_dec.zero_()
    return sae.eval()


def false_positive_subject(seed: int = 0, hook: str = HOOKS[0]):
    """The model of planted_subject with the FP_KINDS SAEs at one hook, each with the noisy exact control."""
    from saeclaims.subjects import Subject

    model = planted_model(seed)
    tokens = sample_tokens(model, seed=seed)
    saes = {sae_id("spurious", hook): noisy_sae(hook, CTX, spurious=SPURIOUS),
            sae_id("magnitude", hook): noisy_sae(hook, CTX, magnitude=MAGNITUDE)}
    controls = {k: noisy_sae(hook, N_CTX, fail_from=N_CTX) for k in saes}
    return Subject(name="planted-fp", model=model, saes=saes, tokens=tokens, context_sizes={k: CTX for k in saes},
                   full_context_saes=controls)
