"""What a test subject is: the model, its SAEs (keyed by SAE id) and the tokens they are judged on.

Every other module of the package builds or inspects a `Subject`; nothing here touches the disk or
the hub, so the claims can import it cheaply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import torch

# Every hook sae_lens SAEs are trained on, in forward order within a block.
HOOK_KINDS = ("hook_resid_pre", "attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
RESIDUAL_KINDS = frozenset({"hook_resid_pre", "hook_resid_mid", "hook_resid_post"})
HOOK = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(k) for k in HOOK_KINDS) + r")$")
RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")
_HOOK_IN_ID = re.compile(r"blocks\.(\d+)\.(attn\.hook_z|hook_z|hook_resid_pre|hook_resid_mid|hook_resid_post|"
                         r"hook_attn_out|hook_mlp_out)")


class SubjectError(ValueError):
    """A subject cannot be loaded or is inconsistent; the message says what and how to fix it."""


class HubUnavailableError(SubjectError):
    """The model hub cannot be reached and the files are not cached."""


@dataclass
class Subject:
    """`saes` is keyed by SAE id: the release's id, or the folder name of a local SAE; for most releases the
    id is the hook name. Several SAEs may read one hook. `full_context_saes` (the control family) is keyed by
    the id of the SAE it controls. Every row of the report, ledger key and test id is an SAE id."""

    name: str
    model: Any  # transformer_lens.HookedTransformer
    saes: dict[str, Any]  # SAE id -> sae_lens SAE (or an object with encode/decode and cfg.metadata)
    tokens: torch.Tensor  # [n_seqs, seq_len], BOS first
    context_sizes: dict[str, int]  # SAE id -> training context
    full_context_saes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # the source document of each sequence (labels, [n_seqs]); None: unknown, and each sequence is its own
    # cluster. The bootstrap resamples documents: windows of one text are not independent evidence
    documents: np.ndarray | None = None
    # windows that are not the evaluation set ([n, seq_len], BOS first), for run-time estimates such as the
    # residual's mean by position (position_means.py); None where the subject ships none
    held_out_tokens: torch.Tensor | None = None

    @property
    def sae_ids(self) -> list[str]:
        """SAE ids in forward order of their hooks (then by id)."""
        return sorted(self.saes, key=lambda i: (*hook_order(self.hook_of(i)), i))

    def hook_of(self, sae_id: str) -> str:
        """The hook point the SAE reads (sae_lens's cfg.metadata.hook_name)."""
        sae = self.saes[sae_id] if sae_id in self.saes else self.full_context_saes.get(sae_id)
        if sae is None:
            raise SubjectError(f"subject {self.name} has no SAE {sae_id!r}; SAE ids: {', '.join(self.saes)}")
        return sae_hook_name(sae)

    def ids_at(self, hook: str) -> list[str]:
        """The SAE ids that read `hook`."""
        return [i for i in self.sae_ids if self.hook_of(i) == hook]

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
        if self.held_out_tokens is not None:
            self.held_out_tokens = self.held_out_tokens.to(device)
        return self


def sae_hook_name(sae: Any) -> str:
    """The hook an SAE (or an object following its protocol) reads."""
    meta = getattr(getattr(sae, "cfg", None), "metadata", None)
    hook = getattr(meta, "hook_name", None)
    if not hook:
        raise SubjectError(f"SAE {type(sae).__name__} names no hook: it needs cfg.metadata.hook_name "
                           "(see README, 'SAEs that are not sae_lens objects')")
    return str(hook)


def sae_architecture(sae: Any) -> str:
    """sae_lens's architecture name (cfg.architecture()), or the class name of an object without one."""
    cfg = getattr(sae, "cfg", None)
    return str(cfg.architecture()) if hasattr(cfg, "architecture") else type(sae).__name__


def hook_kind(hook: str) -> str:
    """`hook_resid_pre`, `attn.hook_z`, `hook_attn_out`, `hook_resid_mid`, `hook_mlp_out` or `hook_resid_post`."""
    m = HOOK.match(hook)
    if not m:
        raise SubjectError(f"hook {hook!r} is not one sae_lens SAEs are trained on; supported: "
                           + ", ".join(f"blocks.L.{k}" for k in HOOK_KINDS))
    return m.group(2)


def is_residual(hook: str) -> bool:
    """Residual-stream hooks, where W_pos[p] is a summand of the activation (on learned-position models)."""
    return hook_kind(hook) in RESIDUAL_KINDS


def hook_order(hook: str) -> tuple[int, int]:
    """Position of a hook in the forward pass: (layer, rank of the hook within the block)."""
    kind = hook_kind(hook)
    return int(HOOK.match(hook).group(1)), HOOK_KINDS.index(kind)


def start_layer(hook: str) -> int:
    """The first block a spliced run executes (TransformerLens's `start_at_layer`): the block the residual
    feeds for resid_pre/resid_post; the hook's own block for hooks inside a block, whose residual input is
    cached and whose hooked activation is replaced during the run."""
    layer, rank = hook_order(hook)
    return layer + 1 if hook_kind(hook) == "hook_resid_post" else layer


def replaced_inside_block(hook: str) -> bool:
    """Whether splicing at the hook replaces an activation inside the block (a forward hook), not its input."""
    return hook_kind(hook) not in ("hook_resid_pre", "hook_resid_post")


def hook_in_id(sae_id: str) -> str | None:
    """The hook a release's SAE id names (e.g. `blocks.8.hook_resid_pre_768`, `blocks.0.hook_z`), so hooks
    are known at collection without downloading; loading checks it against the SAE's own cfg."""
    m = _HOOK_IN_ID.search(sae_id)
    if not m:
        return None
    kind = "attn.hook_z" if m.group(2) in ("hook_z", "attn.hook_z") else m.group(2)
    return f"blocks.{m.group(1)}.{kind}"


def package_versions() -> dict[str, str]:
    """Versions recorded in each subject's provenance, so a result can be traced to its software."""
    out = {}
    for pkg in ("saeclaims", "sae-lens", "transformer-lens", "torch", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
