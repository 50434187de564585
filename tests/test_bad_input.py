"""Bad input to the main command: one clear message, the exit code, and the previous report untouched.

Each case runs `pytest claims -m gpu` in-process against a "previous report" (markdown, report.json and a
figure) and checks the message, the exit status and that every byte of the old report is still there.
README.md's table "Bad input" lists the same cases with the same messages (checked below).
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SAE = "saes/ctx128/blocks.1.hook_resid_pre/sae_weights.safetensors"


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    message: str
    exit: int = pytest.ExitCode.USAGE_ERROR
    setup: str = ""  # how the organism copy or the ledger is broken
    ledger: str | None = None
    env: dict = field(default_factory=dict)
    before_loading: bool = False  # refused before any subject loads (loading it fails the case)


CASES = [
    Case("unknown subject", ("--sae-subject", "nosuch"), "unknown subject or sae_lens release 'nosuch'; valid forms"),
    Case("offline release", ("--sae-subject", "gpt2-small-res-jb"),
         "needs the Hugging Face hub, which cannot be reached and the files are not in the cache"),
    Case("seq-len beyond n_ctx", ("--seq-len", "2000"),
         "asked for sequences of 2000 tokens, the evaluation set has 1024"),
    Case("seq-len not beyond any context", ("--seq-len", "64"),
         "--seq-len 64 leaves no position beyond any SAE's training context", before_loading=True),
    Case("seq-len 3", ("--seq-len", "3"), "--seq-len 3 leaves no position beyond any SAE's training context",
         before_loading=True),
    Case("negative seed", ("--sae-seed", "-1"), "--sae-seed -1: seeds are non-negative integers"),
    Case("n-seqs 0", ("--n-seqs", "0"), "--n-seqs 0: a cluster bootstrap needs at least 2 sequences"),
    Case("n-seqs 1", ("--n-seqs", "1"), "--n-seqs 1: a cluster bootstrap needs at least 2 sequences"),
    Case("cuda without a GPU", ("--sae-device", "cuda"), "--sae-device cuda: no CUDA device is available here"),
    Case("nonsense device", ("--sae-device", "nonsense"), "--sae-device 'nonsense' is not a torch device"),
    Case("memory budget 0", ("--sae-memory-budget", "0"), "--sae-memory-budget 0.0 must be a positive number of MiB"),
    Case("unwritable report", ("--sae-report", "/etc/hostname/REPORT.md"), "is not writable"),
    Case("flipped byte in an SAE", (), "corrupt artifact", setup="flip"),
    Case("truncated SAE", (), "corrupt artifact", setup="truncate"),
    Case("NaN in an SAE", (), "holds NaN or inf; the file is corrupt", setup="nan"),
    Case("ledger: unknown claim", (), "names unknown claim 'no-such-claim'",
         ledger='[no-such-claim]\nmodel = "holds"\n'),
    Case("ledger: unknown verdict", (), "'maybe' is not a verdict", ledger='[wpos-helix]\nmodel = "maybe"\n'),
    Case("ledger: TOML syntax error", (), "is not valid TOML", ledger="[wpos-helix\n"),
    Case("ledger: hook key that matches no hook", (), "'blocks.9.hook_resid_pre', which is not a row of this claim",
         ledger='[beyond-context-degrades]\n"blocks.9.hook_resid_pre" = "holds"\n'),
    Case("ledger directory missing", ("--sae-ledger-dir", "no/such/dir"), "ledger directory"),
    Case("local: truncated cfg.json", (), "cfg.json is not valid JSON", setup="local-truncated-cfg",
         before_loading=True),
    Case("local: incomplete cfg.json", (), "cfg.json: sae_lens cannot load this SAE config",
         setup="local-incomplete-cfg"),
    Case("binary --text-file", (), "is not UTF-8 text", setup="binary-text", before_loading=True),
    Case("--text-file no subject reads", (), "would be ignored: no subject of this run reads evaluation text",
         setup="text", before_loading=True),
    Case("shard K beyond N", ("--sae-shard", "4/3"), "--sae-shard 4/3: K counts the shards from 1 to N=3",
         before_loading=True),
    Case("shard not K/N", ("--sae-shard", "2"), "--sae-shard '2' is not K/N", before_loading=True),
    Case("more shards than SAEs", ("--sae-shard", "1/9"),
         "this run has 5 SAEs to split (organism: 5), so at most 5 shards; give N <= 5", before_loading=True),
]


def _previous_report(folder: Path) -> dict[str, bytes]:
    (folder / "report").mkdir(parents=True)
    (folder / "REPORT.md").write_text("# SAE claims report\n\nthe last good one\n")
    (folder / "report" / "report.json").write_text(json.dumps({"evidence": []}))
    (folder / "report" / "evidence-x.png").write_bytes(b"\x89PNG not really")
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _broken_organism(tmp: Path, how: str) -> Path:
    from saeclaims.artifacts import sha256_file
    from saeclaims.subjects import organism_dir

    root = tmp / "organism"
    shutil.copytree(organism_dir(), root, ignore=shutil.ignore_patterns(".build", "build.log"))
    path = root / SAE
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "nan":  # a NaN that the card's hash agrees with: the weights check must catch it
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(path))
        tensors["W_enc"] = tensors["W_enc"].copy()
        tensors["W_enc"][0, 0] = np.nan
        save_file(tensors, str(path))
        card = json.loads((root / "card.json").read_text())
        card["sha256"][SAE] = sha256_file(path)
        (root / "card.json").write_text(json.dumps(card))
    return root


def _local_subject(tmp: Path, how: str) -> Path:
    """A local:DIR of one organism SAE whose cfg.json is cut in half or lacks a field sae_lens needs."""
    from saeclaims.subjects import organism_dir

    root = tmp / "local"
    sae = root / "blocks.1.hook_resid_pre"
    sae.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(organism_dir() / Path(SAE).parent / name, sae / name)
    shutil.copy(organism_dir() / "eval_tokens.npy", root / "eval_tokens.npy")
    (root / "subject.json").write_text(json.dumps({"model": str(organism_dir())}))
    text = (sae / "cfg.json").read_text()
    if how == "local-truncated-cfg":
        (sae / "cfg.json").write_text(text[: len(text) // 2])
    else:
        cfg = json.loads(text)
        del cfg["d_sae"]
        (sae / "cfg.json").write_text(json.dumps(cfg))
    return root


def _setup_args(tmp: Path, how: str, monkeypatch) -> list[str]:
    """The arguments (and environment) a case's broken input needs."""
    if how.startswith("local-"):
        return ["--sae-subject", f"local:{_local_subject(tmp, how)}"]
    if how in ("binary-text", "text"):
        text = tmp / "eval.txt"
        text.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary" if how == "binary-text" else b"plain text\n\nmore\n")
        return ["--text-file", str(text)]
    monkeypatch.setenv("SAECLAIMS_ORGANISM", str(_broken_organism(tmp, how)))
    return []


@pytest.fixture(scope="module", autouse=True)
def _heavy_imports_outside_the_inner_runs():
    """pytester's in-process runs drop modules they imported; pyarrow (under datasets) cannot be imported
    twice in one process, so the heavy stack is imported once out here."""
    import sae_lens  # noqa: F401
    import transformer_lens  # noqa: F401
    import transformers  # noqa: F401

    import saeclaims.subjects  # noqa: F401


def run_bad(pytester, monkeypatch, case: Case, tmp_path: Path):
    out = tmp_path / "out"
    before = _previous_report(out)
    args = ["--sae-report", str(out / "REPORT.md")]
    if case.ledger is not None:
        ledgers = tmp_path / "ledgers"
        ledgers.mkdir()
        (ledgers / "organism.toml").write_text(case.ledger)
        args += ["--sae-ledger-dir", str(ledgers)]
    if case.setup:
        args += _setup_args(tmp_path, case.setup, monkeypatch)
    if case.before_loading:
        def no_loading(spec, *a, **k):
            raise AssertionError(f"{spec} was loaded before the bad input was refused")

        monkeypatch.setattr("saeclaims.session.load_subject", no_loading)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    if "--sae-report" in case.args:
        args = args[2:]  # the report path is the case's own
    result = pytester.runpytest_inprocess(str(ROOT / "claims"), "-m", "gpu", "--rootdir", str(ROOT), "-c",
                                          str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider", "-p",
                                          "no:randomly", *args, *case.args)
    return result, before, _snapshot(out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_once_clearly_and_keeps_the_report(pytester, monkeypatch, tmp_path, case):
    result, before, after = run_bad(pytester, monkeypatch, case, tmp_path)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == case.exit, text[-3000:]
    assert case.message in text, text[-3000:]
    assert text.count(case.message) == 1, "the message is given once, not once per test"
    assert "Traceback" not in text
    assert after == before


def test_the_readme_lists_every_case_with_its_message():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Bad input"):]
    for case in CASES:
        assert case.message.replace("|", "\\|") in table, case.name
