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


def git_root(path: Path) -> Path | None:
    """The work tree `path` lies in (a folder above it holding .git), else None."""
    for folder in Path(path).resolve().parents:
        if (folder / ".git").exists():
            return folder
    return None


def restore_advice(path: Path) -> str:
    """How to get a shipped file back: `git checkout` only where the file is in a git checkout (a wheel's data
    package or a copy is not), and for an SAE changed on purpose, the way to judge it instead."""
    repo = git_root(path)
    if repo is not None:
        restore = f"restore it with `git -C {repo} checkout -- {Path(path).resolve().relative_to(repo)}`"
    else:
        restore = (f"{Path(path).parent} is in no git checkout: restore it from a fresh copy of the folder "
                   "(reinstall saeclaims, or copy fixtures/organism from the repository)")
    return (f"{restore} or rebuild with `python -m saeclaims.organism build`; to judge a changed SAE on purpose, "
            "copy the folder and run it as --sae-subject local:DIR (README, 'Regression checks')")


def verify_tree(root: Path, expected: dict[str, str]) -> None:
    """Raise ArtifactError naming the first missing or corrupt file."""
    for rel, digest in sorted(expected.items()):
        p = root / rel
        if not p.exists():
            raise ArtifactError(f"missing artifact {p}: {restore_advice(p)}")
        got = sha256_file(p)
        if got != digest:
            raise ArtifactError(f"corrupt artifact {p}: sha256 {got[:12]}… != card's {digest[:12]}…; "
                                f"{restore_advice(p)}")
