"""What a test subject is: the model, its residual-stream SAEs and the tokens they are judged on.

Every other module of the package builds or inspects a `Subject`; nothing here touches the disk or
the hub, so the claims can import it cheaply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch

RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


class SubjectError(ValueError):
    """A subject cannot be loaded or is inconsistent; the message says what and how to fix it."""


class HubUnavailableError(SubjectError):
    """The model hub cannot be reached and the files are not cached."""


@dataclass
class Subject:
    name: str
    model: Any  # transformer_lens.HookedTransformer
    saes: dict[str, Any]  # hook name -> sae_lens SAE (the release under test)
    tokens: torch.Tensor  # [n_seqs, seq_len], BOS first
    context_sizes: dict[str, int]
    full_context_saes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return sorted(self.saes, key=hook_order)

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def bos_token_id(self) -> int:
        tok = getattr(self.model, "tokenizer", None)
        if tok is not None and tok.bos_token_id is not None:
            return int(tok.bos_token_id)
        return int(self.tokens[0, 0])

    @property
    def has_learned_positions(self) -> bool:
        return self.model.cfg.positional_embedding_type == "standard"

    def to(self, device: str) -> Subject:
        self.model.to(device)
        for sae in [*self.saes.values(), *self.full_context_saes.values()]:
            sae.to(device)
        self.tokens = self.tokens.to(device)
        return self


def hook_order(hook: str) -> tuple[int, int]:
    """Position of a residual hook in the forward pass: resid_pre L < resid_post L."""
    m = RESID_HOOK.match(hook)
    if not m:
        raise SubjectError(
            f"hook {hook!r} is not a residual-stream hook; supported: blocks.L.hook_resid_pre / _post"
        )
    return int(m.group(1)), 0 if m.group(2) == "pre" else 1


def start_layer(hook: str) -> int:
    """The block a residual hook feeds: TransformerLens's `start_at_layer` for splicing there."""
    layer, post = hook_order(hook)
    return layer + post


def package_versions() -> dict[str, str]:
    """Versions recorded in each subject's provenance, so a result can be traced to its software."""
    out = {}
    for pkg in ("saeclaims", "sae-lens", "transformer-lens", "torch", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
