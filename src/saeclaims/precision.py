"""The precision policy (`--sae-precision`): which parts of the splice workload run in which dtype, per device.

- `auto` (the default): on CUDA `bf16` below; anywhere else `fp32`, so a CPU run computes exactly what it did
  before the policy existed.
- `fp32`: float32 everywhere, TF32 explicitly off on CUDA: the audit mode.
- `tf32`: float32 tensors, TF32 matmuls allowed on CUDA (on a CPU the same as `fp32`).
- `bf16`: the model's forwards under bf16 autocast (the residual stream stays float32: autocast's additions keep
  the wider type) and the vocabulary matmuls with bf16 operands (the target's logit in float32); log-sum-exp, CE,
  KL, reconstruction metrics and every statistic stay float32, and on CUDA TF32 is allowed for the float32
  matmuls that remain. The SAE round trips stay float32 (fast_sae.py's fast path in the SAE's own dtype; TF32
  on CUDA): with bf16 SAE weights the guard (tests/test_precision.py) failed on a random gpt2-family model, where
  `pos_repair_out`'s decoded position (an argmax over cosines with W_pos) flipped on rounding-sized changes of the
  reconstruction (1.7x the dCE tolerance at blocks.0; bf16 forwards alone 0.3x, bf16 vocabulary alone 0.01x,
  the SAE with TF32-rounded operands 0.4x).
- `fp16` exists only as the deprecated `--autocast fp16`: the forwards under fp16 autocast, everything else
  float32, as that option always did.

TF32 is set inside `matmul_scope` and restored after it, so a library call leaves torch's global flags as it
found them; on a CPU nothing is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
# --autocast's values (deprecated) and the precision each now means
AUTOCAST_ALIASES = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ValueError):
    """An unknown precision name."""


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked (`auto`, `fp32`, `tf32`, `bf16`, or `fp16` through --autocast), what
    it means on `device_type`, and the dtype of each part of the workload."""

    asked: str
    resolved: str  # fp32, tf32, bf16 or fp16
    device_type: str

    @property
    def forward_dtype(self) -> torch.dtype | None:
        """Autocast dtype of the model's forwards (None: float32, no autocast)."""
        return _HALF.get(self.resolved)

    @property
    def sae_dtype(self) -> torch.dtype | None:
        """Dtype of the SAE round trips' weights (None: the SAE's own). The SAE's own under every precision: bf16
        SAE weights break the guard (module docstring); fast_sae.py supports bf16 for a policy that can afford it."""
        return None

    @property
    def vocab_dtype(self) -> torch.dtype:
        """Operand dtype of the vocabulary matmuls; log-sum-exp, CE and KL are float32 whatever it is."""
        return torch.bfloat16 if self.resolved == "bf16" else torch.float32

    @property
    def tf32(self) -> bool:
        """Whether float32 matmuls may use TF32 (CUDA only)."""
        return self.device_type == "cuda" and self.resolved in ("tf32", "bf16")

    @property
    def label(self) -> str:
        """What REPORT.md and report.json record, e.g. `auto -> fp32 (cpu)`, `bf16 (cuda)`."""
        head = self.resolved if self.asked == self.resolved else f"{self.asked} -> {self.resolved}"
        return f"{head} ({self.device_type})"


def resolve(asked: str | Precision | None, device: torch.device | str) -> Precision:
    """The precision `asked` means on `device` (None: auto)."""
    if isinstance(asked, Precision):
        return asked
    asked = asked or "auto"
    if asked not in (*PRECISIONS, "fp16"):
        raise PrecisionError(f"precision {asked!r}: choose one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    resolved = ("bf16" if kind == "cuda" else "fp32") if asked == "auto" else asked
    return Precision(asked, resolved, kind)


def from_autocast(dtype: torch.dtype | None) -> str | None:
    """The precision name for splice.measure's deprecated `autocast_dtype` argument (None: not given)."""
    if dtype is None:
        return None
    names = {v: k for k, v in _HALF.items()}
    if dtype not in names:
        raise PrecisionError(f"autocast dtype {dtype}: bfloat16 or float16 (or pass precision=...)")
    return names[dtype]


@contextlib.contextmanager
def matmul_scope(precision: Precision) -> Iterator[None]:
    """TF32 for float32 matmuls (cuBLAS and cuDNN convolutions) as the precision says, restored on exit; nothing on
    a CPU. torch's `fp32_precision` flags where this torch has them (reading the legacy `allow_tf32` after someone
    set the new flags raises), else the legacy `allow_tf32` ones."""
    if precision.device_type != "cuda":
        yield
        return
    flags = _tf32_flags()
    saved = [getattr(owner, name) for owner, name, _ in flags]
    for owner, name, values in flags:
        setattr(owner, name, values[precision.tf32])
    try:
        yield
    finally:
        for (owner, name, _), value in zip(flags, saved):
            setattr(owner, name, value)


def _tf32_flags() -> list[tuple[object, str, tuple]]:
    """(owner, attribute, (value off, value on)) of the TF32 switches of this torch."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(getattr(conv, "conv", None), "fp32_precision"):
        return [(matmul, "fp32_precision", ("ieee", "tf32")), (conv.conv, "fp32_precision", ("ieee", "tf32"))]
    return [(matmul, "allow_tf32", (False, True)), (conv, "allow_tf32", (False, True))]


def autocast(precision: Precision) -> contextlib.AbstractContextManager:
    """The forwards' autocast context (disabled for the float32 precisions)."""
    dtype = precision.forward_dtype
    if dtype is None:
        return torch.autocast(device_type=precision.device_type, enabled=False)
    return torch.autocast(device_type=precision.device_type, dtype=dtype)
