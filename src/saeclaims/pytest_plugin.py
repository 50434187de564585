"""pytest wiring for sae-claims (entry point `pytest11: saeclaims`): options, markers, parametrisation,
the `claim` fixture and the report at the end. Behaviour lives in `session.py` and `fixture.py`.

Loading this module costs almost nothing (Hypothesis's plugin is the model): it imports pytest, the
catalogue and the settings, never torch, scipy, matplotlib or sae_lens, because every pytest run in an
environment where the package is installed loads it. The run's `ClaimSession` (and with it the heavy
modules) is made on first need: when a claim test is collected, or claims are registered.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pytest

from .catalog import CATALOG, NO_HOOK
from .marker import claim_id, parsed
from .settings import AUTOCAST_MEANS, PRECISION_CHOICES, RunSettings
from .xdist_groups import plain_nodeid

if TYPE_CHECKING:
    from .fixture import ClaimFixture
    from .session import ClaimSession

SESSION_KEY = pytest.StashKey["ClaimSession"]()
SETTINGS_KEY = pytest.StashKey[RunSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("saeclaims", "SAE claims")
    g.addoption("--sae-subject", action="append", default=None,
                help="subject to test: organism (default), local:DIR, or RELEASE[:id,id] (repeatable)")
    g.addoption("--sae-device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.addoption("--n-seqs", type=int, default=None, help="evaluation sequences (default: all shipped)")
    g.addoption("--seq-len", type=int, default=None, help="tokens per sequence (default: the evaluation set's)")
    g.addoption("--sae-seed", type=int, default=0, help="seed for bootstraps and random directions")
    g.addoption("--family-confidence", type=float, default=0.95,
                help="joint confidence of all the run's intervals (Bonferroni over the claim family)")
    g.addoption("--n-resamples", type=int, default=2000,
                help="bootstrap resamples, at least (an interval gets enough for 10 replicates beyond each end)")
    g.addoption("--sae-batch-size", type=int, default=16, help="sequences per splice batch")
    g.addoption("--sae-memory-budget", type=float, default=None, metavar="MiB",
                help="largest transient block a splice step allocates (default: 8 MiB on CPU, 1024 on CUDA); "
                     "the report shows the run's peak memory")
    g.addoption("--sae-precision", choices=PRECISION_CHOICES, default=None,
                help="auto (default: bf16 forwards, SAEs and vocabulary matmuls with float32 losses and statistics "
                     "on CUDA; fp32 elsewhere), fp32 (the audit mode, TF32 off), tf32, bf16")
    g.addoption("--autocast", choices=tuple(AUTOCAST_MEANS), default=None,
                help="deprecated: use --sae-precision (none: fp32, bf16: bf16)")
    g.addoption("--text-file", default=None, help="evaluation text for release subjects (offline)")
    g.addoption("--sae-report", default=None,
                help="where to write REPORT.md (default: beside the ini file, else in the directory pytest runs in)")
    g.addoption("--no-sae-report", action="store_true", help="do not write REPORT.md")
    g.addoption("--sae-ledger-dir", default=None,
                help="expected verdicts (default: claims/expected beside the ini file, else in the directory pytest "
                     "runs in)")
    g.addoption("--baseline", default=None, help="a previous report.json: report each row's drift with an interval")
    g.addoption("--baseline-any-subject", action="store_true", help="compare with a baseline of another subject")
    g.addoption("--fail-on-drift", action="store_true", help="fail the tests of rows that drifted from --baseline")
    g.addoption("--reencode-seqs", type=int, default=16,
                help="sequences the costly re-encoding claim is measured on (default 16)")
    g.addoption("--accept-published-mismatch", action="store_true",
                help="judge a sae_lens release although its SAEs' in-context L0 or explained variance differ from "
                     "the published values (shown at the top of REPORT.md)")
    g.addoption("--sae-progress", choices=("auto", "on", "off"), default="auto",
                help="a progress line per SAE while the run measures, past pytest's capture (auto: unless -q or "
                     "in an xdist worker; rewritten in place on a terminal, one line every few seconds in a log)")
    g.addoption("--sae-shard", default=None, metavar="K/N",
                help="judge only shard K of N: the run's SAEs cut into N contiguous blocks, each row with its SAEs "
                     "(python -m saeclaims merge DIR... joins the shards' reports into one)")
    parser.addini("sae_ledger_dir", "directory of expected-verdict ledgers, relative to the ini file's folder")
    parser.addini("sae_subject", "default subjects (one per line)", type="linelist")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(id, reference=None, reads=None): a claim test, judged against the "
                                       "registered claim `id` (saeclaims.register_claim); reads: the splice "
                                       "variants it reads (default: all), the only ones the run measures for it")
    if not config.pluginmanager.hasplugin("xdist"):
        # claim tests carry xdist_group markers (for --dist loadgroup); without xdist nobody registers them
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's group (set on claim tests by saeclaims)")
    elif getattr(config, "workerinput", None) is not None:
        from .xdist_groups import GroupIds

        config.pluginmanager.register(GroupIds(), "saeclaims-xdist-groups")
    settings = RunSettings.from_config(config)
    settings.validate()  # bad options: one usage error before anything is collected
    config.stash[SETTINGS_KEY] = settings
    config.pluginmanager.register(_RunHooks(config), "saeclaims-run")
    worker_threads(config)


def worker_threads(config: pytest.Config) -> None:
    """N xdist workers x all cores each oversubscribes the CPU many times over; share the cores out. Only where
    torch is loaded (this module never imports it): at configure, after collection, and when a session starts."""
    worker = getattr(config, "workerinput", None)
    torch = sys.modules.get("torch")
    if worker is None or torch is None:
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(worker.get("workercount", 1))))


def _session(config: pytest.Config) -> ClaimSession:
    """The run's session, made on first need."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        from .session import ClaimSession  # lazy: torch and scipy load only for claim runs

        session = config.stash[SESSION_KEY] = ClaimSession(config, settings=config.stash[SETTINGS_KEY])
        worker_threads(config)
    return session


def _started(config: pytest.Config) -> ClaimSession | None:
    """The session if a claim run made one (None: this pytest run has nothing to do with claims)."""
    return config.stash.get(SESSION_KEY, None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    mark = metafunc.definition.get_closest_marker("claim")
    cid = claim_id(mark)
    if cid is None or "claim" not in metafunc.fixturenames or cid not in CATALOG:
        return  # a miswritten marker is reported once, with every other problem, at the end of collection
    session = _session(metafunc.config)
    claim = CATALOG.get(cid)
    reference = mark.kwargs.get("reference")
    if reference is not None:
        params, ids = [(reference, claim.scope_info.row or "model")], [reference]
    else:
        params, ids = [], []
        for spec in session.settings.subjects:
            rows = session.rows(claim, spec) or [NO_HOOK]
            params += [(spec, r) for r in rows]
            ids += [f"{spec}-{r}" for r in rows]
    metafunc.parametrize(("sae_subject", "sae_hook"), params, ids=ids)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before `-k`/`-m` deselect: check every claim marker once, fix the family, read the ledgers, and
    group claim tests by subject and hook for `--dist loadgroup`."""
    if len(CATALOG) or any(item.get_closest_marker("claim") is not None for item in items):
        _session(config).collect_items(items)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The xdist controller never collects: it checks the options that name files (subjects, a baseline) here,
    once, so a bad one is one usage error and not one per worker. The default subject needs no check."""
    config = session.config
    settings = config.stash[SETTINGS_KEY]
    named = config.getoption("sae_subject") or config.getini("sae_subject")
    if config.pluginmanager.hasplugin("dsession") and (named or settings.baseline is not None):
        _session(config).check_subjects()
    if settings.shard is not None:
        _session(config).check_shard()


def pytest_collection_finish(session: pytest.Session) -> None:
    worker_threads(session.config)  # test modules have imported torch by now, if they use it
    cs = _started(session.config)
    if cs is not None:
        cs.note_reads(session.items)
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and not cs.is_worker and cs.collected:
            for line in cs.ledger_lines():  # which ledger judges the run: a moved rootdir cannot hide it
                tr.write_line(line)
        cs.load_selected(session.items)


@pytest.fixture
def sae_subject(request) -> str:
    raise pytest.UsageError(f"{request.node.nodeid} uses sae_subject without a @pytest.mark.claim marker")


@pytest.fixture
def sae_hook(request) -> str:
    raise pytest.UsageError(f"{request.node.nodeid} uses sae_hook without a @pytest.mark.claim marker")


@pytest.fixture
def claim(request, sae_subject: str, sae_hook: str) -> ClaimFixture:
    """The claim this test judges, bound to its subject and hook (see `saeclaims.fixture.ClaimFixture`)."""
    from .fixture import ClaimFixture, RunAccess  # lazy, as the session: see the module's docstring

    session = _session(request.config)
    marker = parsed(request.node)
    if marker is None:  # collection refuses a run with a miswritten marker, so only a bypassed check lands here
        raise pytest.UsageError(f"{request.node.nodeid}: its claim marker was not checked at collection")
    run = RunAccess(session.subject, session.workbench, lambda: session.bootstrap)
    fixture = ClaimFixture(CATALOG.get(marker.id), sae_subject, sae_hook, run, session.recorder,
                           reference=marker.reference is not None, nodeid=plain_nodeid(request.node.nodeid),
                           record_property=lambda k, v: request.node.user_properties.append((k, v)))
    fixture.require_hook()
    fixture.require_valid_instrument()
    if not fixture.reference:
        session.subject(sae_subject)  # loaded once per run; a failed load fails here, at setup, in one line
    return fixture


@pytest.fixture(scope="session")
def sae_device(pytestconfig):
    """The run's torch device (GPU when present, else CPU; --sae-device overrides)."""
    return _session(pytestconfig).device


class _RunHooks:
    """Hooks that are not given the config: test outcomes, and evidence from xdist workers."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """--sae-shard K/N: after -k and -m have deselected, keep shard K's tests (shards.py)."""
        cs = _started(config)
        if cs is not None and config.stash[SETTINGS_KEY].shard is not None:
            cs.select_shard(config, items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "claim" in report.keywords:
            _session(self.config).recorder.record_outcome(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        payload = getattr(node, "workeroutput", {}).get("saeclaims")
        if payload:
            _session(self.config).merge_worker_payload(payload)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    cs = _started(config)
    if cs is None:
        return
    if cs.is_worker:
        config.workeroutput["saeclaims"] = cs.worker_payload()
        return
    cs.closing_line = cs.finish(exitstatus)
    if cs.report_failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR  # the run's output was not written: not a success


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    line = getattr(_started(config), "closing_line", None)
    if line:
        terminalreporter.write_sep("-", "saeclaims")
        terminalreporter.write_line(line)
