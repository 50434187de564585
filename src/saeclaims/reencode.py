"""Re-encoding with a fixed dictionary: the SAE's decoder kept, its encoder replaced by sparse coding.

If an SAE fails beyond its training context because its *encoder* is off distribution (the thread's
3rd comment), codes re-inferred for the same decoder by a solver that never saw a context should
recover most of the loss; if the *dictionary* cannot represent the late-position activations, they
should not. The `reencode` variant (variants.py) applies this at every patched position, with as many
atoms as the SAE itself uses in context (k = its mean in-context L0, rounded, at least 1), and
reconstructs with the SAE's own `decode`, so every decoder-side detail of sae_lens is honoured.

Solver: non-negative orthogonal matching pursuit (NNOMP), batched over tokens. Codes are >= 0 like
the SAE's ReLU codes. Each iteration adds the atom with the largest positive normalised correlation
with the residual (<d_i, r> / ||d_i||, among atoms not in the support), then solves the
non-negative least squares on the support exactly with Lawson-Hanson active-set steps: the
unconstrained least-squares refit comes from an incrementally updated Cholesky factor (one
triangular solve per new atom, no refactorisation), and only when it has a non-positive coefficient
does the solver step back to the feasible segment and drop that atom (refactorising just those
tokens). This is Lawson-Hanson's active-set NNLS with atoms entering by normalised correlation and
at most k of them in the support (Bruckstein, Elad & Zibulevsky 2008; Nguyen et al. 2019), so the
residual decreases at every step and the coefficients are the exact NNLS solution on the final
support, not a clamp. An atom dropped by an active-set step frees its slot and may enter again.
It stops at k atoms, when no atom correlates positively with the residual (no non-negative code can
then reduce it), when the residual is zero to working precision, or when the next atom is
linearly dependent on the support. Cost per token: up to 2k products with the dictionary (d x F)
plus O(k^2) per added atom; tokens are solved together, a chunk at a time, on the input's device.

A token is `converged` when every linear solve succeeded, every active-set fix finished within its
step budget, everything stayed finite and the final residual is no larger than the target. Tokens
that are not are reported (`SparseCodes.converged`, the variant's per-token `unconverged` metric);
statistics refuse to read them (instruments.Quantity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_CHUNK_BYTES = 2**26


@dataclass
class SparseCodes:
    """k-sparse non-negative codes of N targets over a dictionary of F atoms.

    Slot s < n_active[i] of token i holds atom atoms[i, s] with coefficient values[i, s] > 0; later
    slots are unused (atom 0, value 0)."""

    atoms: torch.Tensor  # [N, k] long
    values: torch.Tensor  # [N, k]
    n_active: torch.Tensor  # [N] long
    converged: torch.Tensor  # [N] bool
    residual_norm: torch.Tensor  # [N]: ||y - codes @ D||
    target_norm: torch.Tensor  # [N]: ||y||

    def dense(self, n_atoms: int) -> torch.Tensor:
        """The codes as a dense [N, n_atoms] matrix."""
        out = torch.zeros(len(self.atoms), n_atoms, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_add_(1, self.atoms, self.values)

    @property
    def share_unconverged(self) -> float:
        return float((~self.converged).float().mean()) if len(self.converged) else 0.0


def nn_omp(y: torch.Tensor, dictionary: torch.Tensor, k: int, tol: float = 1e-6, max_outer: int | None = None,
           max_inner: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
           limits: torch.Tensor | None = None) -> SparseCodes:
    """Non-negative OMP of targets y [N, d] over dictionary rows [F, d], at most k atoms each.

    tol: an atom is added only while its normalised correlation exceeds tol * ||residual||.
    max_outer: atom additions tried per token (default 2k: an atom dropped by an active-set step frees
    its slot). max_inner: active-set steps per addition (default k); a token that needs more is
    reported as not converged. Tokens are solved a chunk at a time (chunk_bytes bounds the gathered
    [chunk, k, d] support atoms).

    limits: per-token atom counts [N] (clipped to [0, k]): token i stops at limits[i] atoms after at most
    2 x limits[i] additions tried (max_outer, where given, for every token), i.e. the pursuit nn_omp runs at
    k = limits[i] alone, with one Gram for all tokens instead of one call per distinct count. Tokens are solved
    in order of their limits, each chunk with slots for its own largest limit (so a few dense tokens do not
    make every token's factors large) and results put back in input order. A limit of 0 leaves the token's
    code empty. Only the active-set budget is shared in a chunk: max_inner defaults to the chunk's largest
    limit, so a token may converge here where its own call would run out.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n, d = y.shape
    if dictionary.shape[1] != d:
        raise ValueError(f"targets have {d} dims, dictionary rows {dictionary.shape[1]}")
    if limits is not None and tuple(limits.shape) != (n,):
        raise ValueError(f"limits must hold one atom count per target ({n}), got shape {tuple(limits.shape)}")
    k = min(k, dictionary.shape[0])
    cdt = torch.promote_types(y.dtype, dictionary.dtype)
    dic = dictionary.detach().to(cdt)
    dic64 = torch.cat([dic.double(), dic.new_zeros(1, d, dtype=torch.float64)])
    gram = dic64 @ dic64.T  # float64, with the dummy atom's zero row and column

    def per_token_bytes(kc: int) -> int:  # Cholesky factors, support atoms
        return kc * (8 * kc + dic.element_size() * d)

    if limits is None:
        limit = torch.full((n,), k, dtype=torch.long, device=y.device)
        budget = torch.full_like(limit, 2 * k if max_outer is None else max_outer)
        step = max(1, chunk_bytes // per_token_bytes(k))
        chunks = [torch.arange(i, min(i + step, n), device=y.device) for i in range(0, n, step)]
    else:
        limit = limits.to(device=y.device, dtype=torch.long).clamp(0, k)
        budget = 2 * limit if max_outer is None else torch.full_like(limit, max_outer)
        chunks = _chunks_by_limit(limit, chunk_bytes, per_token_bytes)
    parts = []
    for idx in chunks:
        kc = max(1, int(limit[idx].max()))
        part = _nn_omp_chunk(y[idx].detach().to(cdt), dic, gram, kc, tol, int(budget[idx].max()),
                             kc if max_inner is None else max_inner, limit[idx], budget[idx])
        parts.append(_pad_slots(part, k))
    if not parts:
        empty = torch.zeros(0, k, dtype=torch.long, device=y.device)
        return SparseCodes(empty, empty.to(cdt), empty[:, 0], empty[:, 0].bool(), empty[:, 0].to(cdt),
                           empty[:, 0].to(cdt))
    fields = [torch.cat(f) for f in zip(*(
        (p.atoms, p.values, p.n_active, p.converged, p.residual_norm, p.target_norm) for p in parts))]
    order = torch.cat(chunks)
    if limits is not None:  # back to input order
        fields = [torch.empty_like(f).index_copy_(0, order, f) for f in fields]
    return SparseCodes(*fields)


def _chunks_by_limit(limit: torch.Tensor, chunk_bytes: int, per_token_bytes) -> list[torch.Tensor]:
    """Token indices in order of their limits, cut so that a chunk's tokens x slots for its largest limit stay
    within chunk_bytes (at least one token a chunk)."""
    order = torch.argsort(limit, stable=True)
    lim = limit[order].tolist()
    chunks, i = [], 0
    while i < len(lim):
        j = i + 1
        while j < len(lim) and (j + 1 - i) * per_token_bytes(max(1, lim[j])) <= chunk_bytes:
            j += 1
        chunks.append(order[i:j])
        i = j
    return chunks


def _pad_slots(codes: SparseCodes, k: int) -> SparseCodes:
    """Codes with k slots (unused: atom 0, value 0), so chunks solved at smaller k concatenate."""
    extra = k - codes.atoms.shape[1]
    if extra <= 0:
        return codes
    pad = torch.nn.functional.pad
    return SparseCodes(pad(codes.atoms, (0, extra)), pad(codes.values, (0, extra)), codes.n_active, codes.converged,
                       codes.residual_norm, codes.target_norm)


def _support_gram(gram: torch.Tensor, atoms: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """Gram of the used support atoms, identity on unused slots: [B, k, k] float64."""
    g = gram[atoms[:, :, None], atoms[:, None, :]] * (used[:, :, None] & used[:, None, :])
    return g + torch.diag_embed((~used).double())


def _solve(chol: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_solve(b[..., None], chol).squeeze(-1)


def _active_set(x, z, chol, b, atoms, count, gram: torch.Tensor, max_inner: int, unused: int):
    """Lawson-Hanson's inner loop for tokens whose refit z has a non-positive coefficient.

    x: the feasible code before the refit (the new atom at 0). Each step moves from x toward z as far
    as feasibility allows, drops the support atoms that reach 0 (at least the first to), compacts the
    slots and refits. Returns x, chol, b, atoms, count and `done` (False: step budget exhausted or a
    factorisation failed; x is then the last feasible code)."""
    slots = torch.arange(x.shape[1], device=x.device)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    failed = torch.zeros_like(done)
    for it in range(max_inner + 1):
        used = slots < count[:, None]
        neg = (z <= 0) & used
        fine = ~neg.any(1) & ~done & ~failed
        x = torch.where(fine[:, None], z, x)
        done |= fine
        todo = ~done & ~failed
        if not todo.any() or it == max_inner:
            break
        ratio = torch.where(neg, x / (x - z).clamp_min(1e-300), math.inf)
        alpha, first = ratio.min(1)
        step = x + alpha[:, None].clamp(0, 1) * (z - x)
        drop = used & ((step <= 1e-12 * step.abs().amax(1, keepdim=True)) | (slots == first[:, None]))
        keep = used & ~drop
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        kept = keep.gather(1, order)
        new_atoms = torch.where(kept, atoms.gather(1, order), unused)
        new_chol, info = torch.linalg.cholesky_ex(_support_gram(gram, new_atoms, kept))
        failed |= todo & (info != 0)
        upd = (todo & (info == 0))[:, None]
        x = torch.where(upd, step.gather(1, order) * kept, x)
        b = torch.where(upd, b.gather(1, order) * kept, b)
        atoms = torch.where(upd, new_atoms, atoms)
        chol = torch.where(upd[..., None], new_chol, chol)
        count = torch.where(upd[:, 0], kept.sum(1), count)
        z = torch.where(upd, _solve(chol, b), z)
    return x, chol, b, atoms, count, done


class _WorkingSet:
    """Per-token solver state, with the rows still iterating gathered into a compact working set
    whenever fewer than half of them are live (so finished tokens cost nothing)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.full = state
        self.rows: torch.Tensor | None = None  # None: every row
        self.s = dict(state)

    def compact(self) -> None:
        live = self.s["live"]
        if live.sum() * 2 >= len(live):
            return
        self._write_back()
        keep = live.nonzero().squeeze(1)
        self.rows = keep if self.rows is None else self.rows[keep]
        self.s = {k: v[self.rows] for k, v in self.full.items()}

    def _write_back(self) -> None:
        if self.rows is None:
            self.full = dict(self.s)
        else:
            for k, v in self.s.items():
                self.full[k][self.rows] = v

    def result(self) -> dict[str, torch.Tensor]:
        self._write_back()
        self.rows = None
        return self.full


def _nn_omp_chunk(y: torch.Tensor, dic: torch.Tensor, gram: torch.Tensor, k: int, tol: float, max_outer: int,
                  max_inner: int, limit: torch.Tensor, budget: torch.Tensor) -> SparseCodes:
    """All live tokens advance together; per-token state lives in fixed-size slots (unused slots
    point to a zero dummy atom F, carry zero coefficients and an identity block in the Cholesky
    factor). `gram` is the float64 Gram of the dictionary padded with the dummy atom's zero row.
    limit [n]: each token's atom count (<= k); budget [n]: its atom additions tried (<= max_outer)."""
    n, d = y.shape
    f = dic.shape[0]
    dev, f64 = y.device, torch.float64
    dic_pad = torch.cat([dic, dic.new_zeros(1, d)])
    norms2 = gram.diagonal()
    unit_t = (dic_pad.double() * torch.where(norms2 > 0, norms2.rsqrt(), 0.0)[:, None]).T.to(y.dtype).contiguous()
    slots = torch.arange(k, device=dev)
    finite = torch.isfinite(y).all(-1)
    y = torch.where(finite[:, None], y, 0.0)
    ws = _WorkingSet({
        "atoms": torch.full((n, k), f, dtype=torch.long, device=dev),
        "count": torch.zeros(n, dtype=torch.long, device=dev),
        "ds": torch.zeros(n, k, d, dtype=y.dtype, device=dev),  # the support atoms, for the residual
        "chol": torch.eye(k, dtype=f64, device=dev).repeat(n, 1, 1),  # Cholesky of the masked support Gram
        "rhs": torch.zeros(n, k, dtype=f64, device=dev),  # <d_s, y> on the support
        "x": torch.zeros(n, k, dtype=f64, device=dev),
        "r": y.clone(),
        "y": y,
        "live": finite.clone(),
        "ok": finite.clone(),
        "limit": limit,
        "budget": budget,
    })
    exact = 100 * torch.finfo(y.dtype).eps  # a residual this small relative to y is y reconstructed
    for tried in range(max_outer):
        s = ws.s
        rn = s["r"].norm(dim=-1)
        s["live"] &= (s["count"] < s["limit"]) & (tried < s["budget"]) & (rn > exact * s["y"].norm(dim=-1))
        if not s["live"].any():
            break
        ws.compact()
        s = ws.s
        atoms, count, live = s["atoms"], s["count"], s["live"]
        rn = s["r"].norm(dim=-1)
        corr = s["r"] @ unit_t  # normalised correlations
        corr.scatter_(1, atoms, -math.inf)
        best, new = corr.max(1)
        go = live & (best > tol * rn)  # otherwise no non-negative code reduces r: done
        g = gram[atoms, new[:, None]]  # zero on unused slots
        w = torch.linalg.solve_triangular(s["chol"], g[..., None], upper=False).squeeze(-1)
        diag2 = norms2[new] - w.pow(2).sum(-1)
        go &= diag2 > 1e-9 * norms2[new]  # otherwise the atom is (numerically) in the support's span
        live &= go
        sel = go.nonzero().squeeze(1)
        if not len(sel):
            break
        j, nw = count[sel], new[sel]
        s["chol"][sel, j] = w[sel]
        s["chol"][sel, j, j] = diag2[sel].sqrt()
        atoms[sel, j] = nw
        s["ds"][sel, j] = dic[nw]
        s["rhs"][sel, j] = (dic[nw].double() * s["y"][sel].double()).sum(-1)
        count[sel] += 1
        z = _solve(s["chol"], s["rhs"])
        bad = (go & ((z <= 0) & (slots < count[:, None])).any(1)).nonzero().squeeze(1)
        if len(bad):
            xb, cb, bb, atb, cntb, done = _active_set(s["x"][bad], z[bad], s["chol"][bad], s["rhs"][bad], atoms[bad],
                                                      count[bad], gram, max_inner, f)
            z[bad], s["chol"][bad], s["rhs"][bad], atoms[bad], count[bad] = xb, cb, bb, atb, cntb
            s["ds"][bad] = dic_pad[atb]
            s["ok"][bad[~done]] = False
        s["x"] = torch.where(go[:, None], z, s["x"])
        s["r"] = torch.where(go[:, None], s["y"] - (s["x"].to(y.dtype)[:, None, :] @ s["ds"]).squeeze(1), s["r"])
    st = ws.result()
    x, atoms = st["x"], st["atoms"]
    y64 = y.double()
    res64 = (y64 - (x[:, None, :] @ torch.cat([dic, dic.new_zeros(1, d)]).double()[atoms]).squeeze(1)).norm(dim=-1)
    res = torch.where(finite, res64, math.nan).to(y.dtype)
    ynorm = torch.where(finite, y64.norm(dim=-1), math.nan).to(y.dtype)
    ok = st["ok"] & torch.isfinite(res) & torch.isfinite(x).all(-1) & (res <= ynorm * (1 + 1e-6) + 1e-12)
    return SparseCodes(torch.where(atoms == f, 0, atoms), x.to(y.dtype), st["count"], ok, res, ynorm)


@dataclass
class Reencoded:
    """A fixed-dictionary reconstruction: out [..., d], the atoms used l0 [...] and per-token convergence."""

    out: torch.Tensor
    l0: torch.Tensor
    converged: torch.Tensor


def sae_target(sae, x: torch.Tensor) -> torch.Tensor:
    """What the decoder's codes must reconstruct: the SAE's input after its own preprocessing
    (dtype, hook_sae_input, run-time normalisation), minus b_dec.

    decode() is codes @ W_dec + b_dec (then sae_lens's output normalisation), whatever the encoder
    does, so the codes that minimise the reconstruction error fit x_norm - b_dec. sae_lens's
    process_sae_in already subtracts b_dec when cfg.apply_b_dec_to_input, and not otherwise. Call it
    on the same rows right before `sae.decode`: run-time normalisations (constant_norm_rescale,
    layer_norm) keep the input's scale on the SAE until decode uses it.
    """
    sae_in = sae.process_sae_in(x)
    return sae_in if sae.cfg.apply_b_dec_to_input else sae_in - sae.b_dec


@torch.no_grad()
def reencode(sae, x: torch.Tensor, k: int, chunk_tokens: int = 4096, **solver) -> Reencoded:
    """Re-infer codes for x [..., d] with NNOMP over the SAE's decoder at k atoms, decoded by the SAE.

    Rows are solved `chunk_tokens` at a time (the SAE's run-time normalisation state is per call).
    """
    d = x.shape[-1]
    flat = x.reshape(-1, d)
    outs, l0s, oks = [], [], []
    for i in range(0, len(flat), chunk_tokens):
        target = sae_target(sae, flat[i : i + chunk_tokens])
        codes = nn_omp(target, sae.W_dec, k, **solver)
        outs.append(sae.decode(codes.dense(sae.W_dec.shape[0]).to(sae.W_dec.dtype)).to(x.dtype))
        l0s.append(codes.n_active)
        oks.append(codes.converged)
    shape = x.shape[:-1]
    if not outs:
        return Reencoded(x.clone(), torch.zeros(shape, dtype=x.dtype, device=x.device),
                         torch.ones(shape, dtype=torch.bool, device=x.device))
    return Reencoded(torch.cat(outs).reshape(x.shape), torch.cat(l0s).to(x.dtype).reshape(shape),
                     torch.cat(oks).reshape(shape))


def support_mask(codes: SparseCodes, n_atoms: int) -> torch.Tensor:
    """The atoms each token's code uses, as a [N, n_atoms] boolean mask (slots past n_active are unused)."""
    used = torch.arange(codes.atoms.shape[1], device=codes.atoms.device) < codes.n_active[:, None]
    mask = torch.zeros(len(codes.atoms), n_atoms + 1, dtype=torch.bool, device=codes.atoms.device)
    return mask.scatter_(1, torch.where(used, codes.atoms, n_atoms), True)[:, :n_atoms]  # unused: a dummy column


def false_positive_mass(codes: torch.Tensor, support: torch.Tensor, decoder_norms: torch.Tensor) -> torch.Tensor:
    """The share of a code's decoded mass carried by latents outside `support`: per token,

        sum_{i active, i not in support} |a_i| ||d_i||  /  sum_{i active} |a_i| ||d_i||

    with a_i the codes [..., F], d_i the decoder rows (their norms [F]) and support a boolean [..., F] mask.
    |a_i| ||d_i|| is the norm of what latent i writes into the reconstruction: the share is invariant to how
    an SAE splits scale between code and decoder row (sae_lens SAEs need not have unit decoder rows), lies in
    [0, 1] and adds up over latents. A squared-norm share of the decoded parts would mix in cross terms: latents
    outside the support that cancel each other would count as no mass. 0 where no latent is active (none fires
    falsely; a NaN there would drop from the means exactly the tokens of an encoder that falls silent)."""
    dtype = torch.promote_types(codes.dtype, torch.float32)
    written = codes.abs().to(dtype) * decoder_norms.to(device=codes.device, dtype=dtype)
    total = written.sum(-1)
    outside = written.masked_fill(support, 0.0).sum(-1)
    return torch.where(total > 0, outside / torch.where(total > 0, total, 1.0), 0.0).to(codes.dtype)


@dataclass
class OracleSplit:
    """The SAE's own code split by an oracle support, per token [...]: `out` decodes the code with the latents
    outside the support zeroed, `l0` counts the latents kept, `fp_mass` is false_positive_mass of the code
    (share outside the support), `converged` the pursuit's flag."""

    out: torch.Tensor
    l0: torch.Tensor
    fp_mass: torch.Tensor
    converged: torch.Tensor


@torch.no_grad()
def oracle_split(sae, x: torch.Tensor, max_k: int | None = None, chunk_tokens: int = 4096, **solver) -> OracleSplit:
    """The SAE's code of x [..., d] against an oracle support: the atoms non-negative OMP (nn_omp) picks from the
    SAE's own decoder for sae_target(sae, x) at the token's own L0 (its number of active latents; d at most, the
    most linearly independent atoms a support can hold: an L0 above d cannot all be the true code).

    The compressed-sensing reading of "the encoder doesn't distinguish noise": a token's true sparse code at the
    sparsity the SAE chose is what a pursuit over the same dictionary finds; latents the encoder turns on outside
    it are false positives. Tokens are solved `chunk_tokens` at a time, each at its own L0 in one pursuit
    (nn_omp's `limits`: one Gram, tokens of like L0 solved together).

    max_k caps the pursuit (the variants pass reencode_2x's k, twice the SAE's in-context L0): a pursuit's cost
    grows as k^3 per token, and an encoder that turns on hundreds of latents off distribution (the organism's
    layer 0 beyond its context: L0 ~ 650-1300 of d = 128) would make it hours. A token above the cap is compared
    with the densest code re-encoding considers; its latents past that count as false positives."""
    d = x.shape[-1]
    flat = x.reshape(-1, d)
    n_atoms = sae.W_dec.shape[0]
    norms = sae.W_dec.detach().norm(dim=-1)
    outs, l0s, fps, oks = [], [], [], []
    for i in range(0, len(flat), chunk_tokens):
        part = flat[i : i + chunk_tokens]
        codes = sae.encode(part)
        # at most d atoms: a support of linearly independent atoms (nn_omp keeps no other) has no more
        active = codes.abs().ceil().clamp(max=1).sum(-1).nan_to_num(0).long().clamp(max=min(d, max_k or d))
        target = sae_target(sae, part)  # after encode, so run-time normalisation state is these rows' for decode
        pursuit = nn_omp(target, sae.W_dec, max(1, int(active.max())), limits=active, **solver)
        support = support_mask(pursuit, n_atoms)
        kept = codes.masked_fill(~support, 0.0)
        outs.append(sae.decode(kept).to(x.dtype))
        l0s.append(kept.abs().ceil().clamp(max=1).sum(-1))
        fps.append(false_positive_mass(codes, support, norms))
        oks.append(pursuit.converged)
    shape = x.shape[:-1]
    if not outs:
        empty = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return OracleSplit(x.clone(), empty, empty.clone(), torch.ones(shape, dtype=torch.bool, device=x.device))
    return OracleSplit(torch.cat(outs).reshape(x.shape), torch.cat(l0s).to(x.dtype).reshape(shape),
                       torch.cat(fps).to(x.dtype).reshape(shape), torch.cat(oks).reshape(shape))
