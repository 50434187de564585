"""The `claim` fixture: one claim test's view of the run, bound to its claim, subject and hook.

A claim test names its claim once, in `@pytest.mark.claim("id")`, and the splice variants it reads in the
same marker (`reads=("sae", "shift_pos")`: the run splices only what its selected tests read, reads.py); the
fixture knows the rest (the parametrised subject and hook, the bootstrap settings) and offers the
applicability guards, `check(interval)` and `not_applicable(reason)`. Modelled on pytest-benchmark's
`benchmark` fixture, whose options come from its marker.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from .catalog import NO_HOOK, Claim
from .fact_measurement import control_gap
from .instruments import excess, excess_floor
from .measurements import Measurements
from .recording import Recorder
from .series import Series
from .stats import Bootstrap, Evidence, Interval, verdict
from .store import NotApplicable
from .subject_facts import CONTROL_GAP
from .subjects.core import Subject, is_residual, sae_architecture
from .workbench import Workbench

SAE_EXCESS = "excess dCE_sae(O) - dCE_sae(I)"  # the hook's premise (require_something_to_explain)


@dataclass(frozen=True)
class RunAccess:
    """What a claim test reads of its run: loaded subjects, their workbenches, the bootstrap settings."""

    subject: Callable[[str], Subject]
    workbench: Callable[[str], Workbench]
    bootstrap: Callable[[], Bootstrap]


class ClaimUsageError(RuntimeError):
    """A claim test uses the fixture wrongly (e.g. checks twice); the message says how to fix it."""


class ClaimFixture:
    def __init__(self, claim: Claim, subject_name: str, sae_id: str, run: RunAccess, recorder: Recorder,
                 reference: bool = False, nodeid: str = "",
                 record_property: Callable[[str, object], None] | None = None) -> None:
        self.nodeid = nodeid
        self._record_property = record_property or (lambda name, value: None)
        self.claim = claim
        self.subject_name = subject_name
        self.sae_id = sae_id  # the row: the SAE id of a per-SAE claim; a scope's single row ("model") otherwise
        self.reference = reference
        self._run = run
        self._recorder = recorder
        self.evidence: Evidence | None = None

    def __repr__(self) -> str:
        return f"<claim {self.claim.id} @ {self.subject_name}/{self.sae_id}>"

    # ------------------------------------------------------------ what the test reads

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def hook(self) -> str:
        """Deprecated: the row's SAE id is `sae_id` (the hook the SAE reads is `hook_point`)."""
        warnings.warn("claim.hook is deprecated: use claim.sae_id (the row's SAE id) or claim.hook_point (the hook "
                      "it reads)", DeprecationWarning, stacklevel=2)
        return self.sae_id

    @property
    def row(self) -> str:
        """Deprecated: `sae_id` is the row."""
        warnings.warn("claim.row is deprecated: use claim.sae_id", DeprecationWarning, stacklevel=2)
        return self.sae_id

    @property
    def hook_point(self) -> str:
        """The hook the row's SAE reads (e.g. blocks.1.hook_mlp_out), as opposed to its id."""
        return self.subject.hook_of(self.sae_id)

    @property
    def subject(self):
        if self.reference:
            raise ClaimUsageError(f"{self!r} is judged on the reference data {self.subject_name!r}, which is "
                                  "not a loadable subject; compute the statistic from the reference data")
        return self._run.subject(self.subject_name)

    @property
    def boot(self) -> Bootstrap:
        """Confidence (Bonferroni-split over the run's family), seed and resamples for every interval."""
        return self._run.bootstrap()

    @property
    def workbench(self):
        return self._run.workbench(self.subject_name)

    def measurements(self, hooks: list[str] | None = None):
        """Splice measurements at `hooks` (default: this test's hook, or every hook for single-row scopes)."""
        if hooks is None and self.claim.scope_info.per_hook:
            hooks = [self.sae_id]
        return self.workbench.measurements(hooks)

    def reencode_measurements(self, hooks: list[str] | None = None):
        """`sae` and `reencode` at this test's hook on the first --reencode-seqs sequences (re-encoding is
        costly; the row's n_seqs says how many were used)."""
        return self.workbench.reencode_measurements(hooks or [self.sae_id])

    def oracle_measurements(self, hooks: list[str] | None = None):
        """`sae`, `oracle_support` and the control's `full_context_oracle_support` at this test's hook on the same
        first --reencode-seqs sequences (a pursuit per token, as costly as re-encoding)."""
        return self.workbench.oracle_measurements(hooks or [self.sae_id])

    def add_series(self, series: Series) -> None:
        """Data for the report's figures (see `series.py` and `figures.py`)."""
        self._recorder.add_series(series)

    # ------------------------------------------------------------ applicability guards

    def not_applicable(self, reason: str, **premise: Any) -> NoReturn:
        """Record that the claim's premise is absent here (with the premise's own estimate) and skip."""
        __tracebackhide__ = True
        self._recorder.record_not_applicable(NotApplicable(self.claim.id, self.subject_name, self.sae_id, reason,
                                                          premise, self.nodeid))
        pytest.skip(f"{self.claim.id} not applicable to {self.subject_name}/{self.sae_id}: {reason}")

    def require_hook(self) -> None:
        __tracebackhide__ = True
        if self.sae_id == NO_HOOK:
            self.not_applicable(f"the subject has no SAE at this claim's hooks ({self.claim.scope_info.description})")

    def require_learned_positions(self) -> None:
        """W_pos instruments need learned absolute positions and, per SAE, a residual-stream hook (where
        W_pos[p] is a summand of the activation)."""
        __tracebackhide__ = True
        if not self.subject.has_learned_positions:
            self.not_applicable(f"the model's positions are {self.subject.model.cfg.positional_embedding_type}, "
                                "not a learned absolute W_pos")
        if self.claim.scope_info.per_hook and self.sae_id != NO_HOOK and not is_residual(self.hook_point):
            self.not_applicable(f"W_pos[p] is a summand of the residual stream only; this SAE reads "
                                f"{self.hook_point}", hook=self.hook_point)

    def one_sae_per_hook(self, ids: list[str]) -> list[str]:
        """`ids` with one SAE per hook, for statistics across layers; several SAEs at one hook make the
        comparison ambiguous, and the claim is then not applicable, naming them."""
        __tracebackhide__ = True
        by_hook: dict[str, list[str]] = {}
        for i in ids:
            by_hook.setdefault(self.subject.hook_of(i), []).append(i)
        shared = {h: v for h, v in by_hook.items() if len(v) > 1}
        if shared:
            h, v = next(iter(shared.items()))
            self.not_applicable(f"several SAEs read {h} ({', '.join(v)}): a comparison across layers needs one "
                                "SAE per hook; select one with RELEASE:id,id", hook=h, sae_ids=", ".join(v))
        return ids

    def require_beyond_context(self, sae_id: str | None = None) -> None:
        """Positions beyond the SAE's (default: this row's) training context must exist at the run's --seq-len."""
        __tracebackhide__ = True
        self.require_hook()
        ctx = self.subject.context_sizes[sae_id or self.sae_id]
        if self.subject.seq_len <= ctx + 1:
            self.not_applicable(f"--seq-len {self.subject.seq_len} leaves no position beyond the SAE's training "
                                f"context {ctx}: raise it above {ctx + 1}")

    def require_positive(self, premise: Interval, what: str) -> None:
        """A ratio over `premise` (e.g. the excess a recovery divides by) is judged only where the premise's
        own interval is wholly above 0; else the claim is not applicable, with the premise's estimate shown."""
        __tracebackhide__ = True
        if not premise.low > 0:
            shown = f"{premise.estimate:.4g} [{premise.low:.4g}, {premise.high:.4g}]"
            self.not_applicable(f"no {what} to divide by (its {premise.confidence:.2%} interval is not wholly "
                                "above 0)", **{what: shown})

    def require_substantial(self, premise: Interval, what: str, floor: float) -> None:
        """An excess a share is taken of must be significant (`require_positive`) and large enough to matter:
        its estimate at least `floor` (`instruments.excess_floor`, stated from the words); else not
        applicable, with the premise and the floor shown."""
        __tracebackhide__ = True
        self.require_positive(premise, what)
        if premise.estimate < floor:
            shown = f"{premise.estimate:.4g} [{premise.low:.4g}, {premise.high:.4g}]"
            self.not_applicable(f"the {what} is below its floor of {floor:.4g}: too small for a share of it to "
                                "mean anything", **{what: shown, "floor": f"{floor:.4g}"})

    def require_valid_instrument(self) -> None:
        """A claim whose instrument failed validation on its planted controls (`Claim.failed_validation`) is not
        run on real subjects: not applicable everywhere, naming the failed validation (the claim `fixture` asks
        this before the test body runs)."""
        __tracebackhide__ = True
        if self.claim.failed_validation:
            self.not_applicable(f"its instrument failed validation on planted controls: {self.claim.failed_validation}")

    def require_something_to_explain(self, m: Measurements) -> None:
        """The hook's one premise for every claim that explains, repairs or fixes (a share of) the SAE's failure
        beyond its context: the SAE's own excess dCE_sae(O) - dCE_sae(I), significant and at least its floor
        (`require_substantial`). Every such claim asks it the same way, so a hook is never said to have "nothing
        to explain" by one row and a degradation to fix by another; a control-relative share asks this first and
        its own denominator second."""
        __tracebackhide__ = True
        self.require_substantial(excess(m, self.sae_id, boot=self.boot), SAE_EXCESS, excess_floor(m, self.sae_id))

    def require_free_l0(self) -> None:
        """L0 statistics mean nothing for an SAE whose L0 is fixed by construction (TopK keeps k latents)."""
        __tracebackhide__ = True
        self.require_hook()
        sae = self.subject.saes[self.sae_id]
        arch = sae_architecture(sae)
        k = getattr(sae.cfg, "k", None)
        if k is not None and "topk" in str(arch).lower():
            self.not_applicable(f"the SAE's L0 is fixed by construction ({arch}, k = {k}), so its L0 cannot "
                                "rise beyond the context", architecture=str(arch), k=int(k))

    def require_full_context_sae(self) -> None:
        __tracebackhide__ = True
        self.require_hook()
        if self.sae_id not in self.subject.full_context_saes:
            self.not_applicable("the subject has no full-context SAE family (control) at this hook")
        if self.sae_id not in self.subject.saes:
            self.not_applicable("the release under test has no SAE at this control hook to compare with")

    def require_matched_control(self, m: Measurements) -> None:
        """Control-relative claims compare like with like: they apply only where the full-context control's
        in-context quality matches the SAE's (CE-loss scores on [1, ctx) within 0.01, the whole interval:
        `subject_facts.CONTROL_GAP`). A weaker control makes any SAE look good beside it."""
        __tracebackhide__ = True
        self.require_full_context_sae()
        gap = control_gap(m, self.sae_id, self.boot)
        if CONTROL_GAP.meets(gap.estimate, gap.low, gap.high) is not True:
            shown = f"{gap.estimate:.4g} [{gap.low:.4g}, {gap.high:.4g}]"
            self.not_applicable(f"the control is not shown to be like the SAE in context (|CE-loss score gap| on "
                                f"[1, ctx) not wholly <= {CONTROL_GAP.high:g} at {gap.confidence:.2%})",
                                control_ce_gap=shown)

    # ------------------------------------------------------------ the verdict

    def check(self, interval: Interval, **extra: Any) -> Evidence:
        """Judge the interval against the claim's threshold, record it, and compare with the ledger."""
        __tracebackhide__ = True
        if self.evidence is not None:
            raise ClaimUsageError(f"{self!r}: check() called twice in one test; one test judges one row "
                                  "(split the test, or parametrise it)")
        c = self.claim
        ledger = self._recorder.ledger(self.subject_name)
        ev = Evidence(
            claim=c.id, subject=self.subject_name, sae_id=self.sae_id, statistic=c.statistic,
            estimate=interval.estimate, ci_low=interval.low, ci_high=interval.high,
            confidence=interval.confidence, threshold=c.threshold, direction=c.direction,
            n_seqs=interval.n_seqs, n_tokens=interval.n_tokens,
            verdict=verdict(interval.low, interval.high, c.threshold, c.direction),
            expected=ledger.expected(c.id, self.sae_id), extra=extra, method=interval.method,
        )
        ev.agreement = ledger.agreement(ev.verdict, ev.expected, self._recorder.sample(self.subject_name))
        self.evidence = ev
        self._recorder.record(ev, interval.replicates)
        for name in ("statistic", "estimate", "ci_low", "ci_high", "confidence", "method", "direction", "threshold",
                     "verdict", "expected", "n_seqs", "n_tokens"):
            self._record_property(f"saeclaims.{name}", getattr(ev, name))  # into --junitxml
        drift = self._recorder.drift(ev, interval.replicates)
        if drift is not None:
            self._record_property("saeclaims.drift", f"{drift.difference:+.6g} [{drift.low:.6g}, {drift.high:.6g}]"
                                                     f" {drift.pairing}{' DRIFTED' if drift.drifted else ''}")
        failures = [ev.one_line()] if ev.agreement == "MISMATCH" else []
        if drift is not None and drift.drifted and self._recorder.fail_on_drift:
            failures.append(drift.one_line())
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        return ev
