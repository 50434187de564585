"""Which hooks a subject has, read without loading it, so tests can be parametrised at collection.

Each source has a describer here that reads only small JSON files (cfg.json, card.json, the sae_lens
directory); the registry in `saeclaims.subjects` picks one by spec, as it does for loaders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..organism.layout import CARD_FILE
from .core import SubjectError, hook_in_id, hook_kind, hook_order
from .loading import _hub_errors, offline_unless_reachable, read_json
from .local import PREFIX as LOCAL_PREFIX
from .organism import organism_dir
from .release import parse_release_spec


@dataclass
class SubjectInfo:
    """A subject's SAE ids (in forward order of their hooks), the hook each reads, and the ids with a control."""

    spec: str
    sae_ids: list[str]
    full_context_sae_ids: list[str] = field(default_factory=list)
    hook_names: dict[str, str] = field(default_factory=dict)  # SAE id -> hook (absent: the id is the hook)
    # training context per SAE id where the cfg.json says it without loading (so a --seq-len with no position
    # beyond any context is refused before a model loads); empty when only loading tells
    context_sizes: dict[str, int] = field(default_factory=dict)
    # whether the subject's evaluation tokens come from text (--text-file); None: its source does not say
    reads_text: bool | None = None

    def hook_of(self, sae_id: str) -> str:
        return self.hook_names.get(sae_id, sae_id)

    def __post_init__(self) -> None:
        self.sae_ids = _ordered(self.sae_ids, self.hook_of)
        self.full_context_sae_ids = _ordered(self.full_context_sae_ids, self.hook_of)


def _scan_sae_dirs(root: Path) -> list[tuple[str, str, int]]:
    """(id = folder name, hook_name, context_size) of every SAE cfg.json below root; a cfg.json that is not
    JSON, or names no hook or context, is an error naming the file (not a JSON or type error without it)."""
    out = []
    for cfg_path in sorted(root.rglob("cfg.json")):
        cfg = read_json(cfg_path, "an SAE config (sae_lens's cfg.json)")
        meta = cfg.get("metadata") or {}
        hook, ctx = meta.get("hook_name", cfg.get("hook_name")), meta.get("context_size", cfg.get("context_size"))
        if not isinstance(hook, str) or not isinstance(ctx, int):
            raise SubjectError(f"{cfg_path}: the SAE config names no metadata.hook_name and integer "
                               f"metadata.context_size (hook_name {hook!r}, context_size {ctx!r}); restore the file "
                               "or save the SAE again with sae_lens's save_model")
        out.append((cfg_path.parent.name, hook, ctx))
    return out


def describe_organism(spec: str = "organism") -> SubjectInfo:
    """The organism's short-context SAEs are the release; the others are its full-context family."""
    root = organism_dir()
    card_path = root / CARD_FILE
    if not card_path.exists():
        raise SubjectError(f"organism card {card_path} is missing: restore fixtures/organism from git")
    card = read_json(card_path, "the organism's card")
    short = card["spec"]["model"]["n_ctx"] // card["spec"]["context_ratio"]
    found = _scan_sae_dirs(root / "saes")
    return SubjectInfo(spec, [h for _, h, c in found if c == short], [h for _, h, c in found if c != short],
                       context_sizes={h: c for _, h, c in found if c == short}, reads_text=False)


def describe_local(spec: str) -> SubjectInfo:
    """SAEs below DIR, keyed by folder name; those at subject.json's full_context_size form the control
    family, keyed (as `load_local` keys them) by the id of the SAE they control."""
    root = Path(spec.removeprefix(LOCAL_PREFIX))
    if not root.is_dir():
        raise SubjectError(f"local subject folder {root} does not exist")
    meta_path = root / "subject.json"
    full_ctx = read_json(meta_path, "subject.json").get("full_context_size") if meta_path.exists() else None
    found = _scan_sae_dirs(root)
    short = [(i, h) for i, h, c in found if not (full_ctx and c == full_ctx)]
    names = dict(short)
    if len(names) < len(short):
        dup = sorted({i for i, _ in short if [j for j, _ in short].count(i) > 1})
        raise SubjectError(f"two SAEs below {root} have the id {dup[0]!r} (the folder name); rename one folder")
    full = []
    for i, h, c in found:
        if full_ctx and c == full_ctx:
            same = [j for j, hj in short if hj == h]
            full.append(i if i in names else same[0] if len(same) == 1 else i)
    return SubjectInfo(spec, list(names), [f for f in full if f in names], hook_names=names,
                       context_sizes={i: c for i, _, c in found if not (full_ctx and c == full_ctx)},
                       reads_text=not (root / "eval_tokens.npy").exists())


def describe_release(spec: str) -> SubjectInfo:
    """A release's SAE ids from sae_lens's directory and the hook each reads: named in the id for most
    releases; otherwise read from the SAE's config (a small download, or the hub cache)."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); only where SAEs are loaded
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, ids = parse_release_spec(spec)
    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise SubjectError(f"unknown subject or sae_lens release {release!r}")
    ids = ids or list(directory[release].saes_map)
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SubjectError(f"SAE id {dup[0]!r} is named twice in --sae-subject {spec}; name each SAE once")
    names = {}
    for i in ids:
        if i not in directory[release].saes_map:
            raise SubjectError(f"release {release} has no SAE id {i!r}; ids: {list(directory[release].saes_map)[:6]}…")
        names[i] = hook_in_id(i) or _hook_from_config(release, i)
    return SubjectInfo(spec, ids, hook_names=names, reads_text=True)


def _hook_from_config(release: str, sae_id: str) -> str:
    # lazy: sae_lens imports transformer_lens and datasets (seconds); only where SAEs are loaded
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface


    with _hub_errors(f"the config of SAE {release}/{sae_id}"), offline_unless_reachable():
        cfg = load_sae_config_from_huggingface(release, sae_id)
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")
    if not hook:
        raise SubjectError(f"SAE {release}/{sae_id}: its config names no hook_name")
    return str(hook)


def _ordered(ids: Iterable[str | None], hook_of=lambda i: i) -> list[str]:
    """Unique ids in forward order of their hooks; an unsupported hook is an error naming it."""
    out = {i for i in ids if i}
    for i in out:
        hook_kind(hook_of(i))
    return sorted(out, key=lambda i: (*hook_order(hook_of(i)), i))
