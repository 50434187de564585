"""What the report records about where a run's numbers come from: each measured subject's record (model,
SAE ids, contexts, the sha256 of its tokens and of every SAE's weights) and the run's peak memory."""

from __future__ import annotations

import hashlib
import resource

import torch

from .store import SubjectRecord
from .subjects import Subject


def subject_record(name: str, subject: Subject, device: str) -> SubjectRecord:
    """The report's record of a loaded subject (its provenance's model, release and SAE ids lifted out)."""
    prov = dict(subject.provenance)
    return SubjectRecord(
        name=name, model=str(prov.pop("model", "")), release=str(prov.pop("release", "")),
        sae_ids=list(prov.pop("sae_ids", [])), context_sizes=dict(subject.context_sizes),
        n_ctx=int(subject.model.cfg.n_ctx), n_seqs=int(subject.tokens.shape[0]), seq_len=subject.seq_len,
        full_context_sae_ids=list(prov.pop("full_context_sae_ids", [])), device=device,
        tokens_sha256=tensor_sha256(subject.tokens),
        sae_sha256={h: module_sha256(sae) for h, sae in {**subject.full_context_saes, **subject.saes}.items()},
        provenance=prov)


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def module_sha256(module) -> str:
    """sha256 over an SAE's parameters in name order: the same weights give the same digest wherever loaded."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def peak_memory_mib() -> dict[str, float]:
    """This process's peak resident memory (and the CUDA allocator's peak, on a GPU), in MiB."""
    out = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.max_memory_allocated() / 2**20
    return out
