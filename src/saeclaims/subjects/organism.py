"""The shipped organism as a subject: offline, verified against its card, the default for every test.

Only `saeclaims.organism.layout` is imported from the organism package: loading must not pull in the
builder's training code (sae_lens's trainer, tokenizer training), which is slow to import.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from ..artifacts import verify_tree
from ..organism.layout import (
    BOS_TOKEN,
    CARD_FILE,
    EVAL_DOCUMENTS,
    EVAL_TOKENS,
    HELD_OUT_TOKENS,
    MODEL_CONFIG,
    MODEL_FILE,
    TOKENIZER_FILE,
)
from .core import Subject, SubjectError, hook_order, package_versions
from .loading import (
    _held_out_tokens,
    _select_documents,
    _select_tokens,
    load_sae_dir,
    load_tl_native,
    tokenizer_from_file,
)
from .validation import validate_sae, validate_subject

ORGANISM_PACKAGE = "saeclaims_organism"  # data-only package: fixtures/organism, shipped in the wheel
_REPO_ORGANISM = Path(__file__).resolve().parents[3] / "fixtures" / "organism"


def organism_dir() -> Path:
    """Where the organism lives: $SAECLAIMS_ORGANISM, the installed wheel's copy, or the checkout's fixtures."""
    env = os.environ.get("SAECLAIMS_ORGANISM")
    if env:
        return Path(env)
    packaged = _packaged_organism()
    if packaged is not None:
        return packaged
    if _REPO_ORGANISM.exists():
        return _REPO_ORGANISM
    raise SubjectError("the organism is not installed: `pip install saeclaims` (the wheel ships it), set "
                       "SAECLAIMS_ORGANISM to a copy of fixtures/organism, or rebuild it with "
                       "`python -m saeclaims.organism build`")


def _packaged_organism() -> Path | None:
    """The `saeclaims_organism` package folder holding a card, if installed.

    It has no __init__.py (the folder must hold only the card's files), so it is a namespace package
    and `importlib.resources.files` would give a MultiplexedPath; its spec's locations are plain paths.
    """
    try:
        spec = importlib.util.find_spec(ORGANISM_PACKAGE)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / CARD_FILE).is_file():
            return Path(location)
    return None


def load_organism(root: Path | None = None, device: str = "cpu", n_seqs: int | None = None,
                  seq_len: int | None = None, verify: bool = True) -> Subject:
    """The organism at `root` (default `organism_dir()`), its files checked against the card's sha256."""
    root = organism_dir() if root is None else Path(root)
    card_path = root / CARD_FILE
    if not card_path.exists():
        raise SubjectError(f"organism card {card_path} is missing: restore fixtures/organism from git "
                           "or build it with `python -m saeclaims.organism build`")
    card = json.loads(card_path.read_text())
    if verify:
        verify_tree(root, card["sha256"])
    cfg = json.loads((root / MODEL_CONFIG).read_text())
    model = load_tl_native(root)  # the same loader `local:DIR` uses for a native model folder
    model.tokenizer = tokenizer_from_file(root / TOKENIZER_FILE, BOS_TOKEN)
    model.cfg.tokenizer_prepends_bos = False
    short = card["spec"]["model"]["n_ctx"] // card["spec"]["context_ratio"]
    saes, full = {}, {}
    for d in sorted((root / "saes").glob("ctx*/*")):
        if not (d / "cfg.json").exists():
            continue
        sae = load_sae_dir(d)
        family = "release" if sae.cfg.metadata.context_size == short else "control (full context)"
        validate_sae(sae, model, f"{d.relative_to(root)}/sae_weights.safetensors (organism, {family} family)")
        (saes if family == "release" else full)[sae.cfg.metadata.hook_name] = sae
    tokens = _select_tokens(np.load(root / EVAL_TOKENS), n_seqs, seq_len, "organism")
    subject = Subject(
        name="organism", model=model, saes=saes, tokens=tokens,
        documents=_select_documents(root / EVAL_DOCUMENTS, len(tokens), "organism"),
        held_out_tokens=_held_out_tokens(root / HELD_OUT_TOKENS, tokens.shape[1]),
        context_sizes={h: s.cfg.metadata.context_size for h, s in saes.items()},
        full_context_saes=full,
        provenance={"model": cfg["model_name"], "release": "saeclaims-organism (fixtures/organism)",
                    "sae_ids": sorted(saes, key=hook_order), "full_context_sae_ids": sorted(full, key=hook_order),
                    "card_seed": card["seed"], "model_sha256": card["sha256"][MODEL_FILE],
                    "versions": package_versions()},
    )
    validate_subject(subject)
    return subject.to(device)

