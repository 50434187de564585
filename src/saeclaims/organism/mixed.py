"""The mixed subject: SAEs of several architectures and hook kinds on the organism's model.

`fixtures/mixed/` is a `local:` folder. Its subject.json points at the organism's TransformerLens-native
model (`../organism`), so nothing large is duplicated; it holds SAEs trained by sae_lens's own trainer
at the organism's short context (128) on hooks and architectures the organism's residual ReLU family
does not cover: attn_out, mlp_out, attn.hook_z (sae_lens's hook_z reshaping), resid_mid, and two SAEs
on one hook (standard and TopK), so that every claim meets every kind.

`python -m saeclaims.organism mixed` rebuilds it (deterministic in --seed; about 5 minutes on one core).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import hash_tree
from ..subjects.loading import load_tl_native
from . import corpus as corpus_mod
from .layout import CARD_FILE, EVAL_DOCUMENTS, EVAL_TOKENS, HELD_OUT_TOKENS, TOKENIZER_FILE
from .saes import sae_quality, train_sae_config

log = logging.getLogger("saeclaims.organism")

SAE_FOLDER = "saes"


@dataclass(frozen=True)
class MixedSAE:
    """One SAE of the mixed subject: its id (= folder name), hook, architecture and sparsity knob."""

    sae_id: str
    hook: str
    architecture: str  # "standard" (l1 = sparsity), "jumprelu" (l0 coefficient = sparsity), "topk" (k)
    sparsity: float
    options: tuple[tuple[str, Any], ...] = ()  # extra fields of the sae_lens training config


# Sparsity chosen (at 500k tokens, d_sae 256) for in-context explained variance >= 0.7 on every SAE.
# JumpReLU's threshold starts at 0.5: from sae_lens's default 0.01 it moves too little in 250 steps to
# sparsify (L0 ~120 whatever the L0 coefficient).
MIXED_SAES: tuple[MixedSAE, ...] = (
    MixedSAE("blocks.0.hook_resid_pre", "blocks.0.hook_resid_pre", "standard", 2.0),
    MixedSAE("blocks.0.hook_resid_pre.topk", "blocks.0.hook_resid_pre", "topk", 16),
    MixedSAE("blocks.1.attn.hook_z", "blocks.1.attn.hook_z", "topk", 16),
    MixedSAE("blocks.1.hook_attn_out", "blocks.1.hook_attn_out", "standard", 2.5),
    MixedSAE("blocks.2.hook_resid_mid", "blocks.2.hook_resid_mid", "standard", 2.5),
    MixedSAE("blocks.2.hook_mlp_out", "blocks.2.hook_mlp_out", "jumprelu", 5.0,
             (("jumprelu_init_threshold", 0.5),)),
)


@dataclass(frozen=True)
class MixedSpec:
    seed: int = 0
    context_size: int = 128  # the organism's short context (n_ctx / 8, as gpt2-small-res-jb's 128 of 1024)
    d_sae: int = 256
    training_tokens: int = 500_000
    train_batch_size_tokens: int = 2048
    lr: float = 2e-3
    stream_docs: int = 150  # training documents sampled from the organism's train split (~700k tokens)
    n_eval_seqs: int = 32  # rows of the organism's eval_tokens.npy copied (32 x 1024 uint16: 64 KiB)
    quality_seqs: int = 32  # rows the card's L0 / explained variance are measured on
    saes: tuple[MixedSAE, ...] = field(default_factory=lambda: MIXED_SAES)


def training_config(sae: MixedSAE, d_in: int, spec: MixedSpec):
    """The sae_lens training config of one SAE; an attn.hook_z SAE gets sae_lens's hook_z reshaping,
    so the saved SAE takes (..., n_heads, d_head) activations as sae_lens's hook_z releases do."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAEConfig

    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens.saes.standard_sae import StandardTrainingSAEConfig

    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    steps = spec.training_tokens // spec.train_batch_size_tokens
    common: dict[str, Any] = {"d_in": d_in, "d_sae": spec.d_sae,
                              "normalize_activations": "expected_average_only_in",
                              "reshape_activations": "hook_z" if sae.hook.endswith("hook_z") else "none",
                              **dict(sae.options)}
    if sae.architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=sae.sparsity, l1_warm_up_steps=steps // 20, **common)
    if sae.architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=sae.sparsity, l0_warm_up_steps=steps // 20, **common)
    if sae.architecture == "topk":
        return TopKTrainingSAEConfig(k=int(sae.sparsity), **common)
    raise ValueError(f"unknown architecture {sae.architecture!r}")


def hook_d_in(model, hook: str) -> int:
    """The width an SAE on this hook reads: d_model, or n_heads * d_head for attn.hook_z."""
    return model.cfg.n_heads * model.cfg.d_head if hook.endswith("hook_z") else model.cfg.d_model


def training_stream(organism: Path, corpus_dir: Path, seed: int, n_docs: int) -> tuple[np.ndarray, int]:
    """Tokens from the organism's own train split (the same held-out documents as its card, checked
    by the corpus files' sha256), so no evaluation text reaches these SAEs either."""
    # lazy: only the tokenizer stage needs it
    from tokenizers import Tokenizer

    card = json.loads((organism / CARD_FILE).read_text())
    spec = card["spec"]
    split = corpus_mod.split_corpus(corpus_dir, card["seed"], spec["doc_bytes"], spec["eval_fraction"],
                                    spec["max_bytes_per_book"])
    if split.file_sha256 != card["corpus"]["file_sha256"]:
        raise ValueError(f"corpus {corpus_dir} is not the one the organism was built from (sha256 differ)")
    tok = Tokenizer.from_file(str(organism / TOKENIZER_FILE))
    rng = np.random.default_rng([seed, 7])
    chosen = sorted(rng.permutation(len(split.train))[:n_docs].tolist())
    return corpus_mod.encode_stream(tok, [split.train[i] for i in chosen]), int(card["bos_token_id"])


def build_mixed(out: Path, organism: Path, corpus_dir: Path, spec: MixedSpec | None = None) -> dict:
    """Train (or keep, when already there) every SAE of the spec, then measure all and write the card."""

    spec = spec or MixedSpec()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    organism_card = json.loads((organism / CARD_FILE).read_text())
    model = load_tl_native(organism)
    card_path = out / CARD_FILE
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    times: dict[str, float] = dict(old.get("train_s", {}))
    eval_path = out / EVAL_TOKENS
    if not eval_path.exists():
        np.save(eval_path, np.load(organism / EVAL_TOKENS)[: spec.n_eval_seqs])
        # the organism's windows, so their documents (the bootstrap's clusters) and its held-out windows too
        np.save(out / EVAL_DOCUMENTS, np.load(organism / EVAL_DOCUMENTS)[: spec.n_eval_seqs])
        np.save(out / HELD_OUT_TOKENS, np.load(organism / HELD_OUT_TOKENS))
    todo = [s for s in spec.saes if not (out / SAE_FOLDER / s.sae_id / "cfg.json").exists()]
    if todo:
        t0 = time.time()
        stream, bos = training_stream(organism, corpus_dir, spec.seed, spec.stream_docs)
        log.info("training stream: %d tokens in %.1fs", len(stream), time.time() - t0)
        for s in tqdm(todo, desc="mixed SAEs", unit="sae"):
            t0 = time.time()
            torch.manual_seed(spec.seed)
            final = out / SAE_FOLDER / s.sae_id
            tmp = final.with_name(final.name + ".tmp")
            train_sae_config(model, stream, bos, s.hook, spec.context_size,
                             training_config(s, hook_d_in(model, s.hook), spec), spec.training_tokens,
                             spec.train_batch_size_tokens, spec.lr, spec.seed, tmp, verbose=False)
            tmp.replace(final)
            times[s.sae_id] = round(time.time() - t0, 1)
            log.info("%s: trained in %.1fs", s.sae_id, times[s.sae_id])
    model_ref = os.path.relpath(organism.resolve(), out.resolve())  # "../organism" for the shipped layout
    card = {
        "name": "saeclaims-mixed", "builder_version": __version__, "seed": spec.seed, "spec": asdict(spec),
        "model": model_ref, "model_sha256": organism_card["sha256"]["model.safetensors"],
        "torch": torch.__version__, "sae_lens": _version("sae_lens"), "train_s": times,
        "saes": measure_mixed(out, model, spec),
    }
    card["build_s"] = round(time.time() - t_start, 1)  # this run; train_s holds each SAE's own time
    card["resumed"] = [s.sae_id for s in spec.saes if s not in todo]  # SAEs kept from an earlier run
    (out / "subject.json").write_text(json.dumps({"model": model_ref}, indent=2) + "\n")
    card["sha256"] = hash_tree(out, exclude={CARD_FILE})
    tmp_card = card_path.with_suffix(".tmp")
    tmp_card.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    tmp_card.replace(card_path)
    return card


def measure_mixed(out: Path, model, spec: MixedSpec) -> dict[str, dict]:
    """Each SAE's card entry: what it is, how it was trained, and its L0 / explained variance in
    (positions [1, ctx)) and beyond (positions [ctx, n_ctx)) its context on the first quality_seqs rows."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens import SAE

    tokens = np.load(out / EVAL_TOKENS)[: spec.quality_seqs]
    trained = {s.sae_id: s for s in spec.saes}
    entries = {}
    for d in sorted(p for p in (out / SAE_FOLDER).iterdir() if (p / "cfg.json").exists()):
        sae = SAE.load_from_disk(str(d), device="cpu")
        meta = sae.cfg.metadata
        ctx = meta.context_size
        entries[d.name] = {
            "architecture": sae.cfg.architecture(),
            "hook_name": meta.hook_name,
            "context_size": ctx,
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "reshape_activations": sae.cfg.reshape_activations,
            "training_tokens": spec.training_tokens,
            "sparsity": _sparsity(trained[d.name]) if d.name in trained else None,
            "in_context": sae_quality(model, sae, meta.hook_name, tokens, 1, ctx),
            "beyond_context": sae_quality(model, sae, meta.hook_name, tokens, ctx, tokens.shape[1]),
        }
    return entries


def _sparsity(sae: MixedSAE) -> dict[str, Any]:
    name = {"standard": "l1_coefficient", "jumprelu": "l0_coefficient", "topk": "k"}[sae.architecture]
    return {name: int(sae.sparsity) if sae.architecture == "topk" else sae.sparsity, **dict(sae.options)}


def _version(package: str) -> str:
    return version(package)
