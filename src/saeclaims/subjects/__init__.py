"""Test subjects: a HookedTransformer, its residual-stream SAEs and the tokens they are judged on.

Four sources share one loading path: the shipped organism (offline, default), a sae_lens release
from the model hub, `local:<dir>` (SAEs saved by sae_lens plus a TransformerLens name or a local HF
checkpoint) and `smollm2` (the project's SAEs on SmolLM2-135M). Everything is validated on load,
because sae_lens's `add_sae` only logs a hook it cannot find and a silently skipped SAE would make
every claim test vacuous.

Modules: `core` (the Subject type), `validation`, `loading` (shared model/SAE/hub/token code), one
module per source (`organism`, `release`, `local`, `smollm2`), `describe` (hooks without loading) and
`registry` (spec -> source). Patch a function in the module that defines it, e.g.
`saeclaims.subjects.loading.hub_reachable`: the names below are re-exports.
"""

from .core import RESID_HOOK, HubUnavailableError, Subject, SubjectError, hook_order, package_versions, start_layer
from .describe import SubjectInfo
from .loading import (
    _hub_errors,
    _select_tokens,
    hub_reachable,
    load_hooked_model,
    load_sae_dir,
    offline_unless_reachable,
    tokens_from_texts,
)
from .local import load_local
from .organism import load_organism, organism_dir
from .registry import (
    SubjectSource,
    describe_subject,
    find_source,
    load_subject,
    register_source,
    sources,
    unregister_source,
)
from .release import _eval_tokens, load_release, parse_release_spec
from .validation import validate_sae, validate_subject

__all__ = [
    "RESID_HOOK",
    "HubUnavailableError",
    "Subject",
    "SubjectError",
    "SubjectInfo",
    "SubjectSource",
    "_eval_tokens",
    "_hub_errors",
    "_select_tokens",
    "describe_subject",
    "find_source",
    "hook_order",
    "hub_reachable",
    "load_hooked_model",
    "load_local",
    "load_organism",
    "load_release",
    "load_sae_dir",
    "load_subject",
    "offline_unless_reachable",
    "organism_dir",
    "package_versions",
    "parse_release_spec",
    "register_source",
    "sources",
    "start_layer",
    "tokens_from_texts",
    "unregister_source",
    "validate_sae",
    "validate_subject",
]
