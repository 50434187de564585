"""The organism's on-disk layout and the few helpers a loader needs.

Kept apart from `build`, `model`, `corpus` and `saes` so that loading the shipped organism never
imports the training code (sae_lens's trainer, the tokenizer trainer, the corpus splitter).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
EVAL_TOKENS = "eval_tokens.npy"
CARD_FILE = "card.json"

BOS_TOKEN = "<|endoftext|>"


def make_model(cfg_dict: dict[str, Any]):
    """An untrained HookedTransformer of the organism's shape; weights are loaded or trained after."""
    # lazy: transformer_lens imports transformers and datasets (seconds); loading the organism needs only the layout
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    return HookedTransformer(HookedTransformerConfig(**cfg_dict))


def windows(stream: np.ndarray, length: int, bos: int, n: int | None = None) -> np.ndarray:
    """Non-overlapping windows of `length` tokens, each beginning with BOS (as in sae_lens)."""
    body = length - 1
    n_avail = len(stream) // body
    if n is not None:
        if n_avail < n:
            raise ValueError(f"need {n} windows of {length} tokens, the stream holds {n_avail}")
        n_avail = n
    if n_avail == 0:
        raise ValueError(f"token stream of {len(stream)} tokens is shorter than one window")
    out = np.empty((n_avail, length), dtype=np.uint16)
    out[:, 0] = bos
    out[:, 1:] = stream[: n_avail * body].reshape(n_avail, body)
    return out
