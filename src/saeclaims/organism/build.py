"""Build the organism end to end: corpus split, tokenizer, model, SAEs, card.

Each stage writes its artifacts atomically and is skipped when they already exist, so an interrupted
build resumes; everything is a function of the corpus and `--seed`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..artifacts import hash_tree, sha256_file
from ..positional import top_k_variance_share
from . import corpus as corpus_mod
from .card_readme import CARD_DOCS, write_card_readme
from .layout import (
    CARD_FILE,
    EVAL_DOCUMENTS,
    EVAL_TOKENS,
    HELD_OUT_TOKENS,
    MODEL_CONFIG,
    MODEL_FILE,
    TOKENIZER_FILE,
    document_windows,
    make_model,
)
from .model import (
    WEIGHT_PROCESSING,
    ModelSpec,
    TrainSpec,
    eval_loss,
    process_for_release,
    save_config,
    train_model,
)
from .positions import helix_positions, load_reference
from .saes import SAESpec, ce_loss_score, hook_names, sae_quality, train_sae

log = logging.getLogger("saeclaims.organism")


DEFAULT_GPT2_WPOS = Path("../shared/reference/gpt2-small/W_pos.npy")


def _organism_train() -> TrainSpec:
    """20M tokens at T 1024, half the sequences with planted long-range repeats (model.py says why)."""
    return TrainSpec(tokens=20_000_000, batch_seqs=8, repeat_fraction=0.5)


def _organism_sae() -> SAESpec:
    return SAESpec(d_sae=2048, training_tokens=4_000_000, l1_coefficient=0.8)


@dataclass(frozen=True)
class BuildSpec:
    """Organism 2: GPT-2's W_pos helix, n_ctx 1024, SAEs at context 128 (as gpt2-small-res-jb) and 1024."""

    seed: int = 0
    vocab_size: int = 4096
    doc_bytes: int = 32_000
    eval_fraction: float = 0.05
    n_eval_seqs: int = 64  # 64 windows of 1024 (65k tokens): the main command stays under 90 s on 2 CPU cores
    n_held_out_seqs: int = 128  # training windows for run-time estimates (256 KiB as uint16)
    max_bytes_per_book: int | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=_organism_train)
    sae: SAESpec = field(default_factory=_organism_sae)
    sae_hooks: tuple[str, ...] | None = None
    context_ratio: int = 8
    full_context_family: bool = True
    quality_seqs: int = 32

    @property
    def short_ctx(self) -> int:
        return self.model.n_ctx // self.context_ratio

    def hooks(self) -> list[str]:
        return list(self.sae_hooks) if self.sae_hooks else hook_names(self.model.n_layers)


def smoke_spec(seed: int = 0) -> BuildSpec:
    """Tiny sizes that prove the builder end to end in about a minute."""
    return BuildSpec(
        seed=seed,
        vocab_size=400,
        doc_bytes=4000,
        eval_fraction=0.1,
        n_eval_seqs=8,
        n_held_out_seqs=8,
        max_bytes_per_book=12_000,
        model=ModelSpec(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=64, d_vocab=400),
        train=TrainSpec(tokens=20_000, batch_seqs=8, warmup_steps=5, checkpoint_every=20, repeat_fraction=0.5,
                        repeat_len=(4, 8), repeat_lag=(16, 40)),
        sae=SAESpec(d_sae=64, training_tokens=16_384, l1_coefficient=1.0, lr=1e-3,
                    train_batch_size_tokens=1024),
        sae_hooks=("blocks.0.hook_resid_pre",),
        full_context_family=False,
        quality_seqs=8,
    )


def sae_dir(out: Path, ctx: int, hook: str) -> Path:
    return out / "saes" / f"ctx{ctx}" / hook


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def _stage_data(spec: BuildSpec, corpus_dir: Path, out: Path, work: Path, card: dict):
    # lazy: only the tokenizer stage needs it
    from tokenizers import Tokenizer

    t0 = time.time()
    split = corpus_mod.split_corpus(
        corpus_dir, spec.seed, spec.doc_bytes, spec.eval_fraction, spec.max_bytes_per_book
    )
    card["corpus"] = {
        "folder": corpus_dir.name,
        "file_sha256": split.file_sha256,
        "n_train_docs": len(split.train),
        "n_eval_docs": len(split.eval),
        "eval_docs": [f"{d.book}#{d.index}" for d in split.eval],
    }
    tok_path = out / TOKENIZER_FILE
    if not tok_path.exists():
        tok = corpus_mod.train_tokenizer(split.train, spec.vocab_size)
        tmp = tok_path.with_suffix(".tmp")
        tok.save(str(tmp))
        tmp.replace(tok_path)
    tok = Tokenizer.from_file(str(tok_path))
    bos = tok.token_to_id(corpus_mod.BOS_TOKEN)
    train_path = work / "train_stream.npy"
    if not train_path.exists():
        _save_npy_atomic(train_path, corpus_mod.encode_stream(tok, split.train))
    eval_path, docs_path = out / EVAL_TOKENS, out / EVAL_DOCUMENTS
    if not (eval_path.exists() and docs_path.exists()):
        docs = [corpus_mod.encode_stream(tok, [d])[1:] for d in split.eval]  # each without its leading BOS
        rows, ids = document_windows(docs, spec.model.n_ctx, bos, spec.n_eval_seqs)
        _save_npy_atomic(docs_path, ids)
        _save_npy_atomic(eval_path, rows)
    stream = np.load(train_path)
    held_path = out / HELD_OUT_TOKENS
    if not held_path.exists():
        # training text, not the evaluation set: run-time estimates (the residual's mean by position) must not
        # be fitted on the tokens they are judged on; evenly spaced over the stream, so over many documents
        every = corpus_mod.windows(stream, spec.model.n_ctx, bos)
        pick = np.linspace(0, len(every) - 1, spec.n_held_out_seqs).round().astype(int)
        _save_npy_atomic(held_path, every[pick])
    card["corpus"]["eval_windows"] = "round-robin over the held-out documents, none crossing a boundary"
    card["corpus"]["n_eval_window_docs"] = int(len(np.unique(np.load(docs_path))))
    card["corpus"]["train_tokens_available"] = int(len(stream))
    card["stages"]["data_s"] = round(time.time() - t0, 1)
    log.info("data: %d train tokens, eval shard %s", len(stream), np.load(eval_path).shape)
    return stream, bos


def _positions(spec: BuildSpec, gpt2_wpos: Path, card: dict) -> np.ndarray | None:
    """GPT-2's helix for the model's W_pos (None: sinusoidal), with its facts in the card."""
    if spec.model.positions == "sinusoidal":
        return None
    if spec.model.positions != "gpt2":
        raise ValueError(f"unknown positions {spec.model.positions!r}: use 'gpt2' or 'sinusoidal'")

    ref = load_reference(gpt2_wpos)
    helix = helix_positions(ref, spec.model.n_ctx, spec.model.d_model, 1.0, spec.model.position_share, spec.seed,
                            sha256_file(gpt2_wpos))
    card["positions"] = {
        "source": "GPT-2 small W_pos (shared/reference/gpt2-small/W_pos.npy)",
        "source_sha256": helix.source_sha256,
        "n_components": helix.n_components,
        "variance_share_of_reference": helix.variance_share,
        "map_seed": helix.map_seed,
        "frozen": True,
        "pos_to_token_norm_at_init": spec.model.pos_to_token_norm,
    }
    return helix.table


def _stage_model(spec: BuildSpec, stream, bos, out: Path, work: Path, card: dict, gpt2_wpos: Path):
    # lazy: only where weights are written or read
    from safetensors.torch import load_file, save_file

    model_path, cfg_path = out / MODEL_FILE, out / MODEL_CONFIG
    eval_tokens = np.load(out / EVAL_TOKENS)
    if not model_path.exists():
        positions = _positions(spec, gpt2_wpos, card)
        model, cfg, seen, train_s = train_model(stream, bos, spec.model, spec.train, spec.seed, work,
                                                eval_tokens, positions)
        sd = process_for_release(model)
        cfg = {**cfg, "normalization_type": model.cfg.normalization_type}
        save_file(sd, str(model_path.with_suffix(".tmp")))
        model_path.with_suffix(".tmp").replace(model_path)
        save_config(cfg_path, cfg)
        card["stages"]["model_s"] = round(train_s, 1)
        card["model_training_tokens"] = int(seen)
    cfg = json.loads(cfg_path.read_text())
    model = make_model(cfg)
    model.load_state_dict(load_file(str(model_path)))
    model.eval()
    return model


def _stage_saes(spec: BuildSpec, model, stream, bos, out: Path, card: dict) -> None:
    contexts = [spec.short_ctx] + ([spec.model.n_ctx] if spec.full_context_family else [])
    times = card["stages"].setdefault("sae_s", {})
    for ctx in contexts:
        for hook in spec.hooks():
            d = sae_dir(out, ctx, hook)
            if (d / "cfg.json").exists():
                continue
            t0 = time.time()
            log.info("training SAE %s at context %d", hook, ctx)
            tmp = d.with_name(d.name + ".tmp")
            train_sae(model, stream, bos, hook, ctx, spec.sae, spec.seed, tmp)
            tmp.replace(d)
            times[f"ctx{ctx}/{hook}"] = round(time.time() - t0, 1)


def _measure(spec: BuildSpec, model, out: Path, card: dict) -> None:
    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens import SAE

    eval_tokens = np.load(out / EVAL_TOKENS)
    loss, bins = eval_loss(model, eval_tokens)
    card["eval_loss"] = {"overall": loss, "by_position": bins}
    w_pos = model.W_pos.detach().numpy()
    card["w_pos_top3_share"] = {
        f"rows 1..{spec.short_ctx - 1}": top_k_variance_share(w_pos[1 : spec.short_ctx], 3),
        f"rows 1..{spec.model.n_ctx - 1}": top_k_variance_share(w_pos[1 : spec.model.n_ctx], 3),
    }
    card["pos_to_token_norm"] = float(np.linalg.norm(w_pos[1:], axis=1).mean()
                                      / np.linalg.norm(model.W_E.detach().numpy(), axis=1).mean())
    late = [b for b in bins if b.startswith(f"[{spec.model.n_ctx // 2},")]
    if f"[{spec.short_ctx // 2},{spec.short_ctx})" in bins and late:
        # the model uses context beyond the SAEs': loss on the last half of n_ctx below [ctx/2, ctx)
        card["long_context_gain"] = bins[f"[{spec.short_ctx // 2},{spec.short_ctx})"] - bins[late[0]]
    q_tokens = eval_tokens[: spec.quality_seqs]
    card["saes"] = {}
    for ctx_dir in sorted((out / "saes").iterdir()):
        for d in sorted(p for p in ctx_dir.iterdir() if (p / "cfg.json").exists()):
            sae = SAE.load_from_disk(str(d), device="cpu")
            ctx = sae.cfg.metadata.context_size
            entry = {
                "hook_name": sae.cfg.metadata.hook_name,
                "context_size": ctx,
                "prepend_bos": sae.cfg.metadata.prepend_bos,
                "d_sae": sae.cfg.d_sae,
                "in_context": sae_quality(model, sae, d.name, q_tokens, 1, ctx),
                # on the short family's context for both families: the control is compared like with like
                "ce_loss_score_short_context": ce_loss_score(model, sae, d.name, q_tokens, 1, spec.short_ctx),
            }
            if ctx < q_tokens.shape[1]:
                entry["beyond_context"] = sae_quality(model, sae, d.name, q_tokens, ctx, q_tokens.shape[1])
            card["saes"][f"{ctx_dir.name}/{d.name}"] = entry
    short, full = f"ctx{spec.short_ctx}/", f"ctx{spec.model.n_ctx}/"
    card["control_ce_score_gap"] = {
        k[len(short):]: card["saes"][k]["ce_loss_score_short_context"]
        - card["saes"][full + k[len(short):]]["ce_loss_score_short_context"]
        for k in card["saes"] if k.startswith(short) and full + k[len(short):] in card["saes"]}


def build(corpus_dir: Path, out: Path, spec: BuildSpec, gpt2_wpos: Path = DEFAULT_GPT2_WPOS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".build"
    work.mkdir(exist_ok=True)
    torch.manual_seed(spec.seed)
    card_path = out / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card.setdefault("stages", {})
    card.update({"name": "saeclaims-organism", "builder_version": __version__, "seed": spec.seed,
                 "spec": asdict(spec), "weight_processing": WEIGHT_PROCESSING,
                 "torch": torch.__version__})
    t0 = time.time()
    stream, bos = _stage_data(spec, corpus_dir, out, work, card)
    card["bos_token_id"] = int(bos)
    model = _stage_model(spec, stream, bos, out, work, card, gpt2_wpos)
    _stage_saes(spec, model, stream, bos, out, card)
    _measure(spec, model, out, card)
    card["stages"]["last_run_s"] = round(time.time() - t0, 1)
    write_card_readme(out, card)
    card["sha256"] = hash_tree(out, exclude={CARD_FILE, "build.log", *CARD_DOCS})
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    tmp.replace(card_path)
    return card
