"""What the splice kernels measure: per-token loss and reconstruction metrics per (variant, SAE id), the
in-context statistics of each hook, and the container claims read them from."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .position_means import PositionSubspace

if TYPE_CHECKING:
    from .stats import Interval

RECON_METRICS = ("sq_err", "nmse", "l0", "cos")


LOSS_METRICS = ("ce", "dce", "kl")


@dataclass
class HookStats:
    """In-context statistics at a hook: the `mean` variant, the nMSE normaliser and the SAE's mean L0
    (the `reencode` variant's k), all over non-BOS tokens at positions [1, ctx)."""

    mean: torch.Tensor  # [d]
    variance: float  # mean over in-context tokens of ||x - mean||^2
    sae_l0: float | None = None  # mean number of active SAE latents; None without an SAE at the hook
    # the hook's reproducible position-conditional mean subspace (position_means.py), from held-out windows, when a
    # variant asked reads it and the subject ships held-out windows; else None
    position_basis: torch.Tensor | None = None
    position_subspace: PositionSubspace | None = None  # the same, with its rank and variance share (the premise)
    position_means: torch.Tensor | None = None  # [T, d] float32: the mean by position itself (mean_shift_pos)


@dataclass
class Measurements:
    """Per-token results. Arrays are [n_seqs, T-1]: column p belongs to position p, whose next-token
    loss is measured there. `tidy()` gives the long (variant, sae_id, sequence, position) table."""

    subject: str
    sae_ids: list[str]
    variants: list[str]
    context_sizes: dict[str, int]
    clean_ce: np.ndarray
    metrics: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    activation: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # the bootstrap's cluster of each sequence (its source document); None: each sequence its own
    clusters: np.ndarray | None = None
    # per SAE id, where the activation's mean moves with position (held-out windows), when a variant read it
    position_subspaces: dict[str, PositionSubspace] = field(default_factory=dict)
    # intervals already bootstrapped from these measurements (instruments._boot): several claims gate on the
    # same excess, and the figures redraw the claims' statistics
    interval_cache: dict[tuple, Interval] = field(default_factory=dict, compare=False, repr=False)
    # called with (variant, hook) when `get` finds no such pair: the workbench measures a pair that no claim test
    # of the run declared and returns its metrics (the read costs a pass of its own instead of failing), or None
    on_missing: Callable[[str, str], dict[str, np.ndarray] | None] | None = field(default=None, compare=False,
                                                                                 repr=False)

    @property
    def n_seqs(self) -> int:
        return int(self.clean_ce.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.clean_ce.shape[1])

    def get(self, variant: str, hook: str, metric: str) -> np.ndarray:
        if (variant, hook) not in self.metrics and self.on_missing is not None:
            found = self.on_missing(variant, hook)  # the workbench may measure the pair now
            if found is not None:
                self.metrics[(variant, hook)] = found
        try:
            return self.metrics[(variant, hook)][metric]
        except KeyError:
            raise KeyError(f"no {metric} for variant {variant} at {hook}; measured: "
                           f"{sorted(self.metrics)}") from None

    def tidy(self) -> dict[str, np.ndarray]:
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("variant", "sae_id", "sequence", "position",
                                                             *LOSS_METRICS, *RECON_METRICS)}
        n, p = self.clean_ce.shape
        seq, pos = np.meshgrid(np.arange(n), np.arange(p), indexing="ij")
        for (name, sae_id), m in self.metrics.items():
            cols["variant"].append(np.full(n * p, name, dtype=object))
            cols["sae_id"].append(np.full(n * p, sae_id, dtype=object))
            cols["sequence"].append(seq.ravel())
            cols["position"].append(pos.ravel())
            for k in (*LOSS_METRICS, *RECON_METRICS):
                cols[k].append(m[k].ravel())
        return {k: np.concatenate(v) if v else np.array([]) for k, v in cols.items()}


def warn_unconverged(m: Measurements) -> None:
    for (v, h), metrics in m.metrics.items():
        flags = metrics.get("unconverged")
        if flags is not None and np.nansum(flags) > 0:
            warnings.warn(f"variant {v} at {h}: the solver did not converge on {int(np.nansum(flags))} of "
                          f"{int(np.isfinite(flags).sum())} tokens; statistics reading them refuse to "
                          "(instruments.UnconvergedError)", RuntimeWarning, stacklevel=3)
