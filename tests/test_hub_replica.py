"""The release path against an offline replica of the hub (tests/hub_replica.py): sae_lens's loaders,
TransformerLens's `from_pretrained`, the project's release subject and the README's release command, all with
`HF_HUB_OFFLINE=1` and `HF_HOME` pointing at the replica.

Every hub-reading step runs in a fresh interpreter (one subprocess per test): huggingface_hub reads HF_HOME and
HF_HUB_OFFLINE into `huggingface_hub.constants` when first imported, so setting them in this process would
test nothing. Skipped when ../shared/reference/gpt2-small (GPT-2's tokenizer files) is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.hub_replica import (
    GPT2_ABSENT,
    JB_RELEASE,
    JB_REPO,
    MODEL_REPO,
    TOKENIZER_DIR,
    Replica,
    build_hub_replica,
    corpus_text,
    etag,
    tokenizer_available,
)

ROOT = Path(__file__).resolve().parents[1]
TOPK_RELEASE = "gpt2-small-attn-out-v5-32k"
TOPK_REPO = "jbloom/GPT2-Small-OAI-v5-32k-attn-out-SAEs"

pytestmark = pytest.mark.xdist_group("hub-replica")  # one worker builds the replica once


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Replica:
    if not tokenizer_available():
        pytest.skip(f"GPT-2's tokenizer files are not in {TOKENIZER_DIR} (../shared is a developer resource)")
    return build_hub_replica(tmp_path_factory.mktemp("hub-replica"), topk_release=TOPK_RELEASE)


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus_text(tmp_path_factory.mktemp("text") / "corpus.txt")


def run_offline(replica: Replica, code: str, *args: str, timeout: int = 300) -> dict[str, Any]:
    """Run `code` in a fresh interpreter against the replica, offline; it prints one JSON object last."""
    env = replica.env()
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_cache_is_laid_out_as_huggingface_hub_writes_it(replica: Replica) -> None:
    """refs/main -> commit; snapshot files are relative symlinks to blobs named by the hub's etag; huggingface_hub's
    own cache scanner and resolver read every file back."""
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    repos = {MODEL_REPO: replica.model, **{r.repo_id: r for r in replica.releases.values()}}
    assert set(repos) == {MODEL_REPO, JB_REPO, TOPK_REPO}
    for repo_id, repo in repos.items():
        assert repo.folder.name == "models--" + repo_id.replace("/", "--")
        assert (repo.folder / "refs" / "main").read_text() == repo.commit
        for path, link in repo.files.items():
            assert link.is_symlink() and not os.path.isabs(os.readlink(link))
            blob = link.resolve()
            assert blob.parent == repo.folder / "blobs" and blob.name == etag(path, blob.read_bytes())
            assert try_to_load_from_cache(repo_id, path, cache_dir=replica.hub_cache) == str(link)
    wte = hashlib.sha256(replica.model.files["model.safetensors"].read_bytes()).hexdigest()
    assert replica.model.files["model.safetensors"].resolve().name == wte  # LFS: sha256; others: git blob sha1
    for absent in GPT2_ABSENT:
        assert try_to_load_from_cache(MODEL_REPO, absent, cache_dir=replica.hub_cache) is _CACHED_NO_EXIST

    info = scan_cache_dir(replica.hub_cache)
    assert not info.warnings
    scanned = {r.repo_id: {f.file_name for rev in r.revisions for f in rev.files} for r in info.repos}
    assert scanned[MODEL_REPO] == {"config.json", "generation_config.json", "merges.txt", "model.safetensors",
                                   "tokenizer.json", "tokenizer_config.json", "vocab.json"}
    assert scanned[JB_REPO] == {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"}
    assert scanned[TOPK_REPO] == {"cfg.json", "sae_weights.safetensors"}
    assert sorted(replica.releases[JB_RELEASE].files) == [
        f"blocks.{i}.hook_resid_pre/{f}" for i in range(2)
        for f in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors")]
    assert sorted(replica.releases[TOPK_RELEASE].files) == [
        f"v5_32k_layer_{i}/{f}" for i in range(2) for f in ("cfg.json", "sae_weights.safetensors")]


LOAD_SAE = """
import json, sys
import torch
from safetensors.torch import load_file
from sae_lens import SAE
from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

release, sae_id, weights = sys.argv[1:4]
sae, cfg, sparsity = SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id)
state = sae.state_dict()
written = load_file(weights)
print(json.dumps({
    "class": type(sae).__name__,
    "config": load_sae_config_from_huggingface(release, sae_id),
    "k": getattr(sae.cfg, "k", None),
    "hook": sae.cfg.metadata.hook_name,
    "sparsity": None if sparsity is None else list(sparsity.shape),
    "weights": sorted(written),
    "same_weights": sorted(written) == sorted(state) and all(torch.equal(state[k], v) for k, v in written.items()),
}))
"""


def test_sae_lens_loads_gpt2_small_res_jb_offline(replica: Replica) -> None:
    """sae_lens's default loader reads the legacy cfg.json into exactly the config its own test expects from the real
    file (SAELens tests/loading/test_pretrained_sae_loaders.py::test_load_sae_config_from_huggingface), widths aside."""
    d, sae_id = replica.d_model, "blocks.0.hook_resid_pre"
    weights = replica.releases[JB_RELEASE].files[f"{sae_id}/sae_weights.safetensors"]
    out = run_offline(replica, LOAD_SAE, JB_RELEASE, sae_id, str(weights))
    assert out["config"] == {
        "d_in": d, "device": "cpu", "dtype": "torch.float32", "d_sae": 32 * d, "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"model_name": "gpt2-small", "hook_name": sae_id, "hook_head_index": None, "context_size": 128,
                     "model_from_pretrained_kwargs": {"center_writing_weights": True},
                     "neuronpedia_id": "gpt2-small/0-res-jb", "prepend_bos": True,
                     "dataset_path": "Skylion007/openwebtext", "sae_lens_training_version": None},
        "architecture": "standard",
    }
    assert out["class"] == "StandardSAE" and out["hook"] == sae_id
    assert out["weights"] == ["W_dec", "W_enc", "b_dec", "b_enc"] and out["same_weights"]
    assert out["sparsity"] == [32 * d]


def test_sae_lens_loads_the_topk_attn_out_release_offline(replica: Replica) -> None:
    """The v5 cfg's pre-6.0 TopK (`activation_fn_str: topk`, `activation_fn_kwargs.k`) loads as a TopKSAE, matching
    what SAELens's test_load_old_topk_saes_from_huggingface expects of gpt2-small-resid-post-v5-32k."""
    d, sae_id = replica.d_model, "blocks.1.hook_attn_out"
    weights = replica.releases[TOPK_RELEASE].files["v5_32k_layer_1/sae_weights.safetensors"]
    out = run_offline(replica, LOAD_SAE, TOPK_RELEASE, sae_id, str(weights))
    assert out["config"] == {
        "d_in": d, "d_sae": 256, "dtype": "torch.float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm", "reshape_activations": "none",
        "metadata": {"model_name": "gpt2-small", "hook_name": sae_id, "hook_head_index": None,
                     "sae_lens_training_version": None, "prepend_bos": False,
                     "dataset_path": "Skylion007/openwebtext", "context_size": 64,
                     "neuronpedia_id": "gpt2-small/1-att_32k-oai"},
        "architecture": "topk", "k": 32,
    }
    assert out["class"] == "TopKSAE" and out["k"] == 32 and out["hook"] == sae_id
    assert out["same_weights"] and out["sparsity"] is None  # the loader tolerates the absent sparsity file


LOAD_MODEL = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, GPT2TokenizerFast
from transformer_lens import HookedTransformer

tl = HookedTransformer.from_pretrained("gpt2-small", center_writing_weights=True)
hf, info = AutoModelForCausalLM.from_pretrained("gpt2", output_loading_info=True)
reference = GPT2TokenizerFast.from_pretrained(sys.argv[1])
text = "The quick brown fox jumps over the lazy dog."
tokens = tl.to_tokens(text)
with torch.no_grad():
    diff = (tl(tokens).log_softmax(-1) - hf(tokens).logits.log_softmax(-1)).abs().max().item()
print(json.dumps({
    "cfg": [tl.cfg.n_layers, tl.cfg.d_model, tl.cfg.n_heads, tl.cfg.n_ctx, tl.cfg.d_vocab],
    "tokens": tokens[0].tolist(), "reference": reference(text)["input_ids"],
    "missing": sorted(info["missing_keys"]), "max_logprob_diff": diff,
}))
"""


def test_transformer_lens_loads_gpt2_small_offline(replica: Replica) -> None:
    """`HookedTransformer.from_pretrained("gpt2-small")` finds config, weights and tokenizer in the cache; the model is
    the replica's (same log-probs as transformers' GPT2LMHeadModel from the same files) and tokenizes as GPT-2 does."""
    out = run_offline(replica, LOAD_MODEL, str(TOKENIZER_DIR))
    assert out["cfg"] == [replica.n_layers, replica.d_model, 2, 1024, 50257]
    assert out["tokens"] == [50256, *out["reference"]]  # one BOS, then GPT-2's own tokens
    assert out["missing"] == []  # the hub's key layout (no `transformer.` prefix, no lm_head) loads completely
    assert out["max_logprob_diff"] < 1e-4


LOAD_SUBJECT = """
import json, sys
from pathlib import Path
from saeclaims.subjects import load_subject

spec, text = sys.argv[1:3]
s = load_subject(spec, n_seqs=8, seq_len=256, text_file=Path(text))
bos = s.bos_token_id
print(json.dumps({
    "saes": {key: [type(sae).__name__, sae.cfg.metadata.hook_name] for key, sae in s.saes.items()},
    "context_sizes": s.context_sizes, "tokens": list(s.tokens.shape), "bos": bos,
    "one_bos_first": bool((s.tokens[:, 0] == bos).all() and (s.tokens[:, 1] != bos).all()),
    "provenance": {k: s.provenance[k] for k in ("release", "repo_id", "model", "sae_ids")},
    "model": [s.model.cfg.n_layers, s.model.cfg.d_model],
}))
"""


def test_load_subject_builds_the_res_jb_subject_offline(replica: Replica, text: Path) -> None:
    """The project's release source: both SAEs, their training context, 8 x 256 evaluation tokens from the text file,
    each window starting with exactly one BOS, and the provenance of the release."""
    ids = replica.sae_ids[JB_RELEASE]
    out = run_offline(replica, LOAD_SUBJECT, replica.spec(JB_RELEASE), str(text))
    assert out["saes"] == {i: ["StandardSAE", i] for i in ids}
    assert out["context_sizes"] == dict.fromkeys(ids, 128)
    assert out["tokens"] == [8, 256] and out["bos"] == 50256 and out["one_bos_first"]
    assert out["provenance"] == {"release": JB_RELEASE, "repo_id": JB_REPO, "model": "gpt2-small", "sae_ids": ids}
    assert out["model"] == [replica.n_layers, replica.d_model]


def test_load_subject_builds_the_topk_attn_out_subject_offline(replica: Replica, text: Path) -> None:
    """The same for the TopK release on hook_attn_out: keyed by SAE id, context 64 as the release's cfg says."""
    ids = replica.sae_ids[TOPK_RELEASE]
    out = run_offline(replica, LOAD_SUBJECT, replica.spec(TOPK_RELEASE), str(text))
    assert out["saes"] == {i: ["TopKSAE", i] for i in ids}
    assert out["context_sizes"] == dict.fromkeys(ids, 64)
    assert out["tokens"] == [8, 256] and out["one_bos_first"]
    assert out["provenance"] == {"release": TOPK_RELEASE, "repo_id": TOPK_REPO, "model": "gpt2-small",
                                 "sae_ids": ids}


def _release_command(replica: Replica, specs: list[str], text: Path, out: Path, *extra: str
                     ) -> subprocess.CompletedProcess:
    """The README's release command (`pytest claims -m gpu --sae-subject ...`) from the repository root, offline."""
    env = replica.env()
    env.setdefault("OMP_NUM_THREADS", "1")
    subjects = [a for spec in specs for a in ("--sae-subject", spec)]
    cmd = [sys.executable, "-m", "pytest", "claims", "-m", "gpu", *subjects, "--text-file", str(text),
           "--n-seqs", "8", "--seq-len", "256", "--sae-report", str(out / "REPORT.md"), "-p", "no:cacheprovider",
           "--sae-progress", "off", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def first_run(replica: Replica, text: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The README's release command on the replica, as a new user runs it (no ledger for these subjects yet), on
    the residual release and the TopK attn_out release in one run."""
    out = tmp_path_factory.mktemp("first-run")
    spec, topk = replica.spec(JB_RELEASE), replica.spec(TOPK_RELEASE)
    start = time.perf_counter()
    proc = _release_command(replica, [spec, topk], text, out)
    return {"proc": proc, "out": out, "spec": spec, "topk_spec": topk, "wall_s": time.perf_counter() - start,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def test_readme_release_command_runs_offline(replica: Replica, first_run: dict[str, Any]) -> None:
    """It completes with every failure a verdict that differs from the default expectation 'holds' (no error, no
    crash), passes the published-statistics preflight and writes a report naming the release."""
    proc, out, spec = first_run["proc"], first_run["out"], first_run["spec"]
    log = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode in (0, 1), log
    assert JB_RELEASE in (out / "REPORT.md").read_text()
    data = json.loads((out / "report" / "report.json").read_text())
    subject = data["header"]["subjects"][spec]
    assert subject["release"] == JB_RELEASE and subject["provenance"]["repo_id"] == JB_REPO
    assert subject["context_sizes"] == dict.fromkeys(replica.sae_ids[JB_RELEASE], 128)
    assert {o["outcome"] for o in data["outcomes"]} <= {"passed", "failed", "skipped"}, log
    assert all("(expected holds;" in o["message"] for o in data["outcomes"] if o["outcome"] == "failed"), log
    assert {spec, first_run["topk_spec"]} <= {e["subject"] for e in data["evidence"]}
    topk = data["header"]["subjects"][first_run["topk_spec"]]
    assert topk["release"] == TOPK_RELEASE
    assert set(topk["context_sizes"]) == set(replica.sae_ids[TOPK_RELEASE])  # keyed by SAE id, not folder
    na = [r for r in data["not_applicable"] if r["subject"] == first_run["topk_spec"]]
    assert any("summand of the residual stream only" in r["reason"] for r in na)  # W_pos claims at attn_out
    assert any("fixed by construction" in r["reason"] for r in na)  # L0 claims on TopK
    published = data["header"].get("published", [])
    assert all(p["status"] == "ok" for p in published if p["subject"] == spec), published
    assert all(p["status"] == "not published" for p in published if p["subject"] == first_run["topk_spec"])
    print(f"release command on the replica: {first_run['wall_s']:.1f} s wall, "  # shown by -rP / -s
          f"peak RSS of any child so far {first_run['max_rss_mb']:.0f} MB")


@pytest.mark.slow  # two runs of the release command: 55-90 s on two shared cores
def test_readme_release_command_exits_0_against_its_drafted_ledger(replica: Replica, text: Path, tmp_path: Path,
                                                                   first_run: dict[str, Any]) -> None:
    """As the README says for a new subject: `python -m saeclaims.ledger` drafts the ledger from the first run's
    report.json, and the same command run against it exits 0."""
    from saeclaims.ledger import ledger_file

    spec = first_run["spec"]
    assert first_run["proc"].returncode in (0, 1), first_run["proc"].stdout[-4000:]
    drafted = subprocess.run([sys.executable, "-m", "saeclaims.ledger", str(first_run["out"] / "report" /
                              "report.json"), "--subject", spec], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert drafted.returncode == 0, drafted.stderr
    ledger = ledger_file(tmp_path / "ledger", spec)
    ledger.parent.mkdir()
    ledger.write_text(drafted.stdout)
    second = _release_command(replica, [spec], text, tmp_path / "second", "--sae-ledger-dir", str(ledger.parent))
    assert second.returncode == 0, f"{second.stdout[-4000:]}\n{second.stderr[-4000:]}"
    assert JB_RELEASE in (tmp_path / "second" / "REPORT.md").read_text()


PARTIAL_LOAD = """
import sys
from pathlib import Path
import saeclaims.subjects.release as release
from saeclaims.subjects import SubjectError, load_subject

def model_loaded(*a, **k):
    raise AssertionError("the model was loaded before every SAE file was known to exist")

release.load_hooked_model = model_loaded
try:
    load_subject(sys.argv[1], n_seqs=8, seq_len=256, text_file=Path(sys.argv[2]))
except SubjectError as exc:
    print("SubjectError:", exc)
    sys.exit(3)
"""


def test_a_partial_hub_cache_fails_once_naming_the_missing_sae_before_the_model(replica: Replica, text: Path,
                                                                                  tmp_path: Path) -> None:
    """A cache holding the model and one SAE but not the other: one SubjectError naming the missing SAE and the fix,
    raised before the (much larger) model is loaded."""
    import shutil

    partial = tmp_path / "hf"
    shutil.copytree(replica.hf_home, partial, symlinks=True)
    snap = next((partial / "hub" / f"models--{JB_REPO.replace('/', '--')}" / "snapshots").iterdir())
    missing = replica.sae_ids[JB_RELEASE][-1]
    (snap / missing / "sae_weights.safetensors").unlink()
    env = replica.env()
    env["HF_HOME"] = str(partial)
    proc = subprocess.run([sys.executable, "-c", PARTIAL_LOAD, replica.spec(JB_RELEASE), str(text)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-4000:]
    assert f"SAE {JB_RELEASE}/{missing} needs the Hugging Face hub" in proc.stdout
    assert "HF_HOME" in proc.stdout and proc.stdout.count("SubjectError") == 1
