"""A claims run's options, read from pytest and validated once, before anything is measured."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from .shards import ShardError, ShardSpec

DEFAULT_LEDGER_DIR = "claims/expected"
# --sae-precision's choices (precision.PRECISIONS; spelled here because the plugin must not import torch) and what
# each value of the deprecated --autocast now means
PRECISION_CHOICES = ("auto", "fp32", "tf32", "bf16")
AUTOCAST_MEANS = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class RunSettings:
    """The run's options, validated once before anything is measured."""

    subjects: tuple[str, ...]
    device: str | None
    n_seqs: int | None
    seq_len: int | None
    seed: int
    family_confidence: float
    n_resamples: int
    batch_size: int
    autocast: str
    text_file: Path | None
    report: Path
    write_report: bool
    ledger_dir: Path
    ledger_dir_given: bool
    progress: str  # auto (a terminal, not -q), on, off
    verbosity: int = 0
    baseline: Path | None = None
    baseline_any_subject: bool = False
    fail_on_drift: bool = False
    reencode_seqs: int = 16
    accept_published_mismatch: bool = False  # run on although a release's SAEs measure unlike sae_lens publishes
    memory_budget_mib: float | None = None  # transient block per splice step (splice.measure's budget_bytes)
    project_dir: Path = Path(".")  # where the default ledger and report resolve (project_dir(config))
    shard: str | None = None  # --sae-shard K/N: this process judges shard K of N (shards.py)
    precision: str = "auto"  # --sae-precision (precision.py); fp16 only through the deprecated --autocast fp16

    @property
    def budget_bytes(self) -> int | None:
        return None if self.memory_budget_mib is None else int(self.memory_budget_mib * 2**20)

    @classmethod
    def from_config(cls, config: pytest.Config) -> RunSettings:
        opt = config.getoption
        root = project_dir(config)
        ledger_opt = opt("sae_ledger_dir") or config.getini("sae_ledger_dir")
        subjects = opt("sae_subject") or config.getini("sae_subject") or ["organism"]
        text = opt("text_file")
        return cls(
            subjects=tuple(dict.fromkeys(subjects)), device=opt("sae_device"), n_seqs=opt("n_seqs"),
            seq_len=opt("seq_len"), seed=opt("sae_seed"), family_confidence=opt("family_confidence"),
            n_resamples=opt("n_resamples"), batch_size=opt("sae_batch_size"), autocast=opt("autocast") or "none",
            text_file=Path(text) if text else None,
            report=Path(opt("sae_report") or root / "REPORT.md"), write_report=not opt("no_sae_report"),
            ledger_dir=Path(root / (ledger_opt or DEFAULT_LEDGER_DIR)), ledger_dir_given=bool(ledger_opt),
            progress=opt("sae_progress"), verbosity=opt("verbose"),
            baseline=Path(opt("baseline")) if opt("baseline") else None,
            baseline_any_subject=opt("baseline_any_subject"), fail_on_drift=opt("fail_on_drift"),
            reencode_seqs=opt("reencode_seqs"), accept_published_mismatch=opt("accept_published_mismatch"),
            memory_budget_mib=opt("sae_memory_budget"), project_dir=root, shard=opt("sae_shard"),
            precision=_precision(config, opt("sae_precision"), opt("autocast")),
        )

    @property
    def shard_spec(self) -> ShardSpec | None:
        """The shard this run judges (None: the whole run); `validate` has checked the text."""
        return None if self.shard is None else ShardSpec.parse(self.shard)

    def as_options(self) -> dict:
        """The run's options for report.json (paths as text)."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    def validate(self) -> None:
        """Bad options stop the run before collection, as pytest's own usage errors do (exit code 4)."""
        if self.seed < 0:
            raise pytest.UsageError(f"--sae-seed {self.seed}: seeds are non-negative integers (numpy's generators)")
        if self.n_seqs is not None and self.n_seqs < 2:
            raise pytest.UsageError(f"--n-seqs {self.n_seqs}: a cluster bootstrap needs at least 2 sequences")
        if self.seq_len is not None and self.seq_len < 2:
            raise pytest.UsageError(f"--seq-len {self.seq_len}: sequences need at least 2 tokens")
        if not 0 < self.family_confidence < 1:
            raise pytest.UsageError(f"--family-confidence {self.family_confidence} must be in (0, 1)")
        if self.n_resamples < 100:
            raise pytest.UsageError(f"--n-resamples {self.n_resamples}: use at least 100 bootstrap resamples")
        if self.batch_size < 1:
            raise pytest.UsageError(f"--sae-batch-size {self.batch_size} must be >= 1")
        if self.memory_budget_mib is not None and not self.memory_budget_mib > 0:
            raise pytest.UsageError(f"--sae-memory-budget {self.memory_budget_mib} must be a positive number of MiB")
        if self.ledger_dir_given and not self.ledger_dir.is_dir():
            raise pytest.UsageError(f"ledger directory {self.ledger_dir} does not exist; create it or fix "
                                    "--sae-ledger-dir / the sae_ledger_dir ini option")
        if self.device is not None:
            _check_device(self.device)
        if self.write_report:
            _check_writable(self.report)
        if self.text_file is not None:
            if not self.text_file.is_file():
                raise pytest.UsageError(f"--text-file {self.text_file} does not exist")
            _check_utf8(self.text_file)
        if self.reencode_seqs < 2:
            raise pytest.UsageError(f"--reencode-seqs {self.reencode_seqs}: a cluster bootstrap needs at least 2")
        if self.shard is not None:
            try:
                ShardSpec.parse(self.shard)
            except ShardError as exc:
                raise pytest.UsageError(str(exc)) from None
        if self.fail_on_drift and self.baseline is None:
            raise pytest.UsageError("--fail-on-drift needs --baseline PATH (a previous report.json)")

    def shows_progress(self, is_worker: bool, terminal: bool) -> bool:
        """Progress lines by default (auto), on a terminal or in a log: a run measures for minutes before its
        first test ends, and silence reads as a hang. Not under -q, nor in xdist workers (whose output nobody
        sees) unless --sae-progress on; never with off. `terminal` only decides how a line is drawn."""
        if self.progress == "off" or (is_worker and self.progress != "on"):
            return False
        return self.progress == "on" or self.verbosity >= 0


def project_dir(config: pytest.Config) -> Path:
    """Where the default ledger (claims/expected) and REPORT.md resolve: the folder of the ini file pytest read,
    else the directory pytest was started in. Not pytest's rootdir: pytest looks for it before plugins add their
    options, so a value written with a space (`--text-file /tmp/x.txt`, `--sae-report /dir/REPORT.md`) counts
    as a test path there and can move rootdir to /tmp or /dir, where no ledger is."""
    inipath = getattr(config, "inipath", None)
    return Path(inipath).parent if inipath else Path(config.invocation_params.dir)


def _precision(config: pytest.Config, asked: str | None, autocast: str | None) -> str:
    """--sae-precision, or what the deprecated --autocast means (with a deprecation warning); both, disagreeing,
    is a usage error."""
    if autocast is None:
        return asked or "auto"
    means = AUTOCAST_MEANS[autocast]
    if asked is not None and asked != means:
        raise pytest.UsageError(f"--autocast {autocast} (deprecated) means --sae-precision {means}, which contradicts "
                                f"--sae-precision {asked}; give --sae-precision alone")
    config.issue_config_time_warning(DeprecationWarning(
        f"--autocast is deprecated: use --sae-precision {means if means != 'fp16' else 'bf16'}"
        + (" (--autocast fp16 keeps running the forwards in fp16 for now)" if means == "fp16" else "")), stacklevel=2)
    return means


def _check_device(name: str) -> None:
    import torch  # lazy: the plugin imports settings.py and must not import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise pytest.UsageError(f"--sae-device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError(f"--sae-device {name}: no CUDA device is available here "
                                    "(torch.cuda.is_available() is False); leave the option out to run on the CPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise pytest.UsageError(f"--sae-device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu" and not (dev.type == "mps" and torch.backends.mps.is_available()):
        raise pytest.UsageError(f"--sae-device {name}: device type {dev.type!r} is not available here; use cpu or cuda")


def _check_utf8(path: Path) -> None:
    """The evaluation text decodes as UTF-8, read in chunks (a corpus may be large), so a binary file is one
    usage error now instead of a bare UnicodeDecodeError once the model has loaded."""
    offset = 0
    try:
        with open(path, encoding="utf-8") as handle:
            while chunk := handle.read(1 << 20):
                offset += len(chunk)
    except UnicodeDecodeError as exc:
        raise pytest.UsageError(f"--text-file {path} is not UTF-8 text ({exc.reason} near character {offset}); give "
                                "a plain-text file, documents separated by blank lines") from None


def _check_writable(report: Path) -> None:
    if report.is_dir():
        raise pytest.UsageError(f"--sae-report {report} is a directory; give the markdown file's path")
    probe = report.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK) or (
            report.exists() and not os.access(report, os.W_OK)):
        raise pytest.UsageError(f"--sae-report {report}: {probe} is not writable; choose another path or "
                                "pass --no-sae-report")
