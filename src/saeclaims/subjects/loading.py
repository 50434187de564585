"""Loading code shared by every subject source: models, SAE folders, hub access and token windows.

The hub helpers exist so an offline machine fails in seconds with one message naming the missing
files, instead of retrying for minutes and ending in a library's stack trace.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ..organism.layout import windows
from .core import HubUnavailableError, SubjectError

TL_CONFIG = "model_config.json"  # a TransformerLens-native folder: HookedTransformerConfig fields
TL_WEIGHTS = "model.safetensors"  # ... and the state dict HookedTransformer.state_dict() gives
TL_TOKENIZER = "tokenizer.json"  # ... and optionally a `tokenizers` file
# Weight processing that `from_pretrained` applies; a native state dict was processed before it was saved.
_PROCESSING_KWARGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                      "refactor_factored_attn_matrices")


def is_tl_native(path: Path) -> bool:
    """A folder holding a TransformerLens config and state dict (the organism's format)."""
    return (path / TL_CONFIG).is_file() and (path / TL_WEIGHTS).is_file()


def load_tl_native(path: Path, device: str = "cpu", dtype: str | torch.dtype | None = None):
    """A HookedTransformer from `model_config.json` + `model.safetensors` (+ optional `tokenizer.json`).

    The state dict is loaded strictly and unprocessed: it is TransformerLens's own, so re-running
    `from_pretrained`'s processing would change it (and cannot fold a LayerNorm that was already folded).
    """
    from safetensors import SafetensorError  # lazy: only where weights are read from disk
    from safetensors.torch import load_file  # lazy: only where weights are read from disk

    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    path = Path(path)
    for name in (TL_CONFIG, TL_WEIGHTS):
        if not (path / name).is_file():
            raise SubjectError(f"{path} is not a TransformerLens-native model folder: {name} is missing")
    fields = json.loads((path / TL_CONFIG).read_text())
    if dtype is not None:
        fields["dtype"] = dtype
    if isinstance(fields.get("dtype"), str):  # JSON holds "float32" or "torch.float32"
        name = fields["dtype"].removeprefix("torch.")
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise SubjectError(f"{path / TL_CONFIG}: dtype {fields['dtype']!r} is not a torch dtype")
        fields["dtype"] = getattr(torch, name)
    try:
        cfg = HookedTransformerConfig(**{**fields, "device": "cpu"})
    except (TypeError, ValueError, AssertionError) as exc:
        raise SubjectError(f"{path / TL_CONFIG}: not a HookedTransformerConfig ({exc})") from exc
    model = HookedTransformer(cfg, move_to_device=False)
    try:
        model.load_state_dict(load_file(str(path / TL_WEIGHTS)))
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise SubjectError(f"{path / TL_WEIGHTS} does not fit {path / TL_CONFIG}: {exc}") from exc
    if (path / TL_TOKENIZER).is_file():
        # set_tokenizer insists on a hub name to reload from; a local file is attached directly.
        model.tokenizer = tokenizer_from_file(path / TL_TOKENIZER)
        model.cfg.tokenizer_prepends_bos = _prepends_bos(model.tokenizer)
    return (model if device == "cpu" else model.to(device)).eval()


def tokenizer_from_file(path: Path, bos_token: str | None = None):
    """A transformers tokenizer from a bare `tokenizers` file; BOS (also EOS and PAD) is `bos_token`,
    else the file's only special token, so windows and tokens_from_texts agree on it."""
    from transformers import PreTrainedTokenizerFast  # lazy: only HF checkpoints need transformers

    if bos_token is None:
        specials = [t["content"] for t in json.loads(Path(path).read_text()).get("added_tokens", [])
                    if t.get("special")]
        bos_token = specials[0] if len(specials) == 1 else None
    named = {} if bos_token is None else {"bos_token": bos_token, "eos_token": bos_token, "pad_token": bos_token}
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **named)


def _prepends_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer adds BOS itself (TransformerLens then does not add a second one)."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def load_hooked_model(name_or_path: str, device: str = "cpu", **from_pretrained_kwargs: Any):
    """A HookedTransformer from an official name (hub), a local HF checkpoint folder or a
    TransformerLens-native folder (`model_config.json` + `model.safetensors`, as the organism ships).

    TransformerLens's `from_pretrained` only accepts official names; for a local HF folder the same
    steps run without the name lookup, with the same weight processing. A native folder is loaded as
    saved: weight-processing flags (sae_lens records `center_writing_weights` with every SAE) do not
    apply to it and are ignored; `dtype` is honoured; anything else is an error.
    """
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens import HookedTransformer

    path = Path(name_or_path)
    if is_tl_native(path) and not (path / "config.json").exists():
        extra = {k: v for k, v in from_pretrained_kwargs.items() if k not in (*_PROCESSING_KWARGS, "dtype")}
        if extra:
            raise SubjectError(f"{path} is a TransformerLens-native model: its settings come from "
                               f"{TL_CONFIG}, so from_pretrained_kwargs {sorted(extra)} cannot apply")
        return load_tl_native(path, device, from_pretrained_kwargs.get("dtype"))
    if not (path / "config.json").exists():
        with _hub_errors(f"model {name_or_path}"), offline_unless_reachable():
            return HookedTransformer.from_pretrained(name_or_path, device=device, **from_pretrained_kwargs)
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: only HF checkpoints need transformers

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


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; a truncated or garbled file is one error naming it, not a bare JSONDecodeError."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubjectError(f"{path} is not valid JSON ({exc}): {what} that is truncated or garbled; restore "
                           "the file") from None
    if not isinstance(value, dict):
        raise SubjectError(f"{path} holds a JSON {type(value).__name__}, not the object {what} is; restore the file")
    return value


def load_sae_dir(path: Path, device: str = "cpu"):
    """One SAE folder as written by sae_lens's `save_model`; a clear error instead of a missing-file trace,
    and a cfg.json sae_lens cannot read (a field missing or of the wrong type) named with its path."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); only where SAEs are loaded
    from sae_lens import SAE

    if not (path / "cfg.json").exists():
        raise SubjectError(f"no SAE at {path}: expected cfg.json and sae_weights.safetensors "
                           "as written by sae_lens's save_model")
    read_json(path / "cfg.json", "an SAE config (sae_lens's cfg.json)")
    try:
        return SAE.load_from_disk(str(path), device=device)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise SubjectError(f"{path / 'cfg.json'}: sae_lens cannot load this SAE config ({type(exc).__name__}: "
                           f"{exc}); a field is missing or wrong: restore the file or save the SAE again with "
                           "sae_lens's save_model") from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds, not retries."""
    import huggingface_hub.constants as hf  # lazy: the hub client loads only where the hub is asked

    url = urlparse(hf.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable() -> Iterator[None]:
    """Cache-only hub access when the hub cannot be reached: cached files load, missing ones fail fast."""
    import huggingface_hub.constants as hf  # lazy: the hub client loads only where the hub is asked

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


def _held_out_tokens(path: Path, seq_len: int) -> torch.Tensor | None:
    """The subject's held-out windows (HELD_OUT_TOKENS beside the evaluation set), cut to the run's sequence
    length; None where it ships none."""
    if not path.exists():
        return None
    rows = np.load(path)
    return torch.from_numpy(rows[:, :seq_len].astype(np.int64))


def _select_documents(path: Path, n_rows: int, label: str) -> np.ndarray | None:
    """The source document of the first n_rows evaluation windows, from the evaluation set's EVAL_DOCUMENTS
    file beside it; None where the set records none (the bootstrap then resamples sequences)."""
    if not path.exists():
        return None
    docs = np.load(path)
    if docs.ndim != 1 or len(docs) < n_rows:
        raise SubjectError(f"{label}: {path.name} holds {docs.shape} document ids for {n_rows} evaluation windows; "
                           "rebuild the evaluation set (one id per row of eval_tokens.npy)")
    return np.asarray(docs[:n_rows], dtype=np.int64)
