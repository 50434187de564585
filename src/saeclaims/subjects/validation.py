"""Checks every loaded subject passes before a claim sees it.

sae_lens's `add_sae` only logs a hook it cannot find, and a silently skipped SAE would make every
claim test vacuous; so a mismatch is an error here, with the fix in the message.
"""

from __future__ import annotations

from typing import Any

import torch

from .core import Subject, SubjectError, hook_order


def validate_sae(sae: Any, model: Any, label: str) -> None:
    """The SAE reads a residual hook of this model, has the model's width, finite weights and a context size."""
    arch = sae.cfg.architecture() if hasattr(sae.cfg, "architecture") else type(sae).__name__
    if "transcoder" in str(arch).lower() or getattr(sae.cfg, "d_out", None) is not None:
        raise SubjectError(f"SAE {label} is a transcoder ({arch}): its output is not a reconstruction of its "
                           "input, so splicing it in place of the activation tests none of these claims; leave "
                           "it out of the subject")
    hook = sae.cfg.metadata.hook_name
    if hook not in model.hook_dict:
        raise SubjectError(f"SAE {label}: hook {hook!r} is not in model {model.cfg.model_name} "
                           f"(e.g. {next(iter(model.hook_dict))!r}); check the SAE's hook_name")
    hook_order(hook)
    if sae.cfg.d_in != model.cfg.d_model:
        raise SubjectError(f"SAE {label}: d_in {sae.cfg.d_in} != model d_model {model.cfg.d_model}; "
                           "the SAE was trained on another model")
    for name, p in sae.named_parameters():
        if not torch.isfinite(p).all():
            raise SubjectError(f"SAE {label}: parameter {name} holds NaN or inf; the file is corrupt")
    ctx = sae.cfg.metadata.context_size
    if ctx is None or ctx < 2:
        raise SubjectError(f"SAE {label}: metadata.context_size is {ctx!r}; set it in the SAE's cfg.json")


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
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise SubjectError(f"subject {subject.name}: model parameter {name} holds NaN or inf")
    for family in (subject.saes, subject.full_context_saes):
        for hook, sae in family.items():
            validate_sae(sae, model, hook)
            if sae.cfg.metadata.hook_name != hook:
                raise SubjectError(f"SAE registered at {hook} reads {sae.cfg.metadata.hook_name}")


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
