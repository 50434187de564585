"""Checks every loaded subject passes before a claim sees it.

sae_lens's `add_sae` only logs a hook it cannot find, and a silently skipped SAE would make every
claim test vacuous; so a mismatch is an error here, with the fix in the message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .core import Subject, SubjectError, hook_in_id, hook_kind, sae_architecture, sae_hook_name


def hook_width(model: Any, hook: str) -> int:
    """The width of the activation an SAE at `hook` reads (hook_z flattened over heads, as sae_lens does)."""
    if hook_kind(hook) == "attn.hook_z":
        return int(model.cfg.n_heads * model.cfg.d_head)
    return int(model.cfg.d_model)


def validate_sae(sae: Any, model: Any, label: str) -> None:
    """The SAE reconstructs an activation of this model at a hook sae_lens trains on, has the hook's width,
    finite weights and a context size. Objects other than sae_lens SAEs qualify when they follow its
    protocol: `encode(x)`, `decode(codes)` and `cfg.d_in`, `cfg.metadata.hook_name`, `cfg.metadata.context_size`."""
    missing = [a for a in ("encode", "decode") if not callable(getattr(sae, a, None))]
    if missing or getattr(getattr(sae, "cfg", None), "metadata", None) is None:
        raise SubjectError(f"SAE {label} ({type(sae).__name__}) does not follow the SAE protocol: it needs "
                           "encode(x), decode(codes), cfg.d_in and cfg.metadata.hook_name/context_size "
                           "(see README, 'SAEs that are not sae_lens objects')")
    arch = sae_architecture(sae)
    if "transcoder" in str(arch).lower() or getattr(sae.cfg, "d_out", None) is not None:
        raise SubjectError(f"SAE {label} is a transcoder ({arch}): its output is not a reconstruction of its "
                           "input, so splicing it in place of the activation tests none of these claims; leave "
                           "it out of the subject")
    hook = sae_hook_name(sae)
    hook_kind(hook)
    if hook not in model.hook_dict:
        raise SubjectError(f"SAE {label}: hook {hook!r} is not in model {model.cfg.model_name} "
                           f"(e.g. {next(iter(model.hook_dict))!r}); check the SAE's hook_name")
    head = getattr(sae.cfg.metadata, "hook_head_index", None)
    if head is not None:
        raise SubjectError(f"SAE {label} reads one attention head (hook_head_index {head}) of {hook}: the kernels "
                           "splice whole hooks, so single-head SAEs are not supported; leave it out of the subject")
    width = hook_width(model, hook)
    if sae.cfg.d_in != width:
        raise SubjectError(f"SAE {label}: d_in {sae.cfg.d_in} != the width {width} of {hook} in this model; "
                           "the SAE was trained on another model")
    if hasattr(sae, "named_parameters"):
        for name, p in sae.named_parameters():
            if not torch.isfinite(p).all():
                raise SubjectError(f"SAE {label}: parameter {name} holds NaN or inf; the file is corrupt")
    ctx = getattr(sae.cfg.metadata, "context_size", None)
    if ctx is None or ctx < 2:
        raise SubjectError(f"SAE {label}: metadata.context_size is {ctx!r}; set it in the SAE's cfg.json")
    if hook_kind(hook) == "attn.hook_z" and getattr(sae, "hook_z_reshaping_mode", False):
        sae.turn_off_forward_pass_hook_z_reshaping()  # the kernels hand every SAE flat [.., heads * d_head]


def validate_subject(subject: Subject) -> None:
    """The whole subject is usable: non-empty tokens within n_ctx, finite weights, every SAE valid."""
    model = subject.model
    if subject.tokens.ndim != 2 or subject.tokens.numel() == 0:
        raise SubjectError(f"subject {subject.name}: empty evaluation set "
                           f"(tokens shape {tuple(subject.tokens.shape)}); give --n-seqs >= 1")
    if subject.seq_len > model.cfg.n_ctx:
        raise SubjectError(f"subject {subject.name}: sequences of {subject.seq_len} tokens exceed the "
                           f"model's n_ctx {model.cfg.n_ctx}; lower --seq-len")
    if not subject.saes:
        raise SubjectError(f"subject {subject.name}: no SAEs")
    _check_tokens(subject)
    _check_documents(subject)
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise SubjectError(f"subject {subject.name}: model parameter {name} holds NaN or inf")
    for family in (subject.saes, subject.full_context_saes):
        for sae_id, sae in family.items():
            validate_sae(sae, model, sae_id)
            named = hook_in_id(sae_id)
            if named is not None and named != sae_hook_name(sae):
                raise SubjectError(f"SAE {sae_id} reads {sae_hook_name(sae)}, but its id names {named}: the id "
                                   "and the SAE's cfg.metadata.hook_name must agree")
    for sae_id, full in subject.full_context_saes.items():
        if sae_id in subject.saes and sae_hook_name(full) != sae_hook_name(subject.saes[sae_id]):
            raise SubjectError(f"control SAE {sae_id} reads {sae_hook_name(full)}, the SAE it controls reads "
                               f"{sae_hook_name(subject.saes[sae_id])}")


def _check_documents(subject: Subject) -> None:
    """The bootstrap resamples documents: a document label per sequence, and two documents at least."""
    docs = subject.documents
    if docs is None:
        return
    n = int(subject.tokens.shape[0])
    if np.ndim(docs) != 1 or len(docs) != n:
        raise SubjectError(f"subject {subject.name}: {np.shape(docs)} document labels for {n} sequences; "
                           "give one per sequence (or None)")
    if n >= 2 and len(np.unique(docs)) < 2:
        raise SubjectError(f"subject {subject.name}: the first {n} sequences all come from one document, and "
                           "intervals resample documents; raise --n-seqs until a second document is included "
                           "(with --text-file: documents are separated by blank lines)")


def _check_tokens(subject: Subject) -> None:
    """Every claim reads non-BOS tokens inside the context, and the context claims beyond it: an evaluation
    set of BOS alone (a tokenizer that returned nothing) is refused here, before any test."""
    bos = subject.bos_token_id
    ctx = min(c for c in subject.context_sizes.values()) if subject.context_sizes else subject.seq_len
    real = subject.tokens != bos
    inside = int(real[:, 1:ctx].sum())
    if inside == 0:
        raise SubjectError(f"subject {subject.name}: every evaluation token in positions [1, {ctx}) is BOS "
                           f"(id {bos}); the tokenizer returned nothing: check the tokenizer and the text")
    if subject.seq_len > ctx and int(real[:, ctx:].sum()) == 0:
        raise SubjectError(f"subject {subject.name}: every evaluation token beyond position {ctx} is BOS "
                           f"(id {bos}); give longer documents or a lower --seq-len")
