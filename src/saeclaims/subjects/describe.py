"""Which hooks a subject has, read without loading it, so tests can be parametrised at collection.

Each source has a describer here that reads only small JSON files (cfg.json, card.json, the sae_lens
directory); the registry in `saeclaims.subjects` picks one by spec, as it does for loaders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..organism.layout import CARD_FILE
from .core import RESID_HOOK, SubjectError, hook_order
from .local import PREFIX as LOCAL_PREFIX
from .organism import organism_dir
from .release import parse_release_spec


@dataclass
class SubjectInfo:
    spec: str
    hooks: list[str]
    full_context_hooks: list[str] = field(default_factory=list)


def _scan_sae_dirs(root: Path) -> list[tuple[str, int]]:
    """(hook_name, context_size) of every SAE cfg.json below root."""
    out = []
    for cfg_path in sorted(root.rglob("cfg.json")):
        meta = json.loads(cfg_path.read_text()).get("metadata", {})
        out.append((meta.get("hook_name"), meta.get("context_size")))
    return out


def describe_organism(spec: str = "organism") -> SubjectInfo:
    """The organism's short-context SAEs are the release; the others are its full-context family."""
    root = organism_dir()
    card_path = root / CARD_FILE
    if not card_path.exists():
        raise SubjectError(f"organism card {card_path} is missing: restore fixtures/organism from git")
    card = json.loads(card_path.read_text())
    short = card["spec"]["model"]["n_ctx"] // card["spec"]["context_ratio"]
    found = _scan_sae_dirs(root / "saes")
    return SubjectInfo(spec, _ordered(h for h, c in found if c == short),
                       _ordered(h for h, c in found if c != short))


def describe_local(spec: str) -> SubjectInfo:
    """SAEs below DIR; those at subject.json's full_context_size form the full-context family."""
    root = Path(spec.removeprefix(LOCAL_PREFIX))
    if not root.is_dir():
        raise SubjectError(f"local subject folder {root} does not exist")
    meta_path = root / "subject.json"
    full_ctx = json.loads(meta_path.read_text()).get("full_context_size") if meta_path.exists() else None
    found = _scan_sae_dirs(root)
    return SubjectInfo(spec, _ordered(h for h, c in found if not (full_ctx and c == full_ctx)),
                       _ordered(h for h, c in found if full_ctx and c == full_ctx))


def describe_release(spec: str) -> SubjectInfo:
    """A release's hooks from sae_lens's directory, without downloading anything."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, ids = parse_release_spec(spec)
    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise SubjectError(f"unknown subject or sae_lens release {release!r}")
    ids = ids or list(directory[release].saes_map)
    # Releases in this family name each SAE by its hook; others resolve at load time.
    return SubjectInfo(spec, _ordered(i for i in ids if RESID_HOOK.match(i)))


def _ordered(hooks: Iterable[str | None]) -> list[str]:
    return sorted({h for h in hooks if h and RESID_HOOK.match(h)}, key=hook_order)


def hooks_in_scope(info: SubjectInfo, scope: str) -> list[str]:
    """The hooks a claim with this scope is parametrised over."""
    pre = [h for h in info.hooks if h.endswith("hook_resid_pre")]
    return {
        "all": info.hooks,
        "resid_pre": pre,
        "resid_pre0": [h for h in pre if hook_order(h)[0] == 0],
        "later_resid_pre": [h for h in pre if hook_order(h)[0] >= 1],
        "full_context": info.full_context_hooks,
        "subject": [],
    }[scope]
