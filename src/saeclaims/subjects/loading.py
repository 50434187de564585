"""Loading code shared by every subject source: models, SAE folders, hub access and token windows.

The hub helpers exist so an offline machine fails in seconds with one message naming the missing
files, instead of retrying for minutes and ending in a library's stack trace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core import HubUnavailableError, SubjectError


def load_hooked_model(name_or_path: str, device: str = "cpu", **from_pretrained_kwargs: Any):
    """A HookedTransformer from an official name (hub) or a local HF checkpoint folder.

    TransformerLens's `from_pretrained` only accepts official names; for a local folder the same
    steps run without the name lookup, with the same weight processing.
    """
    from transformer_lens import HookedTransformer

    path = Path(name_or_path)
    if not (path / "config.json").exists():
        with _hub_errors(f"model {name_or_path}"), offline_unless_reachable():
            return HookedTransformer.from_pretrained(name_or_path, device=device, **from_pretrained_kwargs)
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_cfg = json.loads((path / "config.json").read_text())
    if hf_cfg.get("model_type") == "gpt2" and "n_ctx" not in hf_cfg:
        raise SubjectError(f"{path}/config.json has no n_ctx: TransformerLens reads GPT-2's n_ctx; add "
                           f"\"n_ctx\": {hf_cfg.get('n_positions')} (its n_positions) to the file")
    processing = {k: from_pretrained_kwargs.pop(k) for k in
                  ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
                  if k in from_pretrained_kwargs}
    fold_ln = processing.get("fold_ln", True)
    hf_model = AutoModelForCausalLM.from_pretrained(str(path))
    cfg = loading.get_pretrained_model_config(str(path), fold_ln=fold_ln, device=device,
                                              **from_pretrained_kwargs)
    state_dict = loading.get_pretrained_state_dict(str(path), cfg, hf_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError):
        tokenizer = None
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **processing)
    return model.to(device).eval()


def load_sae_dir(path: Path, device: str = "cpu"):
    """One SAE folder as written by sae_lens's `save_model`; a clear error instead of a missing-file trace."""
    from sae_lens import SAE

    if not (path / "cfg.json").exists():
        raise SubjectError(f"no SAE at {path}: expected cfg.json and sae_weights.safetensors "
                           "as written by sae_lens's save_model")
    return SAE.load_from_disk(str(path), device=device)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds, not retries."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hf

    url = urlparse(hf.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable() -> Iterator[None]:
    """Cache-only hub access when the hub cannot be reached: cached files load, missing ones fail fast."""
    import huggingface_hub.constants as hf

    if hf.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    modules: list[Any] = [hf]
    try:
        import datasets.config

        modules.append(datasets.config)
    except ImportError:
        pass
    saved = [m.HF_HUB_OFFLINE for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, old in zip(modules, saved):
            m.HF_HUB_OFFLINE = old


class _hub_errors:
    """Turn the hub's many failure types into one message saying what is missing and how to fix it."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> _hub_errors:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, SubjectError):
            return False
        text = f"{type(exc).__name__}: {exc}"
        hub_markers = ("huggingface", "hub", "connection", "offline", "resolve", "cache", "http",
                       "localentrynotfound", "max retries", "name or service")
        if any(m in text.lower() for m in hub_markers) or isinstance(exc, (OSError, ConnectionError)):
            raise HubUnavailableError(
                f"{self.what} needs the Hugging Face hub, which cannot be reached and the files are not "
                f"in the cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}, "
                f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download them on a "
                "connected machine (huggingface-cli download REPO) and copy the cache, set HF_HOME to a "
                "cache that holds them, or use --sae-subject organism / local:DIR"
            ) from exc
        return False


def tokens_from_texts(texts: Iterable[str], tokenizer: Any, n_seqs: int, seq_len: int, bos: int) -> torch.Tensor:
    """Concatenate documents (BOS between them, as sae_lens does) into windows of seq_len that begin with
    BOS; the tokenizer's own special tokens are left out, so no window starts with two BOS tokens."""
    from ..organism.layout import windows

    ids: list[int] = []
    need = n_seqs * (seq_len - 1) + 1
    for text in texts:
        piece = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if piece and piece[0] == bos:  # a tokenizer that prepends BOS regardless: one BOS per document
            piece = piece[1:]
        if ids:  # between documents; each window gets its own leading BOS from `windows`
            ids.append(bos)
        ids.extend(piece)
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise SubjectError(f"the evaluation text holds {len(ids)} tokens; {need} are needed for "
                           f"{n_seqs} x {seq_len}: lower --n-seqs or give more text")
    return torch.from_numpy(windows(np.asarray(ids), seq_len, bos, n_seqs).astype(np.int64))


def _select_tokens(tokens: np.ndarray, n_seqs: int | None, seq_len: int | None, label: str) -> torch.Tensor:
    """The first n_seqs x seq_len of a stored evaluation set (all of it by default), never more than it holds."""
    n_avail, t_avail = tokens.shape
    n = n_avail if n_seqs is None else n_seqs
    t = t_avail if seq_len is None else seq_len
    if n < 1:
        raise SubjectError(f"{label}: --n-seqs must be >= 1, got {n}")
    if n > n_avail:
        raise SubjectError(f"{label}: asked for {n} sequences, the evaluation set holds {n_avail}")
    if t > t_avail:
        raise SubjectError(f"{label}: asked for sequences of {t} tokens, the evaluation set has {t_avail}")
    return torch.from_numpy(tokens[:n, :t].astype(np.int64))
