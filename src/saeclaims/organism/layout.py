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
# the source document of each evaluation window (int32, one per row of eval_tokens.npy): the bootstrap
# resamples documents, so windows of one document never count as independent evidence
EVAL_DOCUMENTS = "eval_documents.npy"
# held-out windows (not the evaluation set) on which run-time estimates are made, e.g. the residual's mean at
# each position for the mean-shift positional repair
HELD_OUT_TOKENS = "held_out_tokens.npy"
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


def document_windows(docs: list[np.ndarray], length: int, bos: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n windows of `length` tokens (BOS first), none crossing a document boundary, taken round-robin over the
    documents (the first window of each, then the second of each, ...), with each window's document index.

    Why round-robin: a run reads the first rows, so its first sequences come from as many documents as there
    are sequences (up to the number of documents), and resampling documents loses little. A document's last
    partial window is dropped; a document shorter than one window gives none.
    """
    body = length - 1
    per_doc = [d[: len(d) // body * body].reshape(-1, body) for d in docs]
    rows: list[np.ndarray] = []
    ids: list[int] = []
    depth = 0
    while len(rows) < n and any(len(p) > depth for p in per_doc):
        for i, p in enumerate(per_doc):
            if len(p) > depth and len(rows) < n:
                rows.append(p[depth])
                ids.append(i)
        depth += 1
    if len(rows) < n:
        raise ValueError(f"need {n} windows of {length} tokens, the {len(docs)} documents hold {len(rows)}")
    out = np.empty((n, length), dtype=np.uint16)
    out[:, 0] = bos
    out[:, 1:] = np.stack(rows)
    return out, np.asarray(ids, dtype=np.int32)


def stream_window_documents(rows: np.ndarray, bos: int) -> np.ndarray:
    """The document of each window cut by `windows` from a stream whose documents each begin with BOS: the
    document holding most of the window's body (ties: the earlier). Windows straddling a boundary share their
    minority document with a neighbour; `document_windows` avoids that for new builds."""
    body = np.asarray(rows)[:, 1:]
    doc = np.cumsum(body.reshape(-1) == bos).reshape(body.shape)  # labels only group: consecutive integers
    return np.asarray([np.bincount(r - r.min()).argmax() + r.min() for r in doc], dtype=np.int32)
