"""sae_lens releases as subjects: `<release>[:id,id,...]`, model and SAEs from the hub (or its cache)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..organism.layout import stream_window_documents
from .core import Subject, SubjectError, package_versions
from .loading import _hub_errors, load_hooked_model, offline_unless_reachable, tokens_from_texts
from .validation import validate_subject


def parse_release_spec(spec: str) -> tuple[str, list[str] | None]:
    """`release:id,id` -> (release, [ids]); no ids (or an empty list) means every SAE of the release."""
    release, _, ids = spec.partition(":")
    return release, ([i for i in ids.split(",") if i] or None) if ids else None


def is_release(spec: str) -> bool:
    """Whether sae_lens's directory knows the spec's release; the registry's test for the fallback source."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); only where SAEs are loaded
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return parse_release_spec(spec)[0] in get_pretrained_saes_directory()


def load_release(spec: str, device: str = "cpu", n_seqs: int = 64, seq_len: int = 1024,
                 text_file: Path | None = None, dataset: str = "Skylion007/openwebtext") -> Subject:
    """The release's model and SAEs, evaluated on `text_file` or the first documents of `dataset`."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); only where SAEs are loaded
    from sae_lens import SAE

    # lazy: sae_lens imports transformer_lens and datasets (seconds); only where SAEs are loaded
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, ids = parse_release_spec(spec)
    directory = get_pretrained_saes_directory()
    if release not in directory:
        near = [r for r in directory if release.split("-")[0] in r][:5]
        raise SubjectError(f"unknown subject or sae_lens release {release!r}; try 'organism', "
                           f"'local:DIR' or a release such as {near or ['gpt2-small-res-jb']}")
    lookup = directory[release]
    ids = ids or list(lookup.saes_map)
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise SubjectError(f"SAE id {dup[0]!r} is named twice in --sae-subject {spec}; name each SAE once")
    unknown = [i for i in ids if i not in lookup.saes_map]
    if unknown:
        raise SubjectError(f"release {release} has no SAE id {unknown[0]!r}; ids: {list(lookup.saes_map)[:6]}…")
    kwargs = dict((lookup.config_overrides or {}).get("model_from_pretrained_kwargs", {}))
    saes = {}
    for sae_id in ids:  # the SAEs first: a missing one fails before the (much larger) model is loaded
        with _hub_errors(f"SAE {release}/{sae_id}"), offline_unless_reachable():
            sae = SAE.from_pretrained(release, sae_id, device=device)
        saes[sae_id] = sae  # keyed by SAE id: several SAEs may read one hook
    model = load_hooked_model(lookup.model, device=device, **kwargs)
    tokens = _eval_tokens(model, n_seqs, seq_len, text_file, dataset)
    subject = Subject(
        name=spec, model=model, saes=saes, tokens=tokens.to(device),
        documents=stream_window_documents(tokens.numpy(), int(tokens[0, 0])),
        context_sizes={h: s.cfg.metadata.context_size for h, s in saes.items()},
        provenance={"model": lookup.model, "release": release, "repo_id": lookup.repo_id,
                    "sae_ids": ids, "model_from_pretrained_kwargs": kwargs,
                    "versions": package_versions()},
    )
    validate_subject(subject)
    return subject


def _eval_tokens(model, n_seqs: int, seq_len: int, text_file: Path | None, dataset: str) -> torch.Tensor:
    """Evaluation windows for a model without a stored set: from a text file, else streamed from the hub."""
    tok = model.tokenizer
    if tok is None:
        raise SubjectError("the model has no tokenizer; give evaluation tokens as eval_tokens.npy")
    bos = tok.bos_token_id
    if text_file is not None:
        if not Path(text_file).exists():
            raise SubjectError(f"evaluation text file {text_file} does not exist")
        try:
            texts = Path(text_file).read_text(encoding="utf-8").split("\n\n")
        except UnicodeDecodeError as exc:
            raise SubjectError(f"evaluation text file {text_file} is not UTF-8 text ({exc.reason} at byte "
                               f"{exc.start}); give a plain-text file, documents separated by blank lines") from None
    else:
        with _hub_errors(f"dataset {dataset}"), offline_unless_reachable():
            from datasets import load_dataset  # lazy: only a release subject without --text-file reads a hub dataset

            texts = (row["text"] for row in load_dataset(dataset, split="train", streaming=True))
    return tokens_from_texts(texts, tok, n_seqs, seq_len, bos)
