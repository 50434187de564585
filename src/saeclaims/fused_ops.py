"""One-kernel layer norms and GELUs for TransformerLens models, for the splice forwards.

TransformerLens writes GPT-2's GELU (`gelu_new`, `gelu_fast`) as five elementwise ops and its layer norms
(`LayerNormPre`, `LayerNorm`) as six, each a pass over memory; in the splice workload's suffix runs they cost
about as much as the MLP's matmuls on a CPU. `fused_norms_and_activations(model)` temporarily runs the same
functions as one kernel each:

- `gelu_new` / `gelu_fast` -> `F.gelu(approximate="tanh")`, the same tanh approximation (TransformerLens's
  own `gelu_pytorch_tanh`), on a CPU written with a sigmoid (`tanh_gelu`); swapped on every module whose
  `act_fn` is one of them.
- `LayerNormPre` / `LayerNorm` (exactly these classes) -> `F.layer_norm` with the module's eps (and w, b),
  the same centring, biased variance and eps inside the square root. Only for float32/float64 models and
  inputs of the model's dtype (TransformerLens upcasts other dtypes), and only in a call where neither
  `hook_scale` nor `hook_normalized` carries a hook and torch has no global module hooks: such a call runs
  TransformerLens's forward, so a hook in use is never skipped.

Both equal TransformerLens's results to float rounding (`tests/test_fused_ops.py`: 1e-6 per op; on the logits
and suffix runs of random models 1e-9 in float64 and 5e-5 in float32, where each norm's 1/scale amplifies the
rounding of large random weights).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import any_hooked, global_module_hooks

_MARK = "_saeclaims_fused_norm"


def _tanh_gelus() -> tuple:
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens.utilities.activation_functions import gelu_fast, gelu_new

    return gelu_new, gelu_fast


_TWO_C = 2 * math.sqrt(2 / math.pi)


def tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU (the tanh approximation). On a GPU one kernel, `F.gelu(approximate="tanh")`. On a CPU the
    same function written with a sigmoid, 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = c (x + 0.044715 x^3):
    torch's CPU tanh kernel is slow (3.3 ms per 2M floats on this project's CPU, sigmoid 1.0 ms), so the four
    in-place passes below take half the time of the one-kernel GELU (2.0 vs 3.8 ms)."""
    if x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        return F.gelu(x, approximate="tanh")
    u = x * x
    u.mul_(0.044715 * _TWO_C).add_(_TWO_C).mul_(x)  # 2u = 2c (1 + 0.044715 x^2) x
    return u.sigmoid_().mul_(x)


def _norm_classes() -> tuple[type, ...]:
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens.components import LayerNorm, LayerNormPre

    return LayerNormPre, LayerNorm


def _make_norm_forward(norm, eager):
    weighted = hasattr(norm, "w") and hasattr(norm, "b")

    def forward(x):
        if (x.dtype != norm.cfg.dtype or x.dtype not in (torch.float32, torch.float64)
                or any_hooked((norm.hook_scale, norm.hook_normalized)) or global_module_hooks()):
            return eager(x)
        shape = (x.shape[-1],)
        if weighted:
            return F.layer_norm(x, shape, norm.w, norm.b, norm.eps)
        return F.layer_norm(x, shape, None, None, norm.eps)

    setattr(forward, _MARK, True)
    return forward


@dataclass
class FusedOps:
    """What `fused_norms_and_activations` swapped: the number of GELUs and layer norms."""

    activations: int = 0
    norms: int = 0


@contextlib.contextmanager
def fused_norms_and_activations(model, enabled: bool = True) -> Iterator[FusedOps]:
    """Within the block, `model`'s tanh GELUs and layer norms run as one kernel each. `enabled=False` changes
    nothing; nested use is harmless (modules already swapped are left to the outer context)."""
    state = FusedOps()
    if not enabled:
        yield state
        return
    gelus = _tanh_gelus()
    norm_classes = _norm_classes()
    acts, norms = [], []
    try:
        for module in model.modules():
            act = module.__dict__.get("act_fn")
            if act is not None and any(act is g for g in gelus):
                module.act_fn = tanh_gelu
                acts.append((module, act))
            if type(module) in norm_classes:
                own = module.__dict__.get("forward")
                if own is not None and getattr(own, _MARK, False):
                    continue
                module.forward = _make_norm_forward(module, module.forward)
                norms.append((module, own))
        state.activations, state.norms = len(acts), len(norms)
        yield state
    finally:
        for module, act in reversed(acts):
            module.act_fn = act
        for module, own in reversed(norms):
            if own is None:
                del module.__dict__["forward"]
            else:
                module.forward = own
