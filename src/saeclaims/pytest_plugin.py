"""pytest wiring for sae-claims (entry point `pytest11: saeclaims`): options, markers, parametrisation,
the `claim` fixture and the report at the end. Behaviour lives in `session.py` and `fixture.py`."""

from __future__ import annotations

import pytest

from .catalog import CATALOG, ClaimError
from .fixture import NO_HOOK, ClaimFixture
from .session import ClaimSession, worker_threads

SESSION_KEY = pytest.StashKey[ClaimSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("saeclaims", "SAE claims")
    g.addoption("--sae-subject", action="append", default=None,
                help="subject to test: organism (default), local:DIR, or RELEASE[:id,id] (repeatable)")
    g.addoption("--sae-device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.addoption("--n-seqs", type=int, default=None, help="evaluation sequences (default: all shipped)")
    g.addoption("--seq-len", type=int, default=None, help="tokens per sequence (default: the shard's)")
    g.addoption("--sae-seed", type=int, default=0, help="seed for bootstraps and random directions")
    g.addoption("--family-confidence", type=float, default=0.95,
                help="joint confidence of all the run's intervals (Bonferroni over the claim family)")
    g.addoption("--n-resamples", type=int, default=2000,
                help="bootstrap resamples, at least (an interval gets enough for 10 replicates beyond each end)")
    g.addoption("--sae-batch-size", type=int, default=16, help="sequences per splice batch")
    g.addoption("--sae-memory-budget", type=float, default=None, metavar="MiB",
                help="largest transient block a splice step allocates (default: 8 MiB on CPU, 1024 on CUDA); "
                     "the report shows the run's peak memory")
    g.addoption("--autocast", choices=("none", "bf16", "fp16"), default="none",
                help="autocast dtype for forward passes (GPU)")
    g.addoption("--text-file", default=None, help="evaluation text for release subjects (offline)")
    g.addoption("--sae-report", default=None, help="where to write REPORT.md (default: <rootdir>/REPORT.md)")
    g.addoption("--no-sae-report", action="store_true", help="do not write REPORT.md")
    g.addoption("--sae-ledger-dir", default=None, help="expected verdicts (default: claims/expected)")
    g.addoption("--baseline", default=None, help="a previous report.json: report each row's drift with an interval")
    g.addoption("--baseline-any-subject", action="store_true", help="compare with a baseline of another subject")
    g.addoption("--fail-on-drift", action="store_true", help="fail the tests of rows that drifted from --baseline")
    g.addoption("--reencode-seqs", type=int, default=16,
                help="sequences the costly re-encoding claim is measured on (default 16)")
    g.addoption("--accept-published-mismatch", action="store_true",
                help="judge a sae_lens release although its SAEs' in-context L0 or explained variance differ from "
                     "the published values (shown at the top of REPORT.md)")
    g.addoption("--sae-progress", choices=("auto", "on", "off"), default="auto",
                help="progress bars on the terminal past pytest's capture (auto: when stderr is a terminal)")
    parser.addini("sae_ledger_dir", "directory of expected-verdict ledgers, relative to the rootdir")
    parser.addini("sae_subject", "default subjects (one per line)", type="linelist")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(id, reference=None, reads=None): a claim test, judged against the "
                                       "registered claim `id` (saeclaims.register_claim); reads: the splice "
                                       "variants it reads (default: all), the only ones the run measures for it")
    worker_threads(config)
    config.stash[SESSION_KEY] = ClaimSession(config)
    config.pluginmanager.register(_RunHooks(config), "saeclaims-run")


def _session(config: pytest.Config) -> ClaimSession:
    return config.stash[SESSION_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("claim")
    if marker is None or "claim" not in metafunc.fixturenames or not marker.args:
        return
    session = _session(metafunc.config)
    if marker.args[0] not in CATALOG:
        return  # reported once, with every other marker problem, at the end of collection
    claim = CATALOG.get(marker.args[0])
    reference = marker.kwargs.get("reference")
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
    _session(config).collect_items(items)


def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.pluginmanager.hasplugin("dsession"):  # the xdist controller: it never collects
        _session(session.config).check_subjects()


def pytest_collection_finish(session: pytest.Session) -> None:
    _session(session.config).note_reads(session.items)
    _session(session.config).load_selected(session.items)


@pytest.fixture
def sae_subject(request) -> str:
    raise pytest.UsageError(f"{request.node.nodeid} uses sae_subject without a @pytest.mark.claim marker")


@pytest.fixture
def sae_hook(request) -> str:
    raise pytest.UsageError(f"{request.node.nodeid} uses sae_hook without a @pytest.mark.claim marker")


@pytest.fixture
def claim(request, sae_subject: str, sae_hook: str) -> ClaimFixture:
    """The claim this test judges, bound to its subject and hook (see `saeclaims.fixture.ClaimFixture`)."""
    session = _session(request.config)
    marker = request.node.get_closest_marker("claim")
    try:
        c = CATALOG.get(marker.args[0])
    except ClaimError as exc:
        raise pytest.UsageError(str(exc)) from None
    fixture = ClaimFixture(c, sae_subject, sae_hook, session, reference=marker.kwargs.get("reference") is not None,
                           nodeid=request.node.nodeid,
                           record_property=lambda k, v: request.node.user_properties.append((k, v)))
    fixture.require_hook()
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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        _session(self.config).record_outcome(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        payload = getattr(node, "workeroutput", {}).get("saeclaims")
        if payload:
            _session(self.config).merge_worker_payload(payload)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    cs = _session(config)
    if cs.is_worker:
        config.workeroutput["saeclaims"] = cs.worker_payload()
        return
    cs.closing_line = cs.finish(exitstatus)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    line = getattr(_session(config), "closing_line", None)
    if line:
        terminalreporter.write_sep("-", "saeclaims")
        terminalreporter.write_line(line)
