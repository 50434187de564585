"""Artifact integrity: sha256 of every shipped file, checked before a subject is trusted."""

from __future__ import annotations

import hashlib
from pathlib import Path


class ArtifactError(RuntimeError):
    """A shipped artifact is missing or does not match its recorded hash."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: Path, exclude: set[str] = frozenset()) -> dict[str, str]:
    """sha256 of every regular file below `root`, skipping hidden paths and unfinished `.tmp` files."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if ".tmp" in p.name or rel.as_posix() in exclude:
            continue
        out[rel.as_posix()] = sha256_file(p)
    return out


def verify_tree(root: Path, expected: dict[str, str]) -> None:
    """Raise ArtifactError naming the first missing or corrupt file."""
    for rel, digest in sorted(expected.items()):
        p = root / rel
        if not p.exists():
            raise ArtifactError(f"missing artifact {p}: restore it with `git checkout -- {p}` "
                                "or rebuild with `python -m saeclaims.organism build`")
        got = sha256_file(p)
        if got != digest:
            raise ArtifactError(f"corrupt artifact {p}: sha256 {got[:12]}… != card's {digest[:12]}…; "
                                f"restore it with `git checkout -- {p}` or rebuild the organism")
