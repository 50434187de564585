"""Subject specs -> sources: which loader and describer handle `organism`, `local:DIR`, a release.

One table instead of `if spec == ... elif spec.startswith(...)` in each caller, so a new kind of
subject is one `register_source` call, and an unknown spec gets one line listing every valid form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import describe as _describe
from . import local as _local
from . import organism as _organism
from . import release as _release
from . import smollm2 as _smollm2
from .core import Subject, SubjectError
from .describe import SubjectInfo


class Loader(Protocol):
    def __call__(self, spec: str, device: str, n_seqs: int | None, seq_len: int | None,
                 text_file: Path | None) -> Subject: ...


@dataclass(frozen=True)
class SubjectSource:
    """One way of naming a subject: the specs it claims, how to load and describe them, one help line.

    Set exactly one of `name` (the spec itself), `prefix` (specs starting with it) or `matcher`
    (a predicate, tried after every name and prefix: for catch-alls such as sae_lens releases).
    """

    form: str  # how the spec is written, e.g. "local:DIR"; also the key register_source replaces by
    load: Loader
    describe: Callable[[str], SubjectInfo]
    help: str
    name: str | None = None
    prefix: str | None = None
    matcher: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.name, self.prefix, self.matcher)) != 1:
            raise ValueError(f"subject source {self.form!r}: set exactly one of name, prefix, matcher")
        if "\n" in self.help or "\n" in self.form:
            raise ValueError(f"subject source {self.form!r}: form and help must be one line each")

    def matches(self, spec: str) -> bool:
        if self.name is not None:
            return spec == self.name
        if self.prefix is not None:
            return spec.startswith(self.prefix)
        assert self.matcher is not None
        return self.matcher(spec)


_SOURCES: list[SubjectSource] = []


def register_source(source: SubjectSource) -> SubjectSource:
    """Add a source (replacing one of the same form); names and prefixes win over matchers."""
    unregister_source(source.form)
    _SOURCES.append(source)
    return source


def unregister_source(form: str) -> SubjectSource | None:
    """Remove the source registered for `form`; returns it, or None if there was none."""
    for i, s in enumerate(_SOURCES):
        if s.form == form:
            return _SOURCES.pop(i)
    return None


def sources() -> list[SubjectSource]:
    """Registered sources in the order specs are tried: names and prefixes, then matchers."""
    return sorted(_SOURCES, key=lambda s: s.matcher is not None)


def find_source(spec: str) -> SubjectSource:
    """The source that handles `spec`, or a one-line SubjectError listing the valid forms."""
    for source in sources():
        if source.matches(spec):
            return source
    forms = " | ".join(f"{s.form} ({s.help})" for s in sources())
    raise SubjectError(f"unknown subject or sae_lens release {spec!r}; valid forms: {forms}")


def load_subject(spec: str, device: str = "cpu", n_seqs: int | None = None, seq_len: int | None = None,
                 text_file: Path | None = None) -> Subject:
    """Dispatch on the subject spec: `organism`, `local:<dir>`, `<release>[:id,id,...]` or a registered form."""
    return find_source(spec).load(spec, device, n_seqs, seq_len, text_file)


def describe_subject(spec: str) -> SubjectInfo:
    """A subject's hooks without loading it, dispatched like `load_subject`."""
    return find_source(spec).describe(spec)


# The built-in sources look their loaders up at call time, so monkeypatching
# `saeclaims.subjects.organism.load_organism` (etc.) reaches load_subject too.


def _load_organism(spec: str, device: str, n_seqs: int | None, seq_len: int | None,
                   text_file: Path | None) -> Subject:
    return _organism.load_organism(device=device, n_seqs=n_seqs, seq_len=seq_len)


def _load_local(spec: str, device: str, n_seqs: int | None, seq_len: int | None,
                text_file: Path | None) -> Subject:
    return _local.load_local(spec[len(_local.PREFIX):], device, n_seqs, seq_len, text_file)


def _load_release(spec: str, device: str, n_seqs: int | None, seq_len: int | None,
                  text_file: Path | None) -> Subject:
    return _release.load_release(spec, device, n_seqs or 64, seq_len or 1024, text_file)


def _load_smollm2(spec: str, device: str, n_seqs: int | None, seq_len: int | None,
                  text_file: Path | None) -> Subject:
    return _smollm2.load_smollm2_subject(device, n_seqs, seq_len)


register_source(SubjectSource(
    form="organism", name="organism", load=_load_organism, describe=lambda s: _describe.describe_organism(s),
    help="the shipped organism, offline"))
register_source(SubjectSource(
    form="smollm2", name="smollm2", load=_load_smollm2, describe=lambda s: _smollm2.describe_smollm2(s),
    help=f"SmolLM2-135M (Q4_1) with SAEs trained here; needs {_smollm2.INSTALL_HINT}"))
register_source(SubjectSource(
    form="local:DIR", prefix=_local.PREFIX, load=_load_local, describe=lambda s: _describe.describe_local(s),
    help="sae_lens SAE folders below DIR, model named in DIR/subject.json"))
register_source(SubjectSource(
    form="RELEASE[:id,id]", matcher=lambda s: _release.is_release(s), load=_load_release,
    describe=lambda s: _describe.describe_release(s),
    help="a sae_lens release name like gpt2-small-res-jb[:id,id]"))
