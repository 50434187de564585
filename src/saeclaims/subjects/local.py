"""`local:<dir>` subjects: SAEs saved by sae_lens plus a TransformerLens name or a local HF checkpoint.

For models and SAEs that are not (or not yet) a sae_lens release, with no hub access needed when
the folder holds the checkpoint and eval_tokens.npy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..organism.layout import EVAL_DOCUMENTS, EVAL_TOKENS, HELD_OUT_TOKENS, stream_window_documents
from .core import Subject, SubjectError, hook_order, package_versions
from .loading import _held_out_tokens, _select_documents, _select_tokens, load_hooked_model, load_sae_dir, read_json
from .release import _eval_tokens
from .validation import validate_subject

PREFIX = "local:"


# subject.json "model" values that name a model no hub or folder holds, loaded by the project's own code: the
# module that provides one registers it here (smollm2.py registers "smollm2"), so this module imports none.
BUILTIN_MODELS: dict[str, Callable[[str], object]] = {}


def load_local(directory: str | Path, device: str = "cpu", n_seqs: int | None = None,
               seq_len: int | None = None, text_file: Path | None = None, name: str | None = None) -> Subject:
    """`local:<dir>`: sae_lens SAE folders below DIR, the model named in DIR/subject.json
    (a TransformerLens name or a path relative to DIR), tokens from DIR/eval_tokens.npy or a text file."""
    root = Path(directory)
    if not root.is_dir():
        raise SubjectError(f"local subject folder {root} does not exist")
    meta_path = root / "subject.json"
    meta = read_json(meta_path, "subject.json") if meta_path.exists() else {}
    sae_dirs = sorted(p.parent for p in root.rglob("cfg.json") if (p.parent / "sae_weights.safetensors").exists())
    if not sae_dirs:
        raise SubjectError(f"no SAEs below {root}: save them with sae_lens's SAE.save_model(DIR/<hook>)")
    loaded = [load_sae_dir(d, device) for d in sae_dirs]
    model_ref = meta.get("model") or loaded[0].cfg.metadata.model_name
    if not model_ref:
        raise SubjectError(f"{root}: name the model in subject.json ({{\"model\": ...}})")
    if (root / model_ref).exists():
        model_ref = str(root / model_ref)
    kwargs = dict(meta.get("from_pretrained_kwargs") or loaded[0].cfg.metadata.model_from_pretrained_kwargs or {})
    if model_ref in BUILTIN_MODELS:
        model = BUILTIN_MODELS[model_ref](device)
    else:
        model = load_hooked_model(model_ref, device=device, **kwargs)
    full_ctx = meta.get("full_context_size")
    saes, full = {}, {}
    for d, sae in zip(sae_dirs, loaded):
        is_full = bool(full_ctx and sae.cfg.metadata.context_size == full_ctx)
        target = full if is_full else saes
        if d.name in target:
            raise SubjectError(f"two SAEs below {root} have the id {d.name!r} (the folder name); rename one folder")
        target[d.name] = sae
    # a control is keyed by the id of the SAE it controls: same folder name, else the one SAE at its hook
    for cid in [c for c in full if c not in saes]:
        same_hook = [i for i, s in saes.items() if s.cfg.metadata.hook_name == full[cid].cfg.metadata.hook_name]
        if len(same_hook) == 1:
            full[same_hook[0]] = full.pop(cid)
    if (root / EVAL_TOKENS).exists():
        tokens = _select_tokens(np.load(root / EVAL_TOKENS), n_seqs, seq_len, str(root))
        documents = _select_documents(root / EVAL_DOCUMENTS, len(tokens), str(root))
        held_out = _held_out_tokens(root / HELD_OUT_TOKENS, tokens.shape[1])
    else:
        tokens = _eval_tokens(model, n_seqs or 64, seq_len or model.cfg.n_ctx, text_file,
                              meta.get("dataset", "Skylion007/openwebtext"))
        documents = stream_window_documents(tokens.numpy(), int(tokens[0, 0]))
        held_out = None
    subject = Subject(
        name=name or f"local:{root.name}", model=model, saes=saes, tokens=tokens.to(device), documents=documents,
        held_out_tokens=None if held_out is None else held_out.to(device),
        context_sizes={h: s.cfg.metadata.context_size for h, s in saes.items()},
        full_context_saes=full,
        provenance={"model": model_ref, "release": f"local:{root}",
                    "sae_ids": sorted(saes, key=lambda i: (*hook_order(saes[i].cfg.metadata.hook_name), i)),
                    "model_from_pretrained_kwargs": kwargs, "versions": package_versions()},
    )
    validate_subject(subject)
    return subject
