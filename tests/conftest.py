"""Shared builders for the library's tests: tiny random models, SAEs and subjects."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("gpu", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def tiny_model(n_layers: int = 2, d_model: int = 16, n_ctx: int = 32, d_vocab: int = 50, seed: int = 0,
               positional: str = "standard"):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=d_model, n_heads=2, d_head=d_model // 2,
                                  d_mlp=4 * d_model, n_ctx=n_ctx, d_vocab=d_vocab, act_fn="gelu_new",
                                  normalization_type="LN", positional_embedding_type=positional, seed=seed)
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # larger than the default init, so patches visibly change the loss
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.05))
    return model.eval()


def tiny_sae(d_in: int, d_sae: int, hook: str, ctx: int, seed: int = 0, identity: bool = False):
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae)
    cfg.metadata.hook_name = hook
    cfg.metadata.context_size = ctx
    cfg.metadata.prepend_bos = True
    sae = StandardSAE(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if identity:  # relu(x) - relu(-x) = x: an SAE that reconstructs perfectly
            assert d_sae == 2 * d_in
            eye = torch.eye(d_in)
            sae.W_enc.copy_(torch.cat([eye, -eye], 1))
            sae.W_dec.copy_(torch.cat([eye, -eye], 0))
            sae.b_enc.zero_()
            sae.b_dec.zero_()
        else:
            sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
            sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) / d_sae**0.5)
            sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1 - 0.2)
            sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.1)
    return sae.eval()


def tiny_subject(n_layers: int = 2, d_model: int = 16, n_ctx: int = 32, ctx: int = 8, n_seqs: int = 6,
                 seq_len: int = 32, seed: int = 0, identity: bool = False, hooks: list[str] | None = None):
    from saeclaims.subjects import Subject

    model = tiny_model(n_layers, d_model, n_ctx, seed=seed)
    hooks = hooks or [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"]
    saes = {h: tiny_sae(d_model, 2 * d_model, h, ctx, seed + i, identity) for i, h in enumerate(hooks)}
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, model.cfg.d_vocab, (n_seqs, seq_len), generator=g)
    tokens[:, 0] = 0
    return Subject(name="tiny", model=model, saes=saes, tokens=tokens,
                   context_sizes={h: ctx for h in hooks})


@pytest.fixture
def subject_factory():
    return tiny_subject


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MIXED_DIR = FIXTURES / "mixed"  # `local:fixtures/mixed`: standard/JumpReLU/TopK SAEs on five hook kinds
ROTARY_DIR = FIXTURES / "rotary"  # `local:fixtures/rotary`: a tiny rotary model, SAEs at context 32 of 256


@pytest.fixture(scope="session")
def rotary_subject_dir() -> Path:
    """The tiny rotary subject, a `local:` folder. Shipped rather than built per session: training the
    model takes about two minutes on one core (`python -m saeclaims.organism rotary` rebuilds it)."""
    if not (ROTARY_DIR / "card.json").exists():
        pytest.skip("fixtures/rotary is not built: python -m saeclaims.organism rotary")
    return ROTARY_DIR


@pytest.fixture(scope="session")
def mixed_subject_dir() -> Path:
    """The mixed subject (`local:` folder over the organism's model); see saeclaims.organism.mixed."""
    if not (MIXED_DIR / "card.json").exists():
        pytest.skip("fixtures/mixed is not built: python -m saeclaims.organism mixed")
    return MIXED_DIR


def shared_dir(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once for the whole test session, across xdist workers: the first worker to ask builds it
    under a file lock, the others wait and read it. Why: a session fixture is built once per worker, and an
    xdist_group keeps a module's tests on one worker only under `--dist loadgroup` (and under pytest >= 9.2 only
    with saeclaims.xdist_groups): under `-n 2` alone the merge tests' ten toy runs were made twice."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / f"shared-{name}"
    with FileLock(str(path) + ".lock"):
        if not (path / ".built").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            build(path)
            (path / ".built").touch()
    return path
