"""An offline replica of real Hugging Face hub releases, laid out as the hub cache holds them.

Why: the release path (`gpt2-small-res-jb`, OpenAI's v5 TopK releases) goes through sae_lens's
pretrained loaders, TransformerLens's `from_pretrained` and huggingface_hub's cache; none of it can be
exercised here without the hub. This module writes what a connected machine would have downloaded, in
the same places and formats (file names, cfg.json keys, tensor names, cache layout), with a tiny model
and constructed SAEs instead of the real weights:

- `gpt2` (what `HookedTransformer.from_pretrained("gpt2-small")` fetches): the hub's config.json
  (gpt2's own fields, with fewer/narrower layers), generation_config.json, model.safetensors keyed as the
  hub's file is (no `transformer.` prefix, causal-mask buffers `h.N.attn.bias` included, no lm_head),
  and GPT-2's real tokenizer (vocab.json, merges.txt from ../shared/reference/gpt2-small, tokenizer.json
  built from them, tokenizer_config.json).
- `jbloom/GPT2-Small-SAEs-Reformatted` (release `gpt2-small-res-jb`): per-hook folders with the legacy
  (mats_sae_training) cfg.json that sae_lens's default `sae_lens` loader reads and converts, weights of a
  sae_lens `StandardSAE`, and sparsity.safetensors.
- one OpenAI v5 TopK release (`gpt2-small-{attn-out,mlp-out,resid-mid,resid-post}-v5-32k`): folders
  `v5_32k_layer_N` (`...N.pt` for resid-post; paths come from sae_lens's directory) with the SAELens-5
  cfg.json (`activation_fn_str: "topk"`, `activation_fn_kwargs.k`, `normalize_activations: "layer_norm"`,
  context 64, no BOS) and weights of a sae_lens `TopKSAE`.

Cache layout (huggingface_hub's): `HF_HOME/hub/models--OWNER--NAME/{blobs/<etag>, refs/main,
snapshots/<commit>/<path> -> ../../blobs/<etag>}`; an etag is the sha256 of an LFS file (weights) and the
git blob sha1 of any other; `.no_exist/<commit>/<path>` marks files a download found absent. Commits are
derived from the content, so they are stable and not real ones.
Run against it with `HF_HOME=<replica.hf_home> HF_HUB_OFFLINE=1` (see `Replica.env`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOKENIZER_DIR = SHARED / "reference" / "gpt2-small"
CORPUS_DIR = SHARED / "corpus" / "gutenberg"

MODEL_REPO = "gpt2"  # TransformerLens's official name for "gpt2-small"
JB_RELEASE = "gpt2-small-res-jb"
JB_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
V5_REPOS = {
    "gpt2-small-attn-out-v5-32k": ("jbloom/GPT2-Small-OAI-v5-32k-attn-out-SAEs", "hook_attn_out"),
    "gpt2-small-mlp-out-v5-32k": ("jbloom/GPT2-Small-OAI-v5-32k-mlp-out-SAEs", "hook_mlp_out"),
    "gpt2-small-resid-mid-v5-32k": ("jbloom/GPT2-Small-OAI-v5-32k-resid-mid-SAEs", "hook_resid_mid"),
    "gpt2-small-resid-post-v5-32k": ("jbloom/GPT2-Small-OAI-v5-32k-resid-post-SAEs", "hook_resid_post"),
}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npy", ".h5", ".msgpack")  # the hub's default .gitattributes
# What transformers asks for beyond the files above when it loads gpt2's tokenizer; the hub's gpt2 repo has
# none of them, so a cache filled online records them as absent.
GPT2_ABSENT = ("added_tokens.json", "special_tokens_map.json", "chat_template.jinja")
EOT = 50256  # <|endoftext|>, GPT-2's BOS, EOS and only special token


@dataclass(frozen=True)
class RepoReplica:
    """One hub repository in the cache: its id, the (derived) commit and the files by repo path."""

    repo_id: str
    commit: str
    folder: Path  # HF_HOME/hub/models--OWNER--NAME
    files: dict[str, Path]  # repo path -> snapshot path (a symlink into blobs/)


@dataclass(frozen=True)
class Replica:
    """What `build_hub_replica` wrote: the HF_HOME to point at and the repos, releases and SAE ids it holds."""

    hf_home: Path
    model: RepoReplica
    releases: dict[str, RepoReplica]  # sae_lens release name -> its repo
    sae_ids: dict[str, list[str]]  # release -> the SAE ids present (a subset of the release's)
    n_layers: int
    d_model: int
    d_sae: dict[str, int] = field(default_factory=dict)  # release -> width of its SAEs

    @property
    def hub_cache(self) -> Path:
        return self.hf_home / "hub"

    def spec(self, release: str) -> str:
        """The `--sae-subject` spec naming every SAE of `release` that the replica holds."""
        return f"{release}:{','.join(self.sae_ids[release])}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) pointed at the replica, offline, with no inherited hub cache paths."""
        env = dict(os.environ if base is None else base)
        for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE",
                    "HF_ENDPOINT", "HF_TOKEN"):
            env.pop(key, None)
        env.update(HF_HOME=str(self.hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
        return env


def tokenizer_available(folder: Path = TOKENIZER_DIR) -> bool:
    """Whether GPT-2's tokenizer files are here; the replica needs the real ones (tests skip otherwise)."""
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()


def build_hub_replica(root: Path, *, n_layers: int = 2, d_model: int = 8, n_heads: int = 2,
                      jb_expansion: int = 32, jb_l0: float = 10.0, match_published: bool = True,
                      topk_release: str = "gpt2-small-attn-out-v5-32k", topk_d_sae: int = 256, topk_k: int = 32,
                      seed: int = 0, tokenizer_dir: Path = TOKENIZER_DIR) -> Replica:
    """Write the replica under `root/hf_home` and describe it; well under a second past the imports.

    SAEs exist for every layer of the tiny model: `blocks.L.hook_resid_pre` for gpt2-small-res-jb and the
    v5 release's hook for `topk_release`. About `jb_l0` latents of each ReLU SAE fire per token (the
    directory publishes L0 10 for blocks.0 and 1; a zero-bias random SAE fires on half its latents, which
    no release does and which makes re-encoding at the SAE's L0 take minutes).

    `match_published` (default): the ReLU SAEs reconstruct their input as well as the directory says the
    real ones do (explained variance ~0.99 vs 0.999 published, L0 ~10), so the published-statistics
    preflight passes as on the real release. That needs L0 >= d_model (a sign pair per direction), hence
    the narrow default model. False: sae_lens's random initialisation (explained variance ~0.35), for
    testing the mismatch path. Raises FileNotFoundError if the tokenizer files are missing.
    """
    if match_published and d_model > jb_l0 + 5:
        raise ValueError(f"match_published needs d_model <= jb_l0 + 5 (L0 tolerance), got d_model {d_model}")
    if not tokenizer_available(tokenizer_dir):
        raise FileNotFoundError(f"GPT-2 tokenizer files (vocab.json, merges.txt) not found in {tokenizer_dir}")
    if topk_release not in V5_REPOS:
        raise ValueError(f"topk_release must be one of {sorted(V5_REPOS)}, got {topk_release!r}")
    import torch

    hf_home = Path(root) / "hf_home"
    hub = hf_home / "hub"
    torch.manual_seed(seed)
    hf_model, gpt2_files = _gpt2_files(n_layers, d_model, n_heads, tokenizer_dir)
    model = write_repo(hub, MODEL_REPO, gpt2_files, no_exist=GPT2_ABSENT)
    resid_pre = _resid_pre_samples(hf_model, n_layers, seed)

    jb_ids = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    jb_d_sae = jb_expansion * d_model
    jb_files: dict[str, bytes] = {}
    for layer, sae_id in enumerate(jb_ids):
        jb_files |= _jb_folder(release_path(JB_RELEASE, sae_id), sae_id, layer, d_model, jb_d_sae, jb_expansion,
                               resid_pre[layer], jb_l0, match_published)
    jb = write_repo(hub, JB_REPO, jb_files)

    v5_repo, hook = V5_REPOS[topk_release]
    v5_ids = [f"blocks.{layer}.{hook}" for layer in range(n_layers)]
    v5_files: dict[str, bytes] = {}
    for layer, sae_id in enumerate(v5_ids):
        v5_files |= _v5_folder(release_path(topk_release, sae_id), sae_id, layer, d_model, topk_d_sae, topk_k)
    v5 = write_repo(hub, v5_repo, v5_files)

    return Replica(hf_home=hf_home, model=model, releases={JB_RELEASE: jb, topk_release: v5},
                   sae_ids={JB_RELEASE: jb_ids, topk_release: v5_ids}, n_layers=n_layers, d_model=d_model,
                   d_sae={JB_RELEASE: jb_d_sae, topk_release: topk_d_sae})


def release_path(release: str, sae_id: str) -> str:
    """The SAE's folder in its repo, from sae_lens's pretrained directory (the yaml's `path`)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()[release].saes_map[sae_id]


def write_repo(hub_cache: Path, repo_id: str, files: dict[str, bytes], no_exist: tuple[str, ...] = ()) -> RepoReplica:
    """Lay `files` (repo path -> content) out as huggingface_hub's cache does after downloading them.

    `no_exist` names files a download found missing from the repo: huggingface_hub then leaves an empty
    marker `.no_exist/<commit>/<path>`, which makes later (offline) look-ups answer "absent" at once.
    """
    folder = hub_cache / f"models--{repo_id.replace('/', '--')}"
    etags = {path: etag(path, data) for path, data in files.items()}
    commit = hashlib.sha1(json.dumps(sorted(etags.items())).encode()).hexdigest()
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)  # the hub writes the bare hash, no newline
    snapshot = folder / "snapshots" / commit
    out: dict[str, Path] = {}
    for path, data in sorted(files.items()):
        blob = folder / "blobs" / etags[path]
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
        out[path] = link
    for path in no_exist:
        marker = folder / ".no_exist" / commit / path
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return RepoReplica(repo_id=repo_id, commit=commit, folder=folder, files=out)


def etag(path: str, data: bytes) -> str:
    """The hub's etag, which names the blob: sha256 for LFS files, the git blob sha1 for the rest."""
    if path.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def gpt2_config(n_layers: int, d_model: int, n_heads: int) -> dict[str, Any]:
    """gpt2's config.json as the hub serves it (its fields and values), with the width and depth shrunk."""
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": EOT,
        "embd_pdrop": 0.1,
        "eos_token_id": EOT,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 1024,
        "n_embd": d_model,
        "n_head": n_heads,
        "n_layer": n_layers,
        "n_positions": 1024,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }


def _gpt2_files(n_layers: int, d_model: int, n_heads: int, tokenizer_dir: Path) -> tuple[Any, dict[str, bytes]]:
    """The files TransformerLens/transformers fetch for `gpt2`, as the hub holds them (and the HF model)."""
    import torch
    from safetensors.torch import save
    from transformers import GPT2Config, GPT2LMHeadModel

    config = gpt2_config(n_layers, d_model, n_heads)
    hf_model = GPT2LMHeadModel(GPT2Config(**config))  # transformers' own init: the right names and shapes
    # The hub's file was converted from the 2019 checkpoint of GPT2Model: keys without the `transformer.`
    # prefix, no lm_head (tied to wte) and the causal-mask buffers `h.N.attn.bias` (float32 [1,1,1024,1024]).
    prefix = f"{hf_model.base_model_prefix}."
    tensors = {k[len(prefix):]: v.detach().clone().contiguous() for k, v in hf_model.state_dict().items()
               if k.startswith(prefix)}
    mask = torch.tril(torch.ones(config["n_positions"], config["n_positions"])).view(
        1, 1, config["n_positions"], config["n_positions"])
    for layer in range(n_layers):
        tensors[f"h.{layer}.attn.bias"] = mask.clone()
    vocab = (tokenizer_dir / "vocab.json").read_bytes()
    merges = (tokenizer_dir / "merges.txt").read_bytes()
    return hf_model, {
        "config.json": _json(config),
        "generation_config.json": _json({"_from_model_config": True, "bos_token_id": EOT, "eos_token_id": EOT,
                                         "transformers_version": "4.26.0.dev0"}),
        "model.safetensors": save(dict(sorted(tensors.items())), metadata={"format": "pt"}),
        "merges.txt": merges,
        "tokenizer.json": _gpt2_tokenizer_json(tokenizer_dir),
        "tokenizer_config.json": _json({"model_max_length": 1024}),
        "vocab.json": vocab,
    }


def _resid_pre_samples(hf_model: Any, n_layers: int, seed: int, n_seqs: int = 8, seq_len: int = 256) -> list[Any]:
    """blocks.L.hook_resid_pre as TransformerLens computes it for these weights, on random tokens.

    With `center_writing_weights` (the release's setting) every write to the residual stream has zero
    mean over d_model, so TransformerLens's residual stream is HF's hidden state minus its mean.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, EOT, (n_seqs, seq_len), generator=g)
    tokens[:, 0] = EOT
    with torch.no_grad():
        hidden = hf_model.transformer.eval()(tokens, output_hidden_states=True).hidden_states  # no logits
    out = []
    for layer in range(n_layers):  # hidden_states[L] is the input of block L (the last one is after ln_f)
        x = hidden[layer].reshape(-1, hidden[layer].shape[-1])
        out.append(x - x.mean(-1, keepdim=True))
    return out


def _gpt2_tokenizer_json(tokenizer_dir: Path) -> bytes:
    """gpt2's tokenizer.json (byte-level BPE, <|endoftext|> its one added token), built from vocab and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE.from_file(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                                         continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    assert tok.token_to_id("<|endoftext|>") == EOT
    return tok.to_str().encode()


def _safetensors(tensors: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().clone().contiguous() for k, v in tensors.items()})


def jb_legacy_cfg(sae_id: str, layer: int, d_in: int, d_sae: int, expansion: int) -> dict[str, Any]:
    """cfg.json of a gpt2-small-res-jb folder: mats_sae_training's LanguageModelSAERunnerConfig, as written.

    Keys and values are the release's (blocks.0's file); only the widths and the per-hook fields follow
    the tiny model. sae_lens's `handle_pre_6_0_config` renames hook_point -> hook_name and
    hook_point_head_index -> hook_head_index, defaults the rest (ReLU, standard architecture, prepend_bos
    True, no normalisation) and keeps what its config classes know.
    """
    return {
        "model_name": "gpt2-small",
        "hook_point": sae_id,
        "hook_point_layer": layer,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "cached_activations_path": f"activations/Skylion007_openwebtext/gpt2-small/{sae_id}",
        "d_in": d_in,
        "n_batches_in_buffer": 128,
        "total_training_tokens": 300000000,
        "store_batch_size": 32,
        "device": "mps",
        "seed": 42,
        "dtype": "torch.float32",
        "b_dec_init_method": "geometric_median",
        "expansion_factor": expansion,
        "from_pretrained_path": None,
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lr_scheduler_name": None,
        "lr_warm_up_steps": 5000,
        "train_batch_size": 4096,
        "use_ghost_grads": False,
        "feature_sampling_window": 1000,
        "feature_sampling_method": None,
        "resample_batches": 1028,
        "feature_reinit_scale": 0.2,
        "dead_feature_window": 5000,
        "dead_feature_estimation_method": "no_fire",
        "dead_feature_threshold": 1e-08,
        "log_to_wandb": True,
        "wandb_project": "mats_sae_training_gpt2_small_resid_pre_5",
        "wandb_entity": None,
        "wandb_log_frequency": 100,
        "n_checkpoints": 10,
        "checkpoint_path": "checkpoints/y1t51byy",
        "d_sae": d_sae,
        "tokens_per_buffer": 67108864,
        "run_name": f"{d_sae}-L1-8e-05-LR-0.0004-Tokens-3.000e+08",
    }


def _jb_folder(folder: str, sae_id: str, layer: int, d_in: int, d_sae: int, expansion: int, acts: Any,
               l0: float, match_published: bool) -> dict[str, bytes]:
    """One gpt2-small-res-jb folder: legacy cfg.json, a StandardSAE's weights, log10 feature sparsity."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))  # sae_lens's init: tied, unit-norm rows
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
        if match_published:
            _fit(sae, acts - sae.b_dec, l0)
        else:  # each latent's bias at the pre-activation quantile that leaves ~l0 latents firing per token
            pre = (acts - sae.b_dec) @ sae.W_enc
            n_above = max(1, round(len(acts) * l0 / d_sae))
            sae.b_enc.copy_(-pre.topk(n_above + 1, dim=0).values[-1])
        firing = ((acts - sae.b_dec) @ sae.W_enc + sae.b_enc > 0).float().mean(0)
    log_sparsity = torch.log10(firing.clamp_min(1e-10))  # what sae_lens's trainer saves
    return {
        f"{folder}/cfg.json": _json(jb_legacy_cfg(sae_id, layer, d_in, d_sae, expansion)),
        f"{folder}/sae_weights.safetensors": _safetensors(dict(sae.state_dict())),
        f"{folder}/sparsity.safetensors": _safetensors({"sparsity": log_sparsity}),
    }


def _fit(sae: Any, x: Any, l0: float, noise: float = 0.05) -> None:
    """Make a StandardSAE reconstruct x (centred) well at about `l0` active latents, without training.

    The first 2*d latents are sign pairs along a random orthonormal basis Q (relu(xQ) - relu(-xQ) = xQ:
    exact, d of them active per token), their decoder perturbed by `noise` so errors are not zero. The
    rest keep sae_lens's random directions, fire rarely (l0 - d per token among them) and decode at a
    fifth of their direction: the rare features every release has, costing little variance.
    """
    import torch

    d, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    q, _ = torch.linalg.qr(torch.randn(d, d))
    sae.W_enc[:, :d] = q
    sae.W_enc[:, d:2 * d] = -q
    sae.W_dec[:d] = q.T + noise * torch.randn(d, d) / d**0.5
    sae.W_dec[d:2 * d] = -q.T + noise * torch.randn(d, d) / d**0.5
    sae.b_enc[:2 * d] = 0
    rare = slice(2 * d, d_sae)
    pre = x @ sae.W_enc[:, rare]
    n_above = max(1, round(len(x) * max(l0 - d, 0) / (d_sae - 2 * d)))  # tokens each rare latent fires on
    sae.b_enc[rare] = -pre.topk(min(n_above + 1, len(x)), dim=0).values[-1]
    sae.W_dec[rare] = 0.2 * sae.W_enc[:, rare].T / sae.W_enc[:, rare].norm(dim=0)[:, None]


def v5_cfg(sae_id: str, layer: int, d_in: int, d_sae: int, k: int) -> dict[str, Any]:
    """cfg.json of an OpenAI v5 folder as jbloom converted it (SAELens 5's SAEConfig.to_dict).

    TopK is written the pre-6.0 way, `activation_fn_str: "topk"` with `activation_fn_kwargs: {"k": k}`
    under `architecture: "standard"`; sae_lens 6 turns that into architecture "topk" with `k`. OpenAI's
    SAEs normalise their input (`layer_norm`), were trained at context 64 and without BOS.
    """
    return {
        "architecture": "standard",
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "torch.float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_name": sae_id,
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": k},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": False,
        "dataset_path": "Skylion007/openwebtext",
        "dataset_trust_remote_code": True,
        "context_size": 64,
        "normalize_activations": "layer_norm",
    }


def _v5_folder(folder: str, sae_id: str, layer: int, d_in: int, d_sae: int, k: int) -> dict[str, bytes]:
    """One v5 folder: cfg.json and a TopKSAE's weights (no sparsity file: whether the real repo has one is not
    known here, and sae_lens's loader reads it only if present)."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, normalize_activations="layer_norm"))
    with torch.no_grad():
        sae.b_dec.copy_(0.01 * torch.randn(d_in))
    return {
        f"{folder}/cfg.json": _json(v5_cfg(sae_id, layer, d_in, d_sae, k)),
        f"{folder}/sae_weights.safetensors": _safetensors(dict(sae.state_dict())),
    }


def corpus_text(dest: Path, min_chars: int = 200_000) -> Path:
    """An evaluation text: the shared Gutenberg books when present, else generated prose (a user's own file)."""
    books = sorted(CORPUS_DIR.glob("*.txt")) if CORPUS_DIR.is_dir() else []
    if books:
        return books[0]
    import random

    rng = random.Random(0)
    words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
             "but have an they you were her she there been one all we their has would when if so no will "
             "river house light morning letter garden window evening road winter story").split()
    paragraphs, size = [], 0
    while size < min_chars:
        para = " ".join(rng.choice(words) for _ in range(rng.randint(40, 120))).capitalize() + "."
        paragraphs.append(para)
        size += len(para) + 2
    dest.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return dest
