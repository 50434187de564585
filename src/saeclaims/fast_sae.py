"""SAE round trips without sae_lens's per-call overhead, for the architectures whose math it reproduces.

sae_lens's encode/decode cast, reshape, call five hook points and a run-time normalisation per call, allocate a
new tensor at each step and keep the weights in the SAE's dtype. For the inference classes `StandardSAE` (ReLU),
`JumpReLUSAE` and `TopKSAE`, with no run-time normalisation (`normalize_activations` "none"), no hook_z reshaping,
no hook attached to any of the SAE's hook points, encode/decode not replaced on the instance, and the activation
function sae_lens builds for that class,
encode/decode are a bias-subtract, one matmul with bias, an activation done in place and another matmul with
bias. `fast(sae, dtype)` returns a `FastSAE` doing exactly that with weights cached in `dtype` (the precision's;
None: the SAE's own), or the SAE itself for anything else, so every other SAE keeps sae_lens's own code.

In the SAE's own dtype on a CPU the fast path runs sae_lens's operations in sae_lens's order (`mm` then an
in-place bias add), so its results are bit-identical (tests/test_fast_sae.py); on CUDA the bias rides the GEMM
(`addmm`), equal to ~1e-6 relative. In bf16 the codes and the reconstruction are bf16 products (documented
tolerance in the test), handed back in the SAE's dtype so everything downstream stays float32.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from .variants import count_active

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sae -> {dtype: FastSAE}


def architecture_of(sae) -> str | None:
    """'relu', 'jumprelu' or 'topk' for an SAE whose encode/decode the fast path reproduces, else None."""
    try:
        from sae_lens import JumpReLUSAE, StandardSAE, TopKSAE
        from sae_lens.saes.topk_sae import TopK
    except ImportError:  # pragma: no cover - sae_lens is a dependency
        return None
    kind = {StandardSAE: "relu", JumpReLUSAE: "jumprelu", TopKSAE: "topk"}.get(type(sae))
    cfg = getattr(sae, "cfg", None)
    if kind is None or getattr(cfg, "normalize_activations", None) not in (None, "none"):
        return None
    if getattr(sae, "hook_z_reshaping_mode", True) or _has_hooks(sae) or {"encode", "decode"} & set(vars(sae)):
        return None  # reshaping, a hook, or encode/decode replaced on the instance: sae_lens's own code runs
    act = getattr(sae, "activation_fn", None)
    if kind == "topk":
        ok = type(act) is TopK and act.k == cfg.k and not act.use_sparse_activations
    else:
        ok = type(act) is torch.nn.ReLU
    return kind if ok else None


def _has_hooks(sae) -> bool:
    """Whether any hook could change encode/decode: one on the SAE's hook points, or a global module hook."""
    from torch.nn.modules import module as m

    if m._global_forward_hooks or m._global_forward_pre_hooks:
        return True
    return any(hp._forward_hooks or hp._forward_pre_hooks for hp in getattr(sae, "hook_dict", {}).values())


def fast(sae, dtype: torch.dtype | None = None):
    """The SAE's fast path in `dtype` (None: the SAE's own dtype), or the SAE itself where the fast path does not
    reproduce its encode/decode. Checked at every call: a hook added meanwhile turns the fast path off."""
    if sae is None or architecture_of(sae) is None:
        return sae
    want = dtype or sae.W_enc.dtype
    per_dtype = _CACHE.setdefault(sae, {})
    if want not in per_dtype:
        per_dtype[want] = FastSAE(sae, want)
    return per_dtype[want]


class FastSAE:
    """encode/decode of one SAE with weights in `dtype` (cached until a parameter changes); every other attribute
    is the SAE's. Inputs of any leading shape [..., d_in]; decode returns the SAE's dtype."""

    def __init__(self, sae, dtype: torch.dtype):
        self._ref = weakref.ref(sae)  # the cache is keyed weakly by the SAE: no strong reference back to it
        self.dtype = dtype
        self.kind = architecture_of(sae)
        self._key: tuple | None = None
        self._w: dict[str, torch.Tensor] = {}

    @property
    def _sae(self):
        return self._ref()

    def __getattr__(self, name):
        if name.startswith("__") or name == "_ref":
            raise AttributeError(name)
        return getattr(self._sae, name)

    def _weights(self) -> dict[str, torch.Tensor]:
        """The weights in the compute dtype, rebuilt when any parameter was replaced, changed in place or moved."""
        params = dict(self._sae.named_parameters())
        key = tuple((n, id(p), p._version, p.device, p.dtype) for n, p in params.items())
        if key != self._key:
            own = self.dtype == params["W_enc"].dtype
            conv: Callable[[torch.Tensor], torch.Tensor] = (lambda t: t.detach()) if own else \
                (lambda t: t.detach().to(self.dtype).contiguous())
            w = {n: conv(params[n]) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
            if self.kind == "jumprelu":
                w["threshold"] = params["threshold"].detach()  # compared in its own (float32) dtype
            if self.kind == "topk" and self._sae.cfg.rescale_acts_by_decoder_norm:
                norm = params["W_dec"].detach().norm(dim=-1)  # in the SAE's dtype, as sae_lens computes it
                w["dec_norm"] = norm.to(self.dtype)
                w["inv_dec_norm"] = (1 / norm).to(self.dtype)
            self._w, self._key = w, key
        return self._w

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        w = self._weights()
        lead = x.shape[:-1]
        sae_in = x.reshape(-1, x.shape[-1]).to(self.dtype)
        if self._sae.cfg.apply_b_dec_to_input:
            sae_in = sae_in - w["b_dec"]
        hidden = _linear(sae_in, w["W_enc"], w["b_enc"])
        if self.kind == "relu":
            hidden.relu_()
        elif self.kind == "jumprelu":
            mask = hidden > w["threshold"]
            hidden.relu_().mul_(mask)
        else:
            if "dec_norm" in w:
                hidden.mul_(w["dec_norm"])
            values, idx = torch.topk(hidden, k=self._sae.cfg.k, dim=-1, sorted=False)
            hidden = torch.zeros_like(hidden).scatter_(-1, idx, values.relu_())
        return hidden.reshape(*lead, hidden.shape[-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        w = self._weights()
        lead = codes.shape[:-1]
        flat = codes.reshape(-1, codes.shape[-1]).to(self.dtype)
        if "inv_dec_norm" in w:
            flat = flat * w["inv_dec_norm"]
        out = _linear(flat, w["W_dec"], w["b_dec"])
        return out.to(self._sae.W_dec.dtype).reshape(*lead, out.shape[-1])

    def active_count(self, codes: torch.Tensor) -> torch.Tensor:
        """L0 per token (float32): one count_nonzero pass on CUDA; on a CPU variants.count_active, which is faster
        there (and makes a NaN code's L0 NaN; count_nonzero counts a NaN code as active)."""
        if codes.is_cuda:
            return torch.count_nonzero(codes, dim=-1).float()
        return count_active(codes)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x @ w + b: on CUDA one GEMM with the bias in its epilogue; elsewhere sae_lens's own order (matmul, then the
    bias added, here in place), which keeps a CPU run bit-identical to sae_lens."""
    if x.is_cuda:
        return torch.addmm(b, x, w)
    return torch.mm(x, w).add_(b)
