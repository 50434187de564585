"""The pytest side: options, subject fixtures, evidence recording, and REPORT.md at session end.

Claim tests call `claim_check(...)`; evidence from xdist workers travels back through
`workeroutput` and is merged on the controller, which alone writes the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .catalog import CLAIMS, get_claim
from .ledger import load_ledger
from .stats import Evidence, Interval, bonferroni_confidence, verdict

SCOPES = ("all", "resid_pre", "resid_pre0", "later_resid_pre", "full_context", "subject")


# ---------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("saeclaims", "SAE claims")
    g.addoption("--subject", action="append", default=None,
                help="subject to test: organism (default), local:DIR, or RELEASE[:id,id] (repeatable)")
    g.addoption("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.addoption("--n-seqs", type=int, default=None, help="evaluation sequences (default: all shipped)")
    g.addoption("--seq-len", type=int, default=None, help="tokens per sequence (default: the shard's)")
    g.addoption("--seed", type=int, default=0, help="seed for bootstraps and random directions")
    g.addoption("--family-confidence", type=float, default=0.95,
                help="joint confidence of all verdict intervals (Bonferroni)")
    g.addoption("--n-resamples", type=int, default=2000, help="bootstrap resamples")
    g.addoption("--batch-size", type=int, default=16, help="sequences per splice batch")
    g.addoption("--autocast", choices=("none", "bf16", "fp16"), default="none",
                help="autocast dtype for forward passes (GPU)")
    g.addoption("--text-file", default=None, help="evaluation text for release subjects (offline)")
    g.addoption("--report", default=None, help="where to write REPORT.md (default: <rootdir>/REPORT.md)")
    g.addoption("--no-report", action="store_true", help="do not write REPORT.md")


def subject_specs(config: pytest.Config) -> list[str]:
    return config.getoption("subject") or ["organism"]


# ---------------------------------------------------------------- evidence store


@dataclass
class EvidenceStore:
    evidence: list[dict] = field(default_factory=list)
    not_applicable: list[dict] = field(default_factory=list)
    series: dict[str, dict] = field(default_factory=dict)
    subjects: dict[str, dict] = field(default_factory=dict)

    def merge(self, other: dict) -> None:
        self.evidence.extend(other.get("evidence", []))
        self.not_applicable.extend(other.get("not_applicable", []))
        for subj, s in other.get("series", {}).items():
            self.series.setdefault(subj, {}).update(s)
        self.subjects.update(other.get("subjects", {}))

    def to_dict(self) -> dict:
        return {"evidence": self.evidence, "not_applicable": self.not_applicable,
                "series": self.series, "subjects": self.subjects}


STORE_KEY = pytest.StashKey[EvidenceStore]()
STATE_KEY = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        # N workers x all cores each oversubscribes the CPU many times over; share the cores out.
        import os

        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(worker.get("workercount", 1))))
    config.stash[STORE_KEY] = EvidenceStore()
    config.stash[STATE_KEY] = {"t0": time.time(), "n_claim_tests": 0, "subjects": {}, "workbenches": {}}
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistMerge(config), "saeclaims-xdist")


def pytest_collection_finish(session: pytest.Session) -> None:
    n = sum(1 for item in session.items if item.get_closest_marker("claim") is not None)
    session.config.stash[STATE_KEY]["n_claim_tests"] = n


class _XdistMerge:
    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        payload = getattr(node, "workeroutput", {}).get("saeclaims")
        if payload:
            self.config.stash[STORE_KEY].merge(json.loads(payload))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    store = config.stash[STORE_KEY]
    if hasattr(config, "workerinput"):
        config.workeroutput["saeclaims"] = json.dumps(store.to_dict())
        return
    if config.getoption("no_report") or not (store.evidence or store.not_applicable):
        return
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        # Interrupted or broken run: keep the last good report.
        return
    from .report import ReportHeader, write_report

    state = config.stash[STATE_KEY]
    path = Path(config.getoption("report") or Path(config.rootpath) / "REPORT.md")
    header = ReportHeader.collect(
        subjects=store.subjects, device=str(resolve_device(config)), dtype=config.getoption("autocast"),
        seed=config.getoption("seed"), family_confidence=config.getoption("family_confidence"),
        n_claim_tests=state["n_claim_tests"], wall_s=time.time() - state["t0"], root=Path(config.rootpath),
    )
    write_report(path, header, store)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"saeclaims: wrote {path} ({len(store.evidence)} evidence records)")


# ---------------------------------------------------------------- parametrisation


def resolve_device(config: pytest.Config):
    """The run's device; under xdist, worker i is pinned to cuda:i when there are several GPUs."""
    import torch

    dev = config.getoption("device")
    if dev is None:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    worker = getattr(config, "workerinput", {}).get("workerid")
    if dev == "cuda" and worker and torch.cuda.device_count() > 1:
        dev = f"cuda:{int(worker.removeprefix('gw')) % torch.cuda.device_count()}"
    return torch.device(dev)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group claim tests by subject and hook, so `--dist loadgroup` sends each hook's tests to one
    worker, which loads the subject once and measures only its hooks."""
    for item in items:
        if item.get_closest_marker("claim") is None or not hasattr(item, "callspec"):
            continue
        params = item.callspec.params
        if "subject_name" in params:
            group = params["subject_name"] + (f"::{params['hook']}" if "hook" in params else "")
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "subject_name" not in metafunc.fixturenames:
        return
    from .describe import describe_subject, hooks_in_scope

    marker = metafunc.definition.get_closest_marker("claim")
    scope = marker.kwargs.get("scope", "subject") if marker else "subject"
    if scope not in SCOPES:
        raise pytest.UsageError(f"claim scope {scope!r} is not one of {SCOPES}")
    specs = subject_specs(metafunc.config)
    if "hook" not in metafunc.fixturenames:
        metafunc.parametrize("subject_name", specs, scope="function")
        return
    pairs, ids = [], []
    for spec in specs:
        hooks = hooks_in_scope(describe_subject(spec), scope)
        for h in hooks or ["n/a"]:
            pairs.append((spec, h))
            ids.append(f"{spec}-{h}")
    metafunc.parametrize(("subject_name", "hook"), pairs, ids=ids)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def device(pytestconfig):
    return resolve_device(pytestconfig)


@pytest.fixture
def subject(subject_name, pytestconfig, device):
    """The loaded subject, once per session per spec."""
    from .subjects import load_subject

    state = pytestconfig.stash[STATE_KEY]
    if subject_name not in state["subjects"]:
        text = pytestconfig.getoption("text_file")
        subj = load_subject(subject_name, device=str(device), n_seqs=pytestconfig.getoption("n_seqs"),
                            seq_len=pytestconfig.getoption("seq_len"), text_file=Path(text) if text else None)
        state["subjects"][subject_name] = subj
        pytestconfig.stash[STORE_KEY].subjects[subject_name] = {
            **subj.provenance, "n_seqs": int(subj.tokens.shape[0]), "seq_len": subj.seq_len,
            "context_sizes": subj.context_sizes, "n_ctx": subj.model.cfg.n_ctx,
        }
    return state["subjects"][subject_name]


@pytest.fixture
def workbench(subject, pytestconfig):
    """Splice measurements for this subject, computed lazily per hook and shared by all claims."""
    from .workbench import Workbench

    state = pytestconfig.stash[STATE_KEY]
    if subject.name not in state["workbenches"]:
        state["workbenches"][subject.name] = Workbench(
            subject, seed=pytestconfig.getoption("seed"), batch_size=pytestconfig.getoption("batch_size"),
            autocast=pytestconfig.getoption("autocast"), n_resamples=pytestconfig.getoption("n_resamples"),
            confidence=claim_confidence(pytestconfig),
            series=pytestconfig.stash[STORE_KEY].series.setdefault(subject.name, {}),
            progress=pytestconfig.getoption("verbose") >= 0,
            eager=not hasattr(pytestconfig, "workerinput"),
        )
    return state["workbenches"][subject.name]


def claim_confidence(config: pytest.Config) -> float:
    n = config.stash[STATE_KEY]["n_claim_tests"]
    return bonferroni_confidence(config.getoption("family_confidence"), n)


@pytest.fixture
def confidence(pytestconfig) -> float:
    """Per-test confidence level: the family level Bonferroni-split over the run's claim tests."""
    return claim_confidence(pytestconfig)


@pytest.fixture
def claim_check(pytestconfig, request):
    """Record the evidence for a claim and assert its verdict matches the ledger."""
    store = pytestconfig.stash[STORE_KEY]
    ledger_dir = Path(pytestconfig.rootpath) / "claims" / "expected"
    ledgers = pytestconfig.stash[STATE_KEY].setdefault("ledgers", {})  # read once per subject per run

    def check(claim_id: str, subject_name: str, hook: str, interval: Interval, n_seqs: int, n_tokens: int,
              **extra) -> Evidence:
        claim = get_claim(claim_id)
        if subject_name not in ledgers:
            ledgers[subject_name] = load_ledger(ledger_dir, subject_name)
        ledger = ledgers[subject_name]
        ev = Evidence(
            claim=claim.id, subject=subject_name, hook=hook, statistic=claim.statistic,
            estimate=interval.estimate, ci_low=interval.low, ci_high=interval.high,
            confidence=interval.confidence, threshold=claim.threshold, direction=claim.direction,
            n_seqs=n_seqs, n_tokens=n_tokens,
            verdict=verdict(interval.low, interval.high, claim.threshold, claim.direction),
            expected=ledger.expected(claim.id, hook), extra=extra,
        )
        store.evidence.append(ev.to_dict())
        assert ev.verdict == ev.expected, ev.one_line()
        return ev

    return check


@pytest.fixture
def not_applicable(pytestconfig):
    """Skip a claim that does not apply to this subject or hook, and list it in the report."""
    store = pytestconfig.stash[STORE_KEY]

    def skip(claim_id: str, subject_name: str, hook: str, reason: str):
        if claim_id not in CLAIMS:
            raise KeyError(claim_id)
        store.not_applicable.append({"claim": claim_id, "subject": subject_name, "hook": hook,
                                     "reason": reason})
        pytest.skip(f"{claim_id} not applicable to {subject_name}/{hook}: {reason}")

    return skip
