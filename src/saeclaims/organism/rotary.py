"""A tiny rotary subject: context claims on a model with no positional vector in its residual stream.

Rotary models are where the training-context question matters most (Gemma Scope and Llama Scope SAEs
were trained at context 1024 on models with 8192-token contexts), and they exercise the claims'
"no learned W_pos" paths. The model is a 2-layer HookedTransformer with `positional_embedding_type=
"rotary"`, n_ctx 256, trained briefly on a synthetic language whose next-token distribution depends on
a per-document topic, so its loss falls with position as the topic is inferred from context: what the
model computes depends on how much context it has, and an SAE trained at context 32 meets activations
beyond 32 that it never saw. Its residual SAEs are trained by sae_lens's own trainer at context 32, with
a control family at the full 256 (`full_context_size` in subject.json).

The folder is a `local:` subject in the TransformerLens-native format (model/model_config.json,
model/model.safetensors, model/tokenizer.json), eval_tokens.npy, subject.json, saes/ctx<N>/<hook>/.
`python -m saeclaims.organism rotary --out fixtures/rotary` rebuilds it (about two minutes on one core).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import hash_tree
from ..subjects.loading import load_tl_native
from .layout import CARD_FILE, EVAL_DOCUMENTS, EVAL_TOKENS, HELD_OUT_TOKENS, MODEL_CONFIG, MODEL_FILE, TOKENIZER_FILE
from .saes import SAESpec, sae_quality, train_sae

log = logging.getLogger("saeclaims.organism")

BOS = "<|bos|>"
MODEL_FOLDER = "model"
DATASET = "saeclaims-rotary-synthetic"


@dataclass(frozen=True)
class RotarySpec:
    seed: int = 0
    d_vocab: int = 64  # token 0 is BOS
    n_topics: int = 8
    concentration: float = 0.2  # Dirichlet concentration of the bigram rows and topic vectors: peaked
    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    d_mlp: int = 128
    n_ctx: int = 256
    train_steps: int = 500
    batch_seqs: int = 16
    lr: float = 3e-3
    sae_hooks: tuple[str, ...] = ("blocks.1.hook_resid_pre", "blocks.1.hook_resid_post")
    sae_context: int = 32  # n_ctx / 8, as the organism's
    full_context_family: bool = True
    d_sae: int = 128
    sae_training_tokens: int = 200_000
    sae_batch_tokens: int = 1024
    sae_l1: float = 2.0
    sae_lr: float = 3e-3
    n_sae_docs: int = 1024  # documents of n_ctx tokens the SAEs are trained on (repeated when short)
    n_eval_seqs: int = 64
    quality_seqs: int = 32
    n_held_out_seqs: int = 64  # documents of their own for run-time estimates (the residual's mean by position)

    def model_config(self) -> dict:
        d_head = self.d_model // self.n_heads
        return {"n_layers": self.n_layers, "d_model": self.d_model, "n_heads": self.n_heads, "d_head": d_head,
                "d_mlp": self.d_mlp, "n_ctx": self.n_ctx, "d_vocab": self.d_vocab, "act_fn": "gelu_new",
                "normalization_type": "LN", "positional_embedding_type": "rotary", "rotary_dim": d_head,
                "model_name": "saeclaims-rotary", "seed": self.seed}


def smoke_rotary_spec(seed: int = 0) -> RotarySpec:
    """Sizes that prove the builder end to end in seconds (the model learns little)."""
    return RotarySpec(seed=seed, d_model=16, n_heads=2, d_mlp=32, train_steps=5, batch_seqs=4,
                      sae_hooks=("blocks.1.hook_resid_pre",), full_context_family=False, d_sae=32,
                      sae_training_tokens=4096, sae_batch_tokens=512, n_sae_docs=32, n_eval_seqs=8,
                      quality_seqs=8, n_held_out_seqs=4)


def synthetic_documents(spec: RotarySpec, n: int, seed: int) -> np.ndarray:
    """n documents of n_ctx tokens, BOS first: a topic is drawn per document, then each token from
    bigram(prev) x topic (renormalised). The language (bigrams, topics) depends on spec.seed only."""
    lang = np.random.default_rng([spec.seed, 0])
    v = spec.d_vocab - 1  # tokens 1..d_vocab-1
    bigram = lang.dirichlet(np.full(v, spec.concentration), size=spec.d_vocab)
    topics = lang.dirichlet(np.full(v, spec.concentration), size=spec.n_topics)
    table = bigram[None] * topics[:, None]
    cdf = np.cumsum(table / table.sum(-1, keepdims=True), -1)
    rng = np.random.default_rng([spec.seed, 1, seed])
    z = rng.integers(0, spec.n_topics, n)
    out = np.zeros((n, spec.n_ctx), dtype=np.uint16)
    prev = np.zeros(n, dtype=np.int64)
    for t in range(1, spec.n_ctx):
        nxt = np.minimum((cdf[z, prev] < rng.random(n)[:, None]).sum(-1), v - 1) + 1
        out[:, t] = nxt
        prev = nxt
    return out


def word_tokenizer(d_vocab: int):
    """A word-level tokenizer for the synthetic vocabulary (`<|bos|>`, w1 .. w{d_vocab-1}), so the
    model folder is complete: text round-trips and BOS is named."""
    # lazy: only the tokenizer stage needs it
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {BOS: 0, **{f"w{i}": i for i in range(1, d_vocab)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=BOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([BOS])
    return tok


def train_rotary_model(spec: RotarySpec, docs: np.ndarray):
    """AdamW with warm-up and cosine decay on full-length documents, so every position up to n_ctx is
    trained (a rotary model does not extrapolate past the lengths it saw)."""
    # lazy: transformer_lens imports transformers and datasets (seconds); loading the organism needs only the layout
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(spec.seed)
    model = HookedTransformer(HookedTransformerConfig(**spec.model_config()))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warm = max(1, spec.train_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / spec.train_steps)))))
    data = torch.from_numpy(docs.astype(np.int64))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(spec.seed))
    model.train()
    bar = tqdm(range(spec.train_steps), desc="rotary model", unit="step")
    for step in bar:
        i = (step * spec.batch_seqs) % (len(data) - spec.batch_seqs + 1)
        loss = model(data[order[i : i + spec.batch_seqs]], return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def loss_by_position(model, tokens: np.ndarray) -> dict[str, float]:
    """Mean next-token loss in position bins: falls with position while the topic is being inferred."""
    per = model(torch.from_numpy(tokens.astype(np.int64)), return_type="loss", loss_per_token=True)
    n = per.shape[1]
    edges = [0, 8, 32, 64, 128, n]
    return {f"[{a},{b})": float(per[:, a:b].mean()) for a, b in zip(edges, edges[1:]) if a < b}


def save_held_out(out: Path, spec: RotarySpec) -> Path:
    """held_out_tokens.npy: documents drawn apart from the training, SAE and evaluation ones (seed 4), for
    run-time estimates that must not be fitted on the tokens the claims are judged on."""
    path = out / HELD_OUT_TOKENS
    np.save(path, synthetic_documents(spec, spec.n_held_out_seqs, seed=4))
    return path


def build_rotary(out: Path, spec: RotarySpec | None = None) -> dict:
    """Synthetic data, model, SAEs at spec.sae_context (and the full-context controls), card.

    Writes into `out` from scratch each time; returns the card."""
    # lazy: only where weights are written or read
    from safetensors.torch import save_file

    spec = spec or RotarySpec()
    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    mdir = out / MODEL_FOLDER
    mdir.mkdir(exist_ok=True)
    n_train = spec.train_steps * spec.batch_seqs
    model = train_rotary_model(spec, synthetic_documents(spec, max(n_train, spec.batch_seqs), seed=1))
    times = {"model_s": round(time.time() - t_start, 1)}
    save_file(model.state_dict(), str(mdir / MODEL_FILE))
    (mdir / MODEL_CONFIG).write_text(json.dumps(spec.model_config(), indent=2, sort_keys=True) + "\n")
    word_tokenizer(spec.d_vocab).save(str(mdir / TOKENIZER_FILE))
    model = load_tl_native(mdir)  # what `local:` loads: the card is measured on exactly that
    eval_tokens = synthetic_documents(spec, spec.n_eval_seqs, seed=2)
    np.save(out / EVAL_TOKENS, eval_tokens)
    np.save(out / EVAL_DOCUMENTS, np.arange(len(eval_tokens), dtype=np.int32))  # each row a document of its own
    save_held_out(out, spec)
    stream = synthetic_documents(spec, spec.n_sae_docs, seed=3).reshape(-1)  # documents, each BOS first
    sae_spec = SAESpec(d_sae=spec.d_sae, training_tokens=spec.sae_training_tokens, l1_coefficient=spec.sae_l1,
                       lr=spec.sae_lr, train_batch_size_tokens=spec.sae_batch_tokens)
    contexts = [spec.sae_context] + ([spec.n_ctx] if spec.full_context_family else [])
    jobs = [(ctx, hook) for ctx in contexts for hook in spec.sae_hooks]
    saes: dict[str, dict] = {}
    q_tokens = eval_tokens[: spec.quality_seqs]
    for ctx, hook in tqdm(jobs, desc="rotary SAEs", unit="sae"):
        t0 = time.time()
        d = out / "saes" / f"ctx{ctx}" / hook
        torch.manual_seed(spec.seed)
        train_sae(model, stream, 0, hook, ctx, sae_spec, spec.seed, d, dataset_path=DATASET, verbose=False)
        times[f"ctx{ctx}/{hook}"] = round(time.time() - t0, 1)
        saes[f"ctx{ctx}/{hook}"] = _sae_entry(model, d, hook, ctx, q_tokens, sae_quality)
    (out / "subject.json").write_text(json.dumps(
        {"model": MODEL_FOLDER, **({"full_context_size": spec.n_ctx} if spec.full_context_family else {})},
        indent=2) + "\n")
    card = {"name": "saeclaims-rotary", "builder_version": __version__, "seed": spec.seed, "spec": asdict(spec),
            "torch": torch.__version__, "eval_loss_by_position": loss_by_position(model, q_tokens),
            "saes": saes, "stages": times, "build_s": round(time.time() - t_start, 1)}
    card["sha256"] = hash_tree(out, exclude={CARD_FILE})
    (out / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


def _sae_entry(model, d: Path, hook: str, ctx: int, tokens: np.ndarray, quality) -> dict:
    # lazy: sae_lens imports transformer_lens and datasets (seconds); builders only
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(d), device="cpu")
    entry = {"hook_name": hook, "context_size": sae.cfg.metadata.context_size, "d_sae": sae.cfg.d_sae,
             "architecture": sae.cfg.architecture(), "in_context": quality(model, sae, hook, tokens, 1, ctx)}
    if ctx < tokens.shape[1]:
        entry["beyond_context"] = quality(model, sae, hook, tokens, ctx, tokens.shape[1])
    return entry
