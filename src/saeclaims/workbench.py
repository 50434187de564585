"""One subject's measurements, computed lazily per hook and shared by every claim test in a run,
plus the small typed series (`series.py`) the report's figures are drawn from."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import numpy as np

from .fact_measurement import model_facts, sae_facts
from .instruments import excess, recovery
from .measurements import Measurements
from .progress import ProgressLine
from .reads import VariantReads
from .series import HookNorms, L0Curve, PositionCurves, Recoveries, Series
from .splice import measure
from .splicing import variants_at
from .stats import DEFAULT_BOOTSTRAP, Bootstrap
from .subject_facts import SubjectFact
from .subjects import Subject
from .variants import variant_names

AUTOCAST = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}  # the deprecated `autocast` argument's meanings


class Workbench:
    def __init__(self, subject: Subject, boot: Bootstrap = DEFAULT_BOOTSTRAP, batch_size: int = 16,
                 autocast: str = "none", record_series: Callable[[Series], None] | None = None,
                 progress: Callable[[], contextlib.AbstractContextManager] | None = None, eager: bool = True,
                 reencode_seqs: int = 16, budget_bytes: int | None = None, reads: VariantReads | None = None,
                 record_fact: Callable[[SubjectFact], None] | None = None, line: ProgressLine | None = None,
                 precision: str = "auto", owned: list[str] | None = None, model_facts: bool = True):
        self.subject = subject
        # a shard of a run (--sae-shard) holds some SAEs: it measures those eagerly and records their facts and
        # series, and measures another SAE only for a row that reads it (None: this process holds every SAE)
        self.owned = owned
        self.model_facts = model_facts
        self.reads = reads  # what the run's claim tests read per SAE id (None: every variant everywhere)
        self._unread: set[tuple[str, str]] = set()  # pairs measured on demand (warned once each)
        self.budget_bytes = budget_bytes  # splice.measure's transient-block budget (--sae-memory-budget)
        self.boot = boot
        self.seed = boot.seed  # random-direction seed of the splice variants
        self.batch_size = batch_size
        # precision.py's policy; `autocast` (deprecated) still names one where it is not "none"
        self.precision = AUTOCAST[autocast] if autocast != "none" else precision
        self.record_series = record_series or (lambda s: None)
        self.record_fact = record_fact or (lambda f: None)
        self.progress = progress  # suspends pytest's capture around a measurement (a context manager factory)
        self.line = line  # progress lines per SAE and batch (progress.py); None: the library's tqdm bar, if any
        self.eager = eager  # measure every hook on first use (one clean pass serves all)
        self._m: Measurements | None = None
        self.reencode_seqs = reencode_seqs
        self._re: Measurements | None = None

    def measurements(self, hooks: list[str] | None = None) -> Measurements:
        """Measurements covering `hooks` (default: every hook); missing hooks are measured together, each with
        the variants the run's claim tests read there (`reads`; a read of any other is measured on demand)."""
        want = list(hooks) if hooks is not None else self.subject.sae_ids
        have = set() if self._m is None else set(self._m.sae_ids)
        missing = [h for h in self.subject.sae_ids if h in want and h not in have]
        if missing:
            if self.eager and self._m is None:
                held = set(self.subject.sae_ids if self.owned is None else self.owned) | set(missing)
                missing = [h for h in self.subject.sae_ids if h in held]
            variants = self.variants()
            if self.reads is not None:
                variants = {h: self.reads.variants_for(h, variants) for h in missing}
            # `progress` suspends pytest's capture, so the bar reaches the terminal
            with self.progress() if self.progress else contextlib.nullcontext():
                new = measure(self.subject, missing, variants, self.batch_size, self.seed,
                              precision=self.precision, **self._shown(),
                              budget_bytes=self.budget_bytes)
                self._done(f"{self.subject.name}: measured {len(missing)} SAEs")
            first = self._m is None
            self._m = new if self._m is None else _merge(self._m, new, self.subject.sae_ids)
            self._m.on_missing = self._measure_unread
            if first and self.model_facts:
                w_pos = self.subject.model.W_pos.detach().float().cpu().numpy() \
                    if self.subject.has_learned_positions else None
                for f in model_facts(self.subject.name, self._m, w_pos, self.boot):
                    self.record_fact(f)
            for h in missing:
                if self.owned is not None and h not in self.owned:
                    continue  # measured for a row of this shard; the shard that holds it records it
                self._record_series(h)
                for f in sae_facts(self.subject.name, self._m, h, self.boot):
                    self.record_fact(f)
        return self._m

    def _measure_unread(self, variant: str, hook: str) -> dict[str, np.ndarray] | None:
        """A claim test read a variant that no selected test's marker declares at this hook: measure it now, in
        a pass of its own (same sequences, seed and kernels), and say how to share the main pass instead."""
        m = self._m
        if (m is None or hook not in m.sae_ids or variant not in self.variants()
                or not variants_at(self.subject, hook, [variant])):
            return None  # not a variant this run splices here: Measurements.get says what was measured
        if (variant, hook) in m.metrics:  # measured since the caller's Measurements were merged into m
            return m.metrics[(variant, hook)]
        if (variant, hook) not in self._unread:
            self._unread.add((variant, hook))
            warnings.warn(f"variant {variant} at {self.subject.name}/{hook} was read, but no selected claim test "
                          f"declares it there (@pytest.mark.claim(..., reads=(...)) declares the variants a test reads "
                          f"at its own row's SAE id, or at every id for scopes without a row per hook): measured now "
                          f"in a pass of its own; add {variant!r} to the reads of the test that reads it",
                          RuntimeWarning, stacklevel=4)
        with self.progress() if self.progress else contextlib.nullcontext():
            new = measure(self.subject, [hook], [variant], self.batch_size, self.seed, precision=self.precision,
                          **self._shown(), budget_bytes=self.budget_bytes)
        m.metrics.update(new.metrics)
        return new.metrics[(variant, hook)]

    def _shown(self) -> dict:
        """measure()'s progress arguments: lines when the run shows them, else no bar (a claims run)."""
        if self.line is not None:
            return {"progress": False, "on_step": self.line.step}
        return {"progress": self.progress is not None}

    def _done(self, text: str) -> None:
        if self.line is not None:
            self.line.done(text)

    def variants(self) -> tuple[str, ...]:
        """The variants asked for: the claims' and the control's. Which apply to each SAE (W_pos variants only
        at residual hooks of learned-position models, the control where there is one) is splice.variants_at's
        decision, per SAE."""
        return variant_names(measured_by_default=True) + (
            variant_names(needs_control=True) if self.subject.full_context_saes else ())

    def reencode_measurements(self, hooks: list[str]) -> Measurements:
        """`sae`, `reencode` and `reencode_2x` on the first `reencode_seqs` sequences, in a call of their own, so the
        costly sparse coding stays bounded and its statistics stay paired with the SAE's on sequences."""
        return self._first_seqs(hooks, ("sae", "reencode", "reencode_2x"), "re-encoded")

    def oracle_measurements(self, hooks: list[str]) -> Measurements:
        """`sae`, `oracle_support` and, where the SAE has a control, `full_context_oracle_support` on the same first
        `reencode_seqs` sequences as reencode_measurements (a pursuit per token, bounded the same way)."""
        return self._first_seqs(hooks, ("sae", "oracle_support", "full_context_oracle_support"),
                                "split by oracle supports")

    def _first_seqs(self, hooks: list[str], variants: tuple[str, ...], what: str) -> Measurements:
        """The costly variants on the first `reencode_seqs` sequences, each (variant, SAE id) measured once and
        kept in one Measurements (the same sequences, so their statistics pair with the SAE's)."""
        have = set() if self._re is None else set(self._re.metrics)
        missing = [h for h in hooks
                   if any((v, h) not in have for v in variants_at(self.subject, h, variants))]
        if missing:
            n = min(self.reencode_seqs, int(self.subject.tokens.shape[0]))
            with self.progress() if self.progress else contextlib.nullcontext():
                new = measure(self.subject, missing, variants, self.batch_size, self.seed,
                              precision=self.precision, **self._shown(), n_seqs=n,
                              budget_bytes=self.budget_bytes)
                self._done(f"{self.subject.name}: {what} {len(missing)} SAEs on {n} sequences")
            self._re = new if self._re is None else _merge(self._re, new, self.subject.sae_ids)
        return self._re

    def _record_series(self, hook: str) -> None:
        m = self._m
        name, ctx = self.subject.name, m.context_sizes[hook]
        full = _by_position(m.get("full_context_sae", hook, "dce")) if ("full_context_sae", hook) in m.metrics \
            else None
        self.record_series(PositionCurves(name, hook, ctx, {
            v: _by_position(m.get(v, hook, "dce")) for v in variant_names(position_curve=True)
            if (v, hook) in m.metrics
        }, full))
        self.record_series(L0Curve(name, hook, ctx, _by_position(m.get("sae", hook, "l0"))))
        act = m.activation[hook]
        last = m.n_positions  # the positions every statistic reads (instruments.Quantity)
        self.record_series(HookNorms(name, hook, _finite_mean(act["x_norm"][:, 1:last]),
                                     _finite_mean(act["wpos_share"][:, 1:last]), self._wpos_norm()))
        if m.n_positions > ctx:
            ex = excess(m, hook, boot=self.boot)
            rec = {}
            for v in variant_names(repair=True):
                if (v, hook) in m.metrics:
                    iv = recovery(m, hook, v, self.boot)
                    rec[v] = [iv.estimate, iv.low, iv.high]
            self.record_series(Recoveries(name, hook, rec, [ex.estimate, ex.low, ex.high]))

    def _wpos_norm(self) -> float | None:
        """Mean ||W_pos[p]|| over positions 1..ctx-1 of the shortest context, for the norms figure."""
        if not self.subject.has_learned_positions:
            return None
        ctx = min(self.subject.context_sizes.values())
        w = self.subject.model.W_pos.detach()[1:ctx].float()
        return float(w.norm(dim=1).mean())


def _finite_mean(arr: np.ndarray) -> float:
    """Mean over defined tokens (BOS is NaN); NaN where nothing is defined (W_pos share of a rotary model)."""
    finite = np.isfinite(arr)
    return float(arr[finite].mean()) if finite.any() else float("nan")


def _by_position(arr: np.ndarray) -> list[float]:
    """Mean over sequences per position; NaN where a metric is undefined (e.g. L0 at BOS)."""
    if np.all(np.isnan(arr)):
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [float(v) for v in np.nanmean(arr, axis=0)]


def _merge(a: Measurements, b: Measurements, order: list[str]) -> Measurements:
    hooks = [h for h in order if h in set(a.sae_ids) | set(b.sae_ids)]
    return Measurements(subject=a.subject, sae_ids=hooks, variants=list(dict.fromkeys([*a.variants, *b.variants])),
                        context_sizes={**a.context_sizes, **b.context_sizes}, clean_ce=a.clean_ce,
                        metrics={**a.metrics, **b.metrics}, activation={**a.activation, **b.activation},
                        clusters=a.clusters, position_subspaces={**a.position_subspaces, **b.position_subspaces})
