"""The organism's language model: a GPT-2-style HookedTransformer trained from scratch on CPU.

GPT-2's learned W_pos is a low-dimensional helix; a briefly trained small model keeps a near-random
one. The organism's W_pos is GPT-2's own, reduced to its top principal components (`positions.py`) and
frozen in training, so that the positional claims have GPT-2's geometry to test. (`positions=None`: a
sinusoidal start, trained without weight decay, as the first organism had.)

GPT-2 uses context far beyond the 128 tokens its SAEs were trained on; a small model trained briefly on
books barely does. Part of each training batch therefore carries planted long-range repeats (spans copied
hundreds of tokens later, `TrainSpec.repeat_*`), so that induction-like heads form and the model's loss on
natural text keeps falling with position. Training runs attention through SDPA and the fused norms and
GELU (`attention.py`, `fused_ops.py`), equal to TransformerLens's own forward and ~3.5x faster at T 1024.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..attention import fused_attention
from ..fused_ops import fused_norms_and_activations
from .layout import make_model

log = logging.getLogger("saeclaims.organism")

POSITION_BINS: tuple[tuple[int, int], ...] = (
    (0, 8), (8, 64), (64, 128), (128, 256), (256, 512), (512, 1024),
)
WEIGHT_PROCESSING = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}


@dataclass(frozen=True)
class ModelSpec:
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 1024
    d_vocab: int = 4096
    # W_pos: "gpt2" (GPT-2's helix, frozen; `positions.py`) or "sinusoidal" (trained, the first organism's)
    positions: str = "gpt2"
    position_share: float = 0.98  # GPT-2 components kept: as many as reach this share of the variance
    # Mean norm of W_pos rows 1.. over the mean norm of W_E rows at initialisation. GPT-2 small: W_pos rows
    # 1..1023 average 3.38 (measured on the reference); its W_E rows about 4 (approximate, not in shared/).
    pos_to_token_norm: float = 0.85

    def config_dict(self, seed: int) -> dict:
        return {
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_head": self.d_model // self.n_heads,
            "d_mlp": self.d_mlp,
            "n_ctx": self.n_ctx,
            "d_vocab": self.d_vocab,
            "act_fn": "gelu_new",
            "normalization_type": "LN",
            "positional_embedding_type": "standard",
            "original_architecture": "GPT2LMHeadModel",
            "model_name": "saeclaims-organism",
            "seed": seed,
        }


@dataclass(frozen=True)
class TrainSpec:
    tokens: int = 6_000_000
    batch_seqs: int = 16
    lr: float = 2e-3
    warmup_steps: int = 60
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    # Planted long-range repeats: this share of training sequences gets `repeat_spans` spans of
    # repeat_len tokens copied `repeat_lag` tokens later (both drawn uniformly from the ranges).
    repeat_fraction: float = 0.0
    repeat_spans: int = 2
    repeat_len: tuple[int, int] = (16, 64)
    repeat_lag: tuple[int, int] = (128, 896)
    fused: bool = True


def plant_repeats(batch: np.ndarray, rng: np.random.Generator, spec: TrainSpec) -> np.ndarray:
    """Copy spans of some rows (position >= 1: BOS stays) to a later place in the same row, in place.

    A span [s, s+L) is written to [s+lag, s+lag+L); later spans may overwrite earlier ones, so a row holds
    at most `repeat_spans` repeats. Rows too short for the smallest lag are left alone.
    """
    n, t = batch.shape
    lo_len, hi_len = spec.repeat_len
    lo_lag, hi_lag = spec.repeat_lag
    for i in range(n):
        if rng.random() >= spec.repeat_fraction:
            continue
        for _ in range(spec.repeat_spans):
            length = int(rng.integers(lo_len, hi_len + 1))
            max_lag = min(hi_lag, t - 1 - length - 1)
            if max_lag < lo_lag:
                continue
            lag = int(rng.integers(lo_lag, max_lag + 1))
            start = int(rng.integers(1, t - lag - length + 1))
            batch[i, start + lag : start + lag + length] = batch[i, start : start + length]
    return batch


def sinusoidal_positions(n_ctx: int, d_model: int, row_norm: float) -> torch.Tensor:
    pos = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    table *= row_norm / table.norm(dim=1, keepdim=True)
    return table.float()


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name != "pos_embed.W_pos" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, spec: TrainSpec) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    frac = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def initial_model(mspec: ModelSpec, seed: int, positions: np.ndarray | None = None):
    """The untrained model: TransformerLens's initialisation, then W_pos set. `positions` (any scale) is
    rescaled to `pos_to_token_norm` times W_E's mean row norm and frozen."""
    torch.manual_seed(seed)
    model = make_model(mspec.config_dict(seed))
    with torch.no_grad():
        if positions is None:
            row_norm = model.embed.W_E.norm(dim=1).mean().item()
            model.pos_embed.W_pos.copy_(sinusoidal_positions(mspec.n_ctx, mspec.d_model, row_norm))
        else:
            table = torch.from_numpy(np.asarray(positions, dtype=np.float32))
            token_norm = model.embed.W_E.norm(dim=1).mean()
            table = table * (mspec.pos_to_token_norm * token_norm / table[1:].norm(dim=1).mean())
            model.pos_embed.W_pos.copy_(table)
            model.pos_embed.W_pos.requires_grad_(False)
    return model


def training_loss(model, batch: torch.Tensor, fused: bool) -> torch.Tensor:
    """The next-token loss; with `fused`, through SDPA and the fused norms/GELU (same function)."""
    with fused_attention(model, enabled=fused), fused_norms_and_activations(model, enabled=fused):
        return model(batch, return_type="loss")


def train_model(
    stream: np.ndarray, bos: int, mspec: ModelSpec, tspec: TrainSpec, seed: int, work: Path,
    eval_tokens: np.ndarray | None = None, positions: np.ndarray | None = None,
):
    """Train with resumable checkpoints in `work`; an interrupted build picks up where it stopped."""
    cfg = mspec.config_dict(seed)
    model = initial_model(mspec, seed, positions)
    opt = torch.optim.AdamW(_param_groups(model, tspec.weight_decay), lr=tspec.lr, betas=(0.9, 0.95))
    seq_tokens = tspec.batch_seqs * mspec.n_ctx
    total_steps = max(1, tspec.tokens // seq_tokens)
    body = mspec.n_ctx - 1
    if len(stream) <= body:
        raise ValueError(f"training stream of {len(stream)} tokens is shorter than one context")
    ckpt = work / "model_ckpt.pt"
    step, elapsed_before = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        elapsed_before = state.get("elapsed_s", 0.0)
        log.info("resuming model training at step %d/%d", step, total_steps)
    model.train()
    t0 = time.time()
    bar = tqdm(total=total_steps, initial=step, desc="model", unit="step")
    while step < total_steps:
        # Offsets depend only on (seed, step): resuming reproduces the same batches.
        g = np.random.default_rng([seed, step])
        offsets = g.integers(0, len(stream) - body, size=tspec.batch_seqs)
        rows = np.stack([stream[o : o + body] for o in offsets]).astype(np.int64)
        rows = np.concatenate([np.full((tspec.batch_seqs, 1), bos, dtype=np.int64), rows], axis=1)
        if tspec.repeat_fraction > 0:
            plant_repeats(rows, g, tspec)
        batch = torch.from_numpy(rows)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total_steps, tspec)
        loss = training_loss(model, batch, tspec.fused)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tspec.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % tspec.checkpoint_every == 0 or step == total_steps:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed_s": elapsed_before + time.time() - t0}, tmp)
            tmp.replace(ckpt)
            msg = f"step {step}/{total_steps} train loss {loss.item():.4f} ({time.time() - t0:.0f}s)"
            if eval_tokens is not None:
                msg += f" eval loss {eval_loss(model, eval_tokens[:16])[0]:.4f}"
                model.train()
            log.info(msg)
    bar.close()
    model.eval()
    return model, cfg, total_steps * seq_tokens, elapsed_before + time.time() - t0


def process_for_release(model) -> dict:
    """Apply TransformerLens's standard weight processing once, so everything downstream (SAE
    training, W_pos variants, evaluation) sees the same processed weights."""
    model.process_weights_(**WEIGHT_PROCESSING)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


@torch.no_grad()
def per_token_loss(model, tokens: np.ndarray, batch: int = 16) -> np.ndarray:
    """Next-token loss [n_seq, T-1]; column p is the loss of predicting token p+1 at position p."""
    model.eval()
    out = []
    with fused_attention(model), fused_norms_and_activations(model):
        for i in range(0, len(tokens), batch):
            t = torch.from_numpy(tokens[i : i + batch].astype(np.int64))
            out.append(model(t, return_type="loss", loss_per_token=True).float().numpy())
    return np.concatenate(out)


def eval_loss(model, tokens: np.ndarray) -> tuple[float, dict[str, float]]:
    losses = per_token_loss(model, tokens)
    bins = {}
    for lo, hi in POSITION_BINS:
        hi_c = min(hi, losses.shape[1])
        if lo < hi_c:
            bins[f"[{lo},{hi})"] = float(losses[:, lo:hi_c].mean())
    return float(losses.mean()), bins


def save_config(path: Path, cfg: dict) -> None:
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
