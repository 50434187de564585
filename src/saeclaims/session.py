"""One claims run: its settings, the family of intervals, loaded subjects and workbenches, ledgers, the
evidence store, the xdist payload and the report at the end. The pytest plugin only wires this in."""

from __future__ import annotations

import contextlib
import json
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch

from . import marker as claim_marker
from .baseline import Baseline, changed_saes, compare_runs
from .catalog import CATALOG, NO_HOOK, Catalog, Claim
from .ledger import Ledger, LedgerError, ledger_file, load_ledger
from .merge import SHARD_FILE, file_sha256, shard_payload
from .preflight import MISMATCH, PublishedCheck, PublishedMismatchError, check_published, mismatch_message
from .progress import ProgressLine
from .provenance import peak_memory_mib, subject_record
from .reads import VariantReads, reads_problem
from .recording import Recorder
from .report import collect_header, write_report
from .schema import ReportFileError, ShardRecord
from .settings import RunSettings
from .shards import ShardError, ShardPlan
from .stats import Bootstrap, bonferroni_confidence
from .store import EvidenceStore
from .subjects import SubjectError, describe_subject, load_subject
from .workbench import Workbench


@dataclass(frozen=True)
class Family:
    """All intervals a run may judge: registered claims x each subject's rows (+ reference rows).

    It depends on the catalogue and the subjects, never on `-k` or which files are selected, so a
    partial run judges each row at the same confidence as the full run.
    """

    rows: dict[str, int]
    family_confidence: float

    @property
    def size(self) -> int:
        return sum(self.rows.values())

    @property
    def confidence(self) -> float:
        return bonferroni_confidence(self.family_confidence, self.size)


def resolve_device(config: pytest.Config, requested: str | None):
    """The run's device; under xdist, worker i is pinned to cuda:i when there are several GPUs."""
    dev = requested
    if dev is None:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    worker = getattr(config, "workerinput", {}).get("workerid")
    if dev == "cuda" and worker and torch.cuda.device_count() > 1:
        dev = f"cuda:{int(worker.removeprefix('gw')) % torch.cuda.device_count()}"
    return torch.device(dev)


class ClaimSession:
    def __init__(self, config: pytest.Config, catalog: Catalog = CATALOG, settings: RunSettings | None = None) -> None:
        self.config = config
        self.catalog = catalog
        if settings is None:
            settings = RunSettings.from_config(config)
            settings.validate()
        self.settings = settings
        self.store = EvidenceStore()
        self.t0 = time.time()
        self.family: Family | None = None
        self._infos: dict[str, object] = {}
        self._subjects: dict[str, object] = {}
        self._failed: dict[str, str] = {}
        self._workbenches: dict[str, object] = {}
        self.reads: dict[str, VariantReads] = {}  # per subject, what the selected claim tests read (note_reads)
        self._ledgers: dict[str, Ledger] = {}
        self.published: list[PublishedCheck] = []  # the preflight rows of release subjects loaded here
        self.worker_peak: dict[str, float] = {}  # peak memory of xdist workers (their payloads)
        self.is_worker = hasattr(config, "workerinput")
        self.problems: list[str] = []
        self.baseline: Baseline | None = None
        self.collected = False
        self.report_failed = False  # the report could not be written: the run fails with one line
        self.recorder = Recorder(self.store, catalog, self.ledger, lambda: self.baseline,
                                 lambda: self.bootstrap.confidence, settings.seed, settings.n_resamples,
                                 settings.fail_on_drift)
        self.closing_line: str | None = None
        self._plan: ShardPlan | None = None
        self._all_reads: dict[str, VariantReads] | None = None  # a shard: what the whole run's tests read

    # ------------------------------------------------------------ collection

    def load_baseline(self) -> None:
        """Read --baseline once (a bad file: one usage error, before any test runs)."""
        if self.settings.baseline is None or self.baseline is not None:
            return
        try:
            self.baseline = Baseline.load(self.settings.baseline, self.settings.subjects,
                                          self.settings.baseline_any_subject)
        except ReportFileError as exc:
            raise pytest.UsageError(f"--baseline: {exc}") from None

    def describe(self, spec: str):
        """A subject's hooks, read without loading it (cached). A subject that cannot be described is
        remembered and reported once, as a usage error at the end of collection."""
        if spec not in self._infos:
            try:
                self._infos[spec] = describe_subject(spec)
            except (SubjectError, OSError, ValueError) as exc:
                self._infos[spec] = None
                self.problems.append(f"--sae-subject {spec}: {exc}")
        return self._infos[spec]

    def check_subjects(self) -> None:
        """Describe every subject and read the baseline now (the xdist controller, which never collects,
        calls this)."""
        self.load_baseline()
        for spec in self.settings.subjects:
            self.describe(spec)
        self.check_text_file()
        if self.problems:
            raise pytest.UsageError("\n".join(dict.fromkeys(self.problems)))

    def check_text_file(self) -> None:
        """--text-file given where no subject of the run reads text (they bring their own evaluation tokens)
        would be ignored silently: a problem, reported with the others."""
        text = self.settings.text_file
        if text is None:
            return
        infos = {spec: self._infos.get(spec) for spec in self.settings.subjects}
        if any(i is None or i.reads_text is not False for i in infos.values()):
            return  # a subject that reads text, or one whose source does not say (or could not be described)
        self.problems.append(f"--text-file {text} would be ignored: no subject of this run reads evaluation text "
                             f"(each of {', '.join(infos)} brings its own tokens; only sae_lens releases and "
                             "local:DIR without eval_tokens.npy read it); leave the option out")

    def rows(self, claim: Claim, spec: str) -> list[str]:
        info = self.describe(spec)
        return [] if info is None else claim.rows(info)

    def collect_items(self, items: list[pytest.Item]) -> None:
        """Every claim marker checked at once (one usage error listing all problems), then the family."""
        self.load_baseline()
        problems, seen, tested = [], {}, set()
        for item in items:
            marker = item.get_closest_marker("claim")
            if marker is None:
                continue
            if not marker.args:
                problems.append(f"{item.nodeid}: @pytest.mark.claim needs the claim id")
                continue
            cid = marker.args[0]
            if cid not in self.catalog:
                problems.append(f"{item.nodeid}: claim {cid!r} is not registered; register it with saeclaims."
                                f"register_claim(...) in a conftest.py (registered: {', '.join(self.catalog.ids)})")
                continue
            bad_reads = reads_problem(marker.kwargs.get("reads"))
            if bad_reads:
                problems.append(f"{item.nodeid}: {bad_reads}")
            ref = marker.kwargs.get("reference")
            if ref is not None and ref not in self.catalog.get(cid).references:
                problems.append(f"{item.nodeid}: reference {ref!r} is not among claim {cid}'s references")
            tested.add(cid)
            params = item.callspec.params if hasattr(item, "callspec") else {}
            if "sae_subject" not in params:
                problems.append(f"{item.nodeid}: a claim test must use the `claim` fixture")
                continue
            key = (cid, params["sae_subject"], params["sae_hook"])
            if key in seen and params["sae_hook"] != NO_HOOK:
                problems.append(f"{item.nodeid}: claim {cid} on {key[1]}/{key[2]} is already tested by "
                                f"{seen[key]}; one test per claim and row (give the second claim its own id)")
            seen[key] = item.nodeid
            if not bad_reads:
                claim_marker.record(item, marker, params)
            group = params["sae_subject"]
            if self.catalog.get(cid).scope_info.per_hook:
                group += f"::{params['sae_hook']}"  # --dist loadgroup: a worker measures only its hooks
            item.add_marker(pytest.mark.xdist_group(group))
        self.check_text_file()
        if self.problems:
            raise pytest.UsageError("\n".join(dict.fromkeys(self.problems)))
        if problems:
            raise pytest.UsageError("claim tests are miswritten:\n  " + "\n  ".join(problems))
        if tested or len(self.catalog):
            self.finish_collection(tested)
        self.collected = True

    def finish_collection(self, tested: set[str]) -> None:
        """Fix the family, read and check every ledger, and note registered claims with no test."""
        rows = {c.id: sum(len(self.rows(c, s)) for s in self.settings.subjects) + len(c.references)
                for c in self.catalog}
        self.family = Family(rows, self.settings.family_confidence)
        self.store.family_size = self.family.size
        self.store.claims = [c.to_dict() for c in self.catalog]
        self.store.untested_claims = [c for c in self.catalog.ids if c not in tested]
        for spec in self.settings.subjects:
            self.ledger(spec)

    def note_reads(self, items: list[pytest.Item]) -> None:
        """After deselection, in every process that runs tests: per subject and SAE id, the variants the selected
        claim tests read (their markers' `reads=`; a test of a scope without a row per hook may read any SAE id).
        The workbench splices those (reads.py). A shard measures the SAEs it holds as the whole run would (what
        every test of the run reads there), and others only for what its own rows read."""
        if not self.collected:
            return
        self.reads = self._reads_of(items)
        spec = self.settings.shard_spec
        if spec is None or self._all_reads is None:
            return
        for subject, everyone in self._all_reads.items():
            mine = self.reads.setdefault(subject, VariantReads())
            for i in self.plan.sae_ids_of(spec.index, subject):
                if i in everyone.by_id:
                    mine.by_id[i] = everyone.by_id[i]

    def _reads_of(self, items: list[pytest.Item]) -> dict[str, VariantReads]:
        reads: dict[str, VariantReads] = {}
        for item in items:
            marker = claim_marker.parsed(item)
            if marker is None or marker.reference is not None:
                continue
            info = self.describe(marker.subject)
            if info is None:
                continue
            claim = self.catalog.get(marker.id)
            if claim.failed_validation:  # never run (require_valid_instrument): nothing of it is worth splicing
                continue
            per_hook = claim.scope_info.per_hook
            ids = [marker.sae_id] if per_hook and marker.sae_id in info.sae_ids else list(info.sae_ids)
            reads.setdefault(marker.subject, VariantReads()).add(ids, marker.reads)
        return reads

    # ------------------------------------------------------------ shards (--sae-shard K/N, shards.py)

    @property
    def plan(self) -> ShardPlan:
        """How the run's SAEs split into the shards (only asked when --sae-shard is given)."""
        if self._plan is None:
            spec = self.settings.shard_spec
            infos = {s: self.describe(s) for s in self.settings.subjects}
            ids = {s: info.sae_ids if info is not None else [] for s, info in infos.items()}
            try:
                self._plan = ShardPlan.make(spec.count if spec else 1, ids)
            except ShardError as exc:
                raise pytest.UsageError(str(exc)) from None
        return self._plan

    def check_shard(self) -> None:
        """More shards than SAEs: one usage error, before any test (or xdist worker) starts."""
        if self.settings.shard is not None:
            self.plan.units  # noqa: B018  (made on first use; refusing here is the point)

    def shard_of_item(self, item: pytest.Item) -> int:
        """The shard that runs a test: a claim test's row decides (shards.py); other tests run in shard 1."""
        marker = claim_marker.parsed(item)
        if marker is None:
            return 1
        per_sae = self.catalog.get(marker.id).scope_info.per_hook
        return self.plan.shard_of_row(None if marker.reference is not None else marker.subject, marker.sae_id,
                                      per_sae)

    def select_shard(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """After -k/-m: keep this shard's tests (deselected ones are reported as pytest deselects), remembering
        what the whole selection reads so the shard's own SAEs are measured exactly as in one run."""
        spec = self.settings.shard_spec
        if spec is None or not self.collected:
            return
        self._all_reads = self._reads_of(items)
        keep, drop = [], []
        for item in items:
            (keep if self.shard_of_item(item) == spec.index else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def _holds_row_key(self, key: str) -> bool:
        """Whether this shard holds a baseline row (`subject|claim|sae_id`; a claim the catalogue does not know
        counts as per SAE when its row is an SAE id)."""
        subject, claim, sae_id = key.split("|", 2)
        per_sae = self.catalog.get(claim).scope_info.per_hook if claim in self.catalog else \
            self.plan.shard_of_sae(subject, sae_id) is not None
        return self.plan.shard_of_row(subject, sae_id, per_sae) == self.settings.shard_spec.index

    def holds(self, spec: str) -> tuple[list[str] | None, bool]:
        """The SAE ids of a subject whose facts and figure series this process records (None: all), and whether
        it records the subject's model facts: a shard records what it holds, so merged shards record each once."""
        shard = self.settings.shard_spec
        if shard is None:
            return None, True
        return self.plan.sae_ids_of(shard.index, spec), self.plan.model_shard(spec) == shard.index

    def load_selected(self, items: list[pytest.Item]) -> None:
        """After deselection: load every subject a selected claim test needs, once, before any test runs,
        so a subject that cannot be loaded stops the run with one message (usage error, exit 4)."""
        if self.config.option.collectonly or not self.collected or self.is_worker:
            # pytest calls this even after collection failed (keep the first error); an xdist worker cannot
            # stop the run with a usage error, so there each test fails fast on the remembered failure
            return
        needed = []
        for item in items:
            marker = claim_marker.parsed(item)
            if marker is not None and marker.reference is None and marker.subject not in needed:
                needed.append(marker.subject)
        for spec in needed:  # what the cfg.json files tell, before any model loads
            info = self.describe(spec)
            if info is not None and info.context_sizes and self.settings.seq_len is not None:
                _check_beyond_context(self.settings.seq_len, sorted(set(info.context_sizes.values())), spec)
        for spec in needed:
            t0 = time.time()
            self._say(f"loading subject {spec} (model and SAEs)")
            try:
                subject = self.subject(spec)
            except Exception as exc:
                if isinstance(exc, PublishedMismatchError):
                    raise pytest.UsageError(self._failed[spec]) from None
                raise pytest.UsageError(f"--sae-subject {spec} could not be loaded: {self._failed[spec]}") from exc
            _check_beyond_context(subject.seq_len, sorted(set(subject.context_sizes.values())), spec)
            self._say(f"loaded {spec} in {time.time() - t0:.0f} s; measuring its SAEs before the first claim test")

    @property
    def bootstrap(self) -> Bootstrap:
        if self.family is None:
            raise RuntimeError("the claim family is fixed at the end of collection")
        return Bootstrap(self.family.confidence, self.settings.seed, self.settings.n_resamples)

    # ------------------------------------------------------------ subjects

    @property
    def device(self):
        return resolve_device(self.config, self.settings.device)

    def subject(self, spec: str):
        """The loaded subject, once per run; a subject that failed to load is not tried again."""
        if spec in self._failed:
            pytest.fail(f"subject {spec} could not be loaded (not retried): {self._failed[spec]}", pytrace=False)
        if spec not in self._subjects:
            s = self.settings
            try:
                subj = load_subject(spec, device=str(self.device), n_seqs=s.n_seqs, seq_len=s.seq_len,
                                    text_file=s.text_file)
                self._preflight(spec, subj)
            except Exception as exc:
                # a published-statistics mismatch keeps its whole message (one line per SAE and statistic)
                self._failed[spec] = str(exc) if isinstance(exc, PublishedMismatchError) else _one_line(exc)
                self.store.failed_subjects[spec] = self._failed[spec]
                if self.collected and not self.is_worker:
                    raise
                pytest.fail(f"subject {spec} could not be loaded: {self._failed[spec]}", pytrace=False)
            self._subjects[spec] = subj
            self.store.subjects[spec] = subject_record(spec, subj, str(self.device))
        return self._subjects[spec]

    # ---- published-statistics preflight (issue 11 item 6; saeclaims.preflight)

    def _preflight(self, spec: str, subj) -> None:
        """A sae_lens release's in-context L0 and explained variance against the published values, before any
        claim is judged; a mismatch stops the run unless --accept-published-mismatch."""
        checks = check_published(subj, name=spec)
        if any(c.status == MISMATCH for c in checks) and not self.settings.accept_published_mismatch:
            raise PublishedMismatchError(mismatch_message(spec, checks))
        self._add_published(checks)

    def _add_published(self, checks: list[PublishedCheck]) -> None:
        """Keep each (subject, SAE, statistic) once: under xdist every worker that loads a subject checks it."""
        seen = {(c.subject, c.sae_id, c.statistic) for c in self.published}
        self.published += [c for c in checks if (c.subject, c.sae_id, c.statistic) not in seen]

    # ---- end of the preflight

    def workbench(self, spec: str):
        """Splice measurements for a subject, computed lazily per hook and shared by all its claims."""
        if spec not in self._workbenches:
            s = self.settings
            shown = s.shows_progress(self.is_worker, self._on_terminal())
            owned, model_facts = self.holds(spec)
            self._workbenches[spec] = Workbench(
                self.subject(spec), boot=self.bootstrap, batch_size=s.batch_size, precision=s.precision,
                record_series=self.store.add_series, record_fact=self.store.add_fact,
                progress=self._uncaptured if shown else None,
                line=ProgressLine(tty=self._on_terminal()) if shown else None,
                eager=not self.is_worker, reencode_seqs=s.reencode_seqs, budget_bytes=s.budget_bytes,
                reads=self.reads.get(spec), owned=owned, model_facts=model_facts)
        return self._workbenches[spec]

    def _say(self, text: str) -> None:
        """A progress line at collection (no capture then), where progress lines are shown."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and self.settings.shows_progress(self.is_worker, self._on_terminal()):
            tr.write_line(f"saeclaims: {text}")

    def _on_terminal(self) -> bool:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        return bool(getattr(tr, "isatty", False))

    @contextlib.contextmanager
    def _uncaptured(self):
        """Suspend pytest's capture (as its live logging and pdb do), so a bar reaches the terminal mid-test."""
        capman = self.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            sys.stderr.write("\n")  # off the test's progress line
            yield

    def ledger(self, spec: str) -> Ledger:
        """The subject's expected verdicts, read and checked once per run."""
        if spec not in self._ledgers:
            try:
                led = load_ledger(self.settings.ledger_dir, spec, self.catalog)
                if spec in self._infos:
                    info = self._infos[spec]
                    led.check_rows({c.id: self.rows(c, spec) for c in self.catalog},
                                   getattr(info, "hook_of", None) if info is not None else None)
            except LedgerError as exc:
                raise pytest.UsageError(str(exc)) from None
            self._ledgers[spec] = led
        return self._ledgers[spec]

    def ledger_path(self, spec: str) -> Path:
        return ledger_file(self.settings.ledger_dir, spec)

    def ledger_note(self, spec: str) -> str:
        """Which ledger judges the subject, and how many entries it has (REPORT.md's Run table)."""
        path = self._shown(self.ledger_path(spec))
        try:
            led = self.ledger(spec)  # read at collection; the xdist controller, which never collects, reads it here
        except pytest.UsageError:
            led = None
        if led is None or led.path is None:
            return f"{path}: no such file, every row is expected to hold"
        return f"{path}: {sum(len(t) for t in led.entries.values())} entries"

    def ledger_lines(self) -> list[str]:
        """The run header's lines: each subject's ledger and entry count, and a warning when the default ledger
        directory is missing or pytest's rootdir is not the project folder (then every row would silently be
        judged against "expected holds")."""
        s = self.settings
        lines = [f"saeclaims: ledger for {spec}: {self.ledger_note(spec)}" for spec in s.subjects]
        if not s.ledger_dir_given and not s.ledger_dir.is_dir():
            lines.append(f"saeclaims: WARNING: the default ledger directory {s.ledger_dir} does not exist, so every "
                         "row is expected to hold; run pytest from the project folder or pass --sae-ledger-dir DIR")
        root = Path(self.config.rootpath)
        if root.resolve() != s.project_dir.resolve():
            lines.append(f"saeclaims: pytest's rootdir is {root}, not {s.project_dir} (an option value written "
                         "with a space, like --text-file /tmp/x.txt, is read as a test path when pytest looks for "
                         f"it; write --text-file=PATH); the ledger and report resolve from {s.project_dir}")
        return lines

    def _shown(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.settings.project_dir.resolve()))
        except ValueError:
            return str(path)

    # ------------------------------------------------------------ end of run

    def worker_payload(self) -> str:
        payload = json.loads(self.store.to_json())
        payload["published"] = [asdict(c) for c in self.published]  # the preflight's rows (see _preflight)
        payload["peak_memory_mib"] = peak_memory_mib()
        return json.dumps(payload)

    def merge_worker_payload(self, text: str) -> None:
        self.store.merge_json(text)
        for k, v in json.loads(text).get("peak_memory_mib", {}).items():  # the largest over workers
            self.worker_peak[k] = max(v, self.worker_peak.get(k, 0.0))
        self._add_published([PublishedCheck(**c) for c in json.loads(text).get("published", [])])

    def finish(self, exitstatus: int) -> str | None:
        """Write the report when the run produced one; returns a line for the terminal."""
        if self.is_worker:
            return None
        s = self.settings
        if not s.write_report:
            return None
        keep = f"{s.report} left as it was"
        if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return f"saeclaims: run interrupted or stopped (exit {int(exitstatus)}); {keep}" if self.store.outcomes \
                else None
        if self.store.failed_subjects:
            return f"saeclaims: a subject failed to load ({', '.join(self.store.failed_subjects)}); {keep}"
        measured = [e for e in self.store.evidence if e.subject in self.store.subjects]
        not_applicable = [n for n in self.store.not_applicable if n.subject in self.store.subjects]
        if not measured and not not_applicable:
            return f"saeclaims: no claim was measured on a subject; {keep}" if self.store.outcomes else None
        # the devices the subjects were measured on (under xdist, the workers'), not this process's
        device = ", ".join(sorted({r.device for r in self.store.subjects.values() if r.device})) or "none"
        precision = precision_labels(s.precision, device)
        header = collect_header(
            subjects=dict(self.store.subjects), device=device, dtype=precision[1], precision=precision[0],
            seed=s.seed, family_confidence=s.family_confidence, family_size=self.store.family_size,
            wall_s=time.time() - self.t0, root=s.project_dir, options=s.as_options(),
            ledgers={spec: self.ledger_note(spec) for spec in self.store.subjects},
            published=[c for c in self.published if c.subject in self.store.subjects],
            peak_memory_mib={k: max(v, self.worker_peak.get(k, 0.0)) for k, v in peak_memory_mib().items()},
            command=shlex.join(["pytest", *self.config.invocation_params.args]))
        shard = s.shard_spec
        if shard is not None:
            header.shards = [ShardRecord(shard.index, shard.count, platform.node(), device, header.wall_s,
                                         header.command)]
        if self.baseline is not None:
            claims = {c["id"]: Claim.from_dict(c) for c in self.store.claims}
            fam = bonferroni_confidence(s.family_confidence, max(1, self.store.family_size))
            self.store.baseline = compare_runs(self.baseline, self.store.evidence, self.store.replicates, claims,
                                               {k: self.recorder.paired(k) for k in self.store.subjects}, fam, s.seed)
            self.store.baseline.changed_saes = changed_saes(self.baseline, self.store.subjects)
            if shard is not None:  # the rows another shard holds are not removed: that shard compares them
                self.store.baseline.removed = [k for k in self.store.baseline.removed if self._holds_row_key(k)]
        extra = None if shard is None else {SHARD_FILE: shard_payload(
            shard.index, shard.count, list(self.plan.units), header, self.store, file_sha256(s.baseline),
            {spec: file_sha256(self.ledger_path(spec)) for spec in s.subjects})}
        try:
            write_report(s.report, header, self.store, extra_files=extra)
        except OSError as exc:  # e.g. a report folder that became unwritable while the tests ran
            self.report_failed = True
            return f"saeclaims: could not write the report ({_one_line(exc)}); {keep}"
        if not measured:  # a selection where nothing applies still says why, in one line and in the report
            reasons = list(dict.fromkeys(n.reason for n in not_applicable))
            return (f"saeclaims: wrote {s.report}: no row was judged, all {len(not_applicable)} selected rows are not "
                    f"applicable ({reasons[0]}" + (f"; and {len(reasons) - 1} more reasons" if len(reasons) > 1 else "")
                    + ")")
        return (f"saeclaims: wrote {s.report} ({len(self.store.evidence)} evidence records"
                + (f", {len(not_applicable)} rows not applicable" if not_applicable else "") + ")")


def _check_beyond_context(seq_len: int, ctxs: list[int], spec: str) -> None:
    if seq_len <= min(ctxs) + 1:
        raise pytest.UsageError(
            f"--seq-len {seq_len} leaves no position beyond any SAE's training context ({ctxs}) "
            f"of subject {spec}; the context claims need --seq-len >= {min(ctxs) + 2}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def precision_labels(asked: str, devices: str) -> tuple[str, str]:
    """The precision a run used on its devices (`auto -> fp32 (cpu)`; one per device type) and the forwards' dtype
    for the header's dtype column (`none`, `bf16`, `fp16`)."""
    from .precision import resolve  # imports torch: only when a report is written

    kinds = [d.strip() for d in devices.split(",") if d.strip() and d.strip() != "none"] or ["cpu"]
    resolved = list(dict.fromkeys(resolve(asked, d) for d in kinds))
    forward = {"bf16": "bf16", "fp16": "fp16"}.get(resolved[0].resolved, "none")
    return ", ".join(dict.fromkeys(p.label for p in resolved)), forward
