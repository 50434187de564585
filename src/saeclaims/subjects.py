"""Test subjects: a HookedTransformer, its residual-stream SAEs and the tokens they are judged on.

Three sources share one loading path: the shipped organism (offline, default), a sae_lens release
from the model hub, and `local:<dir>` (SAEs saved by sae_lens plus a TransformerLens name or a local
HF checkpoint). Everything is validated on load, because sae_lens's `add_sae` only logs a hook it
cannot find and a silently skipped SAE would make every claim test vacuous.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifacts import verify_tree

RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


class SubjectError(ValueError):
    """A subject cannot be loaded or is inconsistent; the message says what and how to fix it."""


class HubUnavailableError(SubjectError):
    """The model hub cannot be reached and the files are not cached."""


@dataclass
class Subject:
    name: str
    model: Any  # transformer_lens.HookedTransformer
    saes: dict[str, Any]  # hook name -> sae_lens SAE (the release under test)
    tokens: torch.Tensor  # [n_seqs, seq_len], BOS first
    context_sizes: dict[str, int]
    full_context_saes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return sorted(self.saes, key=hook_order)

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
        return self


def hook_order(hook: str) -> tuple[int, int]:
    """Position of a residual hook in the forward pass: resid_pre L < resid_post L."""
    m = RESID_HOOK.match(hook)
    if not m:
        raise SubjectError(
            f"hook {hook!r} is not a residual-stream hook; supported: blocks.L.hook_resid_pre / _post"
        )
    return int(m.group(1)), 0 if m.group(2) == "pre" else 1


def start_layer(hook: str) -> int:
    """The block a residual hook feeds: TransformerLens's `start_at_layer` for splicing there."""
    layer, post = hook_order(hook)
    return layer + post


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in ("saeclaims", "sae-lens", "transformer-lens", "torch", "numpy", "scipy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ---------------------------------------------------------------- validation


def validate_sae(sae: Any, model: Any, label: str) -> None:
    hook = sae.cfg.metadata.hook_name
    if hook not in model.hook_dict:
        raise SubjectError(f"SAE {label}: hook {hook!r} is not in model {model.cfg.model_name} "
                           f"(e.g. {next(iter(model.hook_dict))!r}); check the SAE's hook_name")
    hook_order(hook)
    if sae.cfg.d_in != model.cfg.d_model:
        raise SubjectError(f"SAE {label}: d_in {sae.cfg.d_in} != model d_model {model.cfg.d_model}; "
                           "the SAE was trained on another model")
    for name, p in sae.named_parameters():
        if not torch.isfinite(p).all():
            raise SubjectError(f"SAE {label}: parameter {name} holds NaN or inf; the file is corrupt")
    ctx = sae.cfg.metadata.context_size
    if ctx is None or ctx < 2:
        raise SubjectError(f"SAE {label}: metadata.context_size is {ctx!r}; set it in the SAE's cfg.json")


def validate_subject(subject: Subject) -> None:
    model = subject.model
    if subject.tokens.ndim != 2 or subject.tokens.numel() == 0:
        raise SubjectError(f"subject {subject.name}: empty evaluation set "
                           f"(tokens shape {tuple(subject.tokens.shape)}); give --n-seqs >= 1")
    if subject.seq_len > model.cfg.n_ctx:
        raise SubjectError(f"subject {subject.name}: sequences of {subject.seq_len} tokens exceed the "
                           f"model's n_ctx {model.cfg.n_ctx}; lower --seq-len")
    if not subject.saes:
        raise SubjectError(f"subject {subject.name}: no SAEs")
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise SubjectError(f"subject {subject.name}: model parameter {name} holds NaN or inf")
    for family in (subject.saes, subject.full_context_saes):
        for hook, sae in family.items():
            validate_sae(sae, model, hook)
            if sae.cfg.metadata.hook_name != hook:
                raise SubjectError(f"SAE registered at {hook} reads {sae.cfg.metadata.hook_name}")


# ---------------------------------------------------------------- shared loading code


def load_hooked_model(name_or_path: str, device: str = "cpu", **from_pretrained_kwargs: Any):
    """A HookedTransformer from an official name (hub) or a local HF checkpoint folder.

    TransformerLens's `from_pretrained` only accepts official names; for a local folder the same
    steps run without the name lookup, with the same weight processing.
    """
    from transformer_lens import HookedTransformer

    path = Path(name_or_path)
    if not (path / "config.json").exists():
        with _hub_errors(f"model {name_or_path}"), offline_unless_reachable():
            return HookedTransformer.from_pretrained(name_or_path, device=device, **from_pretrained_kwargs)
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_cfg = json.loads((path / "config.json").read_text())
    if hf_cfg.get("model_type") == "gpt2" and "n_ctx" not in hf_cfg:
        raise SubjectError(f"{path}/config.json has no n_ctx: TransformerLens reads GPT-2's n_ctx; add "
                           f"\"n_ctx\": {hf_cfg.get('n_positions')} (its n_positions) to the file")
    processing = {k: from_pretrained_kwargs.pop(k) for k in
                  ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
                  if k in from_pretrained_kwargs}
    fold_ln = processing.get("fold_ln", True)
    hf_model = AutoModelForCausalLM.from_pretrained(str(path))
    cfg = loading.get_pretrained_model_config(str(path), fold_ln=fold_ln, device=device,
                                              **from_pretrained_kwargs)
    state_dict = loading.get_pretrained_state_dict(str(path), cfg, hf_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError):
        tokenizer = None
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **processing)
    return model.to(device).eval()


def load_sae_dir(path: Path, device: str = "cpu"):
    from sae_lens import SAE

    if not (path / "cfg.json").exists():
        raise SubjectError(f"no SAE at {path}: expected cfg.json and sae_weights.safetensors "
                           "as written by sae_lens's save_model")
    return SAE.load_from_disk(str(path), device=device)


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds, not retries."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hf

    url = urlparse(hf.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable():
    """Cache-only hub access when the hub cannot be reached: cached files load, missing ones fail fast."""
    import huggingface_hub.constants as hf

    if hf.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    modules = [hf]
    try:
        import datasets.config

        modules.append(datasets.config)
    except ImportError:
        pass
    saved = [m.HF_HUB_OFFLINE for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, old in zip(modules, saved):
            m.HF_HUB_OFFLINE = old


class _hub_errors:
    """Turn the hub's many failure types into one message saying what is missing and how to fix it."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, SubjectError):
            return False
        text = f"{type(exc).__name__}: {exc}"
        hub_markers = ("huggingface", "hub", "connection", "offline", "resolve", "cache", "http",
                       "localentrynotfound", "max retries", "name or service")
        if any(m in text.lower() for m in hub_markers) or isinstance(exc, (OSError, ConnectionError)):
            raise HubUnavailableError(
                f"{self.what} needs the Hugging Face hub, which cannot be reached and the files are not "
                f"in the cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}, "
                f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Download them on a "
                "connected machine (huggingface-cli download REPO) and copy the cache, set HF_HOME to a "
                "cache that holds them, or use --subject organism / local:DIR"
            ) from exc
        return False


def tokens_from_texts(texts, tokenizer, n_seqs: int, seq_len: int, bos: int) -> torch.Tensor:
    """Concatenate documents (EOS between them) into windows of seq_len that begin with BOS."""
    from .organism.corpus import windows

    ids: list[int] = []
    need = n_seqs * (seq_len - 1) + 1
    for text in texts:
        ids.append(bos)
        ids.extend(tokenizer(text)["input_ids"])
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise SubjectError(f"the evaluation text holds {len(ids)} tokens; {need} are needed for "
                           f"{n_seqs} x {seq_len}: lower --n-seqs or give more text")
    return torch.from_numpy(windows(np.asarray(ids), seq_len, bos, n_seqs).astype(np.int64))


def _select_tokens(tokens: np.ndarray, n_seqs: int | None, seq_len: int | None, label: str) -> torch.Tensor:
    n_avail, t_avail = tokens.shape
    n = n_avail if n_seqs is None else n_seqs
    t = t_avail if seq_len is None else seq_len
    if n < 1:
        raise SubjectError(f"{label}: --n-seqs must be >= 1, got {n}")
    if n > n_avail:
        raise SubjectError(f"{label}: asked for {n} sequences, the evaluation set holds {n_avail}")
    if t > t_avail:
        raise SubjectError(f"{label}: asked for sequences of {t} tokens, the evaluation set has {t_avail}")
    return torch.from_numpy(tokens[:n, :t].astype(np.int64))


# ---------------------------------------------------------------- the organism


def organism_dir() -> Path:
    env = os.environ.get("SAECLAIMS_ORGANISM")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "fixtures" / "organism"
    return here if here.exists() else Path.cwd() / "fixtures" / "organism"


def load_organism(root: Path | None = None, device: str = "cpu", n_seqs: int | None = None,
                  seq_len: int | None = None, verify: bool = True) -> Subject:
    from safetensors.torch import load_file

    from .organism.build import CARD_FILE, EVAL_TOKENS, MODEL_CONFIG, MODEL_FILE, TOKENIZER_FILE
    from .organism.model import make_model

    root = organism_dir() if root is None else Path(root)
    card_path = root / CARD_FILE
    if not card_path.exists():
        raise SubjectError(f"organism card {card_path} is missing: restore fixtures/organism from git "
                           "or build it with `python -m saeclaims.organism build`")
    card = json.loads(card_path.read_text())
    if verify:
        verify_tree(root, card["sha256"])
    cfg = json.loads((root / MODEL_CONFIG).read_text())
    model = make_model({**cfg, "device": "cpu"})
    model.load_state_dict(load_file(str(root / MODEL_FILE)))
    # set_tokenizer insists on a hub name to reload from; the organism's tokenizer is a local file.
    model.tokenizer = _organism_tokenizer(root / TOKENIZER_FILE)
    model.cfg.tokenizer_prepends_bos = False
    model.eval()
    short = card["spec"]["model"]["n_ctx"] // card["spec"]["context_ratio"]
    saes, full = {}, {}
    for d in sorted((root / "saes").glob("ctx*/*")):
        if not (d / "cfg.json").exists():
            continue
        sae = load_sae_dir(d)
        (saes if sae.cfg.metadata.context_size == short else full)[sae.cfg.metadata.hook_name] = sae
    tokens = _select_tokens(np.load(root / EVAL_TOKENS), n_seqs, seq_len, "organism")
    subject = Subject(
        name="organism", model=model, saes=saes, tokens=tokens,
        context_sizes={h: s.cfg.metadata.context_size for h, s in saes.items()},
        full_context_saes=full,
        provenance={"model": cfg["model_name"], "release": "saeclaims-organism (fixtures/organism)",
                    "sae_ids": sorted(saes, key=hook_order), "full_context_sae_ids": sorted(full, key=hook_order),
                    "card_seed": card["seed"], "model_sha256": card["sha256"][MODEL_FILE],
                    "versions": package_versions()},
    )
    validate_subject(subject)
    return subject.to(device)


def _organism_tokenizer(path: Path):
    from transformers import PreTrainedTokenizerFast

    from .organism.corpus import BOS_TOKEN

    return PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token=BOS_TOKEN, eos_token=BOS_TOKEN,
                                   pad_token=BOS_TOKEN)


# ---------------------------------------------------------------- sae_lens releases and local dirs


def parse_release_spec(spec: str) -> tuple[str, list[str] | None]:
    release, _, ids = spec.partition(":")
    return release, ([i for i in ids.split(",") if i] or None) if ids else None


def load_release(spec: str, device: str = "cpu", n_seqs: int = 64, seq_len: int = 1024,
                 text_file: Path | None = None, dataset: str = "Skylion007/openwebtext") -> Subject:
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    release, ids = parse_release_spec(spec)
    directory = get_pretrained_saes_directory()
    if release not in directory:
        near = [r for r in directory if release.split("-")[0] in r][:5]
        raise SubjectError(f"unknown subject or sae_lens release {release!r}; try 'organism', "
                           f"'local:DIR' or a release such as {near or ['gpt2-small-res-jb']}")
    lookup = directory[release]
    ids = ids or list(lookup.saes_map)
    unknown = [i for i in ids if i not in lookup.saes_map]
    if unknown:
        raise SubjectError(f"release {release} has no SAE id {unknown[0]!r}; ids: {list(lookup.saes_map)[:6]}…")
    kwargs = dict((lookup.config_overrides or {}).get("model_from_pretrained_kwargs", {}))
    model = load_hooked_model(lookup.model, device=device, **kwargs)
    saes = {}
    for sae_id in ids:
        with _hub_errors(f"SAE {release}/{sae_id}"), offline_unless_reachable():
            sae = SAE.from_pretrained(release, sae_id, device=device)
        saes[sae.cfg.metadata.hook_name] = sae
    tokens = _eval_tokens(model, n_seqs, seq_len, text_file, dataset)
    subject = Subject(
        name=spec, model=model, saes=saes, tokens=tokens.to(device),
        context_sizes={h: s.cfg.metadata.context_size for h, s in saes.items()},
        provenance={"model": lookup.model, "release": release, "repo_id": lookup.repo_id,
                    "sae_ids": ids, "model_from_pretrained_kwargs": kwargs,
                    "versions": package_versions()},
    )
    validate_subject(subject)
    return subject


def _eval_tokens(model, n_seqs: int, seq_len: int, text_file: Path | None, dataset: str) -> torch.Tensor:
    tok = model.tokenizer
    if tok is None:
        raise SubjectError("the model has no tokenizer; give evaluation tokens as eval_tokens.npy")
    bos = tok.bos_token_id
    if text_file is not None:
        if not Path(text_file).exists():
            raise SubjectError(f"evaluation text file {text_file} does not exist")
        texts = Path(text_file).read_text(encoding="utf-8").split("\n\n")
    else:
        with _hub_errors(f"dataset {dataset}"), offline_unless_reachable():
            from datasets import load_dataset

            texts = (row["text"] for row in load_dataset(dataset, split="train", streaming=True))
    return tokens_from_texts(texts, tok, n_seqs, seq_len, bos)


def load_local(directory: str | Path, device: str = "cpu", n_seqs: int | None = None,
               seq_len: int | None = None, text_file: Path | None = None) -> Subject:
    """`local:<dir>`: sae_lens SAE folders below DIR, the model named in DIR/subject.json
    (a TransformerLens name or a path relative to DIR), tokens from DIR/eval_tokens.npy or a text file."""
    root = Path(directory)
    if not root.is_dir():
        raise SubjectError(f"local subject folder {root} does not exist")
    meta_path = root / "subject.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    sae_dirs = sorted(p.parent for p in root.rglob("cfg.json") if (p.parent / "sae_weights.safetensors").exists())
    if not sae_dirs:
        raise SubjectError(f"no SAEs below {root}: save them with sae_lens's SAE.save_model(DIR/<hook>)")
    loaded = [load_sae_dir(d, device) for d in sae_dirs]
    model_ref = meta.get("model") or loaded[0].cfg.metadata.model_name
    if not model_ref:
        raise SubjectError(f"{root}: name the model in subject.json ({{\"model\": ...}})")
    if (root / model_ref).exists():
        model_ref = str(root / model_ref)
    kwargs = dict(meta.get("from_pretrained_kwargs") or loaded[0].cfg.metadata.model_from_pretrained_kwargs or {})
    model = load_hooked_model(model_ref, device=device, **kwargs)
    full_ctx = meta.get("full_context_size")
    saes, full = {}, {}
    for sae in loaded:
        target = full if full_ctx and sae.cfg.metadata.context_size == full_ctx else saes
        target[sae.cfg.metadata.hook_name] = sae
    if (root / "eval_tokens.npy").exists():
        tokens = _select_tokens(np.load(root / "eval_tokens.npy"), n_seqs, seq_len, str(root))
    else:
        tokens = _eval_tokens(model, n_seqs or 64, seq_len or model.cfg.n_ctx, text_file,
                              meta.get("dataset", "Skylion007/openwebtext"))
    subject = Subject(
        name=f"local:{root.name}", model=model, saes=saes, tokens=tokens.to(device),
        context_sizes={h: s.cfg.metadata.context_size for h, s in saes.items()},
        full_context_saes=full,
        provenance={"model": model_ref, "release": f"local:{root}", "sae_ids": sorted(saes),
                    "model_from_pretrained_kwargs": kwargs, "versions": package_versions()},
    )
    validate_subject(subject)
    return subject


def load_subject(spec: str, device: str = "cpu", n_seqs: int | None = None, seq_len: int | None = None,
                 text_file: Path | None = None) -> Subject:
    """Dispatch on the subject spec: `organism`, `local:<dir>`, or `<release>[:id,id,...]`."""
    if spec == "organism":
        return load_organism(device=device, n_seqs=n_seqs, seq_len=seq_len)
    if spec.startswith("local:"):
        return load_local(spec[len("local:"):], device, n_seqs, seq_len, text_file)
    return load_release(spec, device, n_seqs or 64, seq_len or 1024, text_file)
