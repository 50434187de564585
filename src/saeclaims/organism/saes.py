"""Train the organism's residual-stream SAEs with sae_lens's own trainer, and measure them.

sae_lens evaluates nothing when wandb is off, so L0 and explained variance are measured here on the
held-out evaluation shard.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..splice import measure
from ..subjects.core import Subject
from .corpus import windows

log = logging.getLogger("saeclaims.organism")


@dataclass(frozen=True)
class SAESpec:
    d_sae: int = 2048
    training_tokens: int = 2_500_000
    l1_coefficient: float = 5.0
    lr: float = 2e-3
    train_batch_size_tokens: int = 4096


def hook_names(n_layers: int) -> list[str]:
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


def train_sae(
    model, stream: np.ndarray, bos: int, hook: str, context_size: int, spec: SAESpec, seed: int,
    out_dir: Path, dataset_path: str = "saeclaims-organism-train", verbose: bool = True,
):
    """One standard ReLU SAE via `LanguageModelSAETrainingRunner`, saved with sae_lens's format."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens.saes.standard_sae import StandardTrainingSAEConfig

    steps = spec.training_tokens // spec.train_batch_size_tokens
    sae_cfg = StandardTrainingSAEConfig(
        d_in=model.cfg.d_model,
        d_sae=spec.d_sae,
        l1_coefficient=spec.l1_coefficient,
        l1_warm_up_steps=steps // 20,
        normalize_activations="expected_average_only_in",
    )
    train_sae_config(model, stream, bos, hook, context_size, sae_cfg, spec.training_tokens,
                     spec.train_batch_size_tokens, spec.lr, seed, out_dir, verbose=verbose,
                     dataset_path=dataset_path)


def train_sae_config(
    model, stream: np.ndarray, bos: int, hook: str, context_size: int, sae_cfg, training_tokens: int,
    train_batch_size_tokens: int, lr: float, seed: int, out_dir: Path, n_batches_for_norm_estimate: int = 20,
    verbose: bool = True, dataset_path: str = "saeclaims-organism-train",
) -> None:
    """Any sae_lens training SAE config (standard, JumpReLU, TopK, ...) through sae_lens's own
    `LanguageModelSAETrainingRunner`, on windows of `context_size` tokens that begin with BOS, so the
    saved cfg.json records the context, hook and BOS handling the way a real release does."""
    # lazy: datasets is heavy; only the SAE training stage needs it
    from datasets import Dataset

    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig

    n_windows = -(-training_tokens // context_size) + 64
    rng = np.random.default_rng([seed, context_size])
    body = context_size - 1
    # Several passes over the stream when it is short, each with its own phase and order.
    rows = []
    phase = 0
    while sum(len(r) for r in rows) < n_windows:
        shift = int(rng.integers(0, body)) if phase else 0
        w = windows(stream[shift:], context_size, bos)
        rows.append(w[rng.permutation(len(w))])
        phase += 1
    data = np.concatenate(rows)[:n_windows]
    dataset = Dataset.from_dict({"input_ids": data.astype(np.int64).tolist()})
    steps = training_tokens // train_batch_size_tokens
    store_prompts = max(1, 2048 // context_size)
    cfg = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name=model.cfg.model_name,
        hook_name=hook,
        dataset_path=dataset_path,
        is_dataset_tokenized=True,
        streaming=False,
        context_size=context_size,
        prepend_bos=True,
        exclude_special_tokens=[bos],
        training_tokens=training_tokens,
        train_batch_size_tokens=train_batch_size_tokens,
        store_batch_size_prompts=store_prompts,
        # sae_lens sizes its shuffle buffer as n_batches_in_buffer * context_size tokens.
        n_batches_in_buffer=max(4, (4 * train_batch_size_tokens) // context_size),
        n_batches_for_norm_estimate=n_batches_for_norm_estimate,
        lr=lr,
        lr_warm_up_steps=steps // 50,
        lr_decay_steps=steps // 5,
        device="cpu",
        seed=seed,
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=str(out_dir),
        verbose=verbose,
    )
    with warnings.catch_warnings():
        # sae_lens counts dataset rows against training tokens, and re-wraps torch-formatted rows
        for msg in ("The training dataset contains fewer samples", "To copy construct from a tensor",
                    "All samples in the training dataset have been exhausted"):
            warnings.filterwarnings("ignore", message=msg, category=UserWarning)
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
        runner.run()
    for extra in ("runner_cfg.json",):
        (out_dir / extra).unlink(missing_ok=True)
    canonical_cfg(out_dir / "cfg.json")


def canonical_cfg(path: Path) -> None:
    """Rewrite an SAE's cfg.json with sorted keys: sae_lens builds part of it from a set of field names,
    so its key order (and the file's sha256) changes from run to run with string hashing."""

    path.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True))


@torch.no_grad()
def sae_quality(model, sae, hook: str, tokens: np.ndarray, lo: int, hi: int, batch: int = 16) -> dict:
    """L0 and explained variance of the SAE on positions [lo, hi) of held-out sequences (any hook)."""
    xs = []
    stop = int(hook.split(".")[1]) + 1
    for i in range(0, len(tokens), batch):
        t = torch.from_numpy(tokens[i : i + batch].astype(np.int64))
        _, cache = model.run_with_cache(t, names_filter=[hook], stop_at_layer=stop)
        # (tokens, ...): an attn.hook_z SAE reshapes (n_heads, d_head) itself, as its cfg says
        xs.append(cache[hook][:, lo:hi].flatten(0, 1))
    return reconstruction_quality(sae, torch.cat(xs), lo, hi)


def ce_loss_score(model, sae, sae_id: str, tokens: np.ndarray, lo: int, hi: int) -> float:
    """sae_lens's CE-loss score of the SAE spliced at positions [lo, hi) of held-out sequences, exactly as the
    `in-context-performs-well` claim measures it (splice kernels, `instruments.ce_score`'s estimate):
    (CE_zero - CE_sae) / (CE_zero - CE_clean)."""
    subject = Subject(name="card", model=model, saes={sae_id: sae}, tokens=torch.from_numpy(tokens.astype(np.int64)),
                      context_sizes={sae_id: hi})
    m = measure(subject, [sae_id], ("zero", "sae"), progress=False)
    z = np.nanmean(m.get("zero", sae_id, "dce")[:, lo:hi].astype(np.float64))
    s = np.nanmean(m.get("sae", sae_id, "dce")[:, lo:hi].astype(np.float64))
    return float((z - s) / z)


@torch.no_grad()
def reconstruction_quality(sae, x: torch.Tensor, lo: int, hi: int) -> dict:
    """The card's numbers for activations x [tokens, ...] taken at positions [lo, hi): L0 (non-zero codes, so
    signed codes count too) and explained variance (pooled, mean-subtracted, as sae_lens defines it)."""
    x = x.float()
    codes = sae.encode(x)
    rec = sae.decode(codes).reshape(len(x), -1)
    x = x.reshape(len(x), -1)
    resid = (x - rec).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return {
        "l0": float((codes != 0).float().sum(-1).mean()),
        "explained_variance": float(1 - resid / total),
        "positions": [lo, hi],
        "n_tokens": int(x.shape[0]),
    }
