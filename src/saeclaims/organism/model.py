"""The organism's language model: a GPT-2-style HookedTransformer trained from scratch on CPU.

GPT-2's learned W_pos is a low-dimensional helix; a briefly trained small model keeps a near-random
one. The organism's W_pos starts sinusoidal and is exempt from weight decay so that the positional
claims have structure to test, as they do on gpt2-small.
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

from .layout import make_model

log = logging.getLogger("saeclaims.organism")

POSITION_BINS: tuple[tuple[int, int], ...] = ((0, 8), (8, 64), (64, 128), (128, 256), (256, 512))
WEIGHT_PROCESSING = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}


@dataclass(frozen=True)
class ModelSpec:
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 512
    d_vocab: int = 4096

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
        (decay if p.ndim >= 2 and name != "pos_embed.W_pos" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, spec: TrainSpec) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    frac = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train_model(
    stream: np.ndarray, bos: int, mspec: ModelSpec, tspec: TrainSpec, seed: int, work: Path,
    eval_tokens: np.ndarray | None = None,
):
    """Train with resumable checkpoints in `work`; an interrupted build picks up where it stopped."""
    torch.manual_seed(seed)
    cfg = mspec.config_dict(seed)
    model = make_model(cfg)
    with torch.no_grad():
        row_norm = model.embed.W_E.norm(dim=1).mean().item()
        model.pos_embed.W_pos.copy_(sinusoidal_positions(mspec.n_ctx, mspec.d_model, row_norm))
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
    stream_t = torch.from_numpy(stream.astype(np.int64))
    model.train()
    t0 = time.time()
    bar = tqdm(total=total_steps, initial=step, desc="model", unit="step")
    while step < total_steps:
        # Offsets depend only on (seed, step): resuming reproduces the same batches.
        g = np.random.default_rng([seed, step])
        offsets = g.integers(0, len(stream) - body, size=tspec.batch_seqs)
        batch = torch.stack([stream_t[o : o + body] for o in offsets])
        batch = torch.cat([torch.full((tspec.batch_seqs, 1), bos, dtype=torch.long), batch], dim=1)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total_steps, tspec)
        loss = model(batch, return_type="loss")
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
