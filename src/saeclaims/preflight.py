"""Published-statistics preflight: before any claim is judged on a sae_lens release, each SAE's in-context
L0 and explained variance on the run's evaluation tokens are compared with the values sae_lens's pretrained
directory publishes for it.

Why: a wrong tokenizer, dataset or model setting (a missing `center_writing_weights`, a doubled BOS, another
model) changes what every SAE sees, and every verdict would then be about SAEs that do not behave as
published. Those mistakes move the SAEs' own statistics, so they are checked first, as sae_lens checks its
releases.

What is compared, and how (sae_lens's definitions, so a published number means the same thing here):

- Tolerances are those of sae_lens's release benchmark, `benchmark/test_eval_all_loadable_saes.py::
  test_eval_all_loadable_saes` (SAELens repository): `pytest.approx(metrics["l0"], abs=5) == expected_l0` and
  `pytest.approx(metrics["explained_variance"], abs=0.1) == expected_var_explained`. `pytest.approx` with only
  `abs` is `abs(measured - published) <= tol` in float64, edges included; `within` below is exactly that.
- L0 (`sae_lens.evals.get_sparsity_and_variance_metrics`): per token, the number of SAE latents `!= 0`,
  averaged over tokens.
- Explained variance: sae_lens's `explained_variance` (`evals.ExplainedVarianceCalculator`), pooled over all
  tokens and mean-subtracted, the variance summed over dimensions:
  `1 - mean_t ||x_t - x̂_t||² / (mean_t ||x_t||² - ||mean_t x_t||²)`; 1 when both are below 1e-10, 0 when
  only the variance is. Not `explained_variance_legacy` (a per-token ratio averaged over tokens), which the
  benchmark does not check. Sums are accumulated in float64.
- Tokens: the benchmark reads windows of the SAE's training context that start with BOS and ignores BOS, EOS
  and pad tokens. Here: positions [1, min(ctx, seq_len)) of *every* evaluation sequence, minus those tokens.
  Every sequence, not a first few: the tolerance is absolute and L0 varies from document to document, so 16
  sequences would leave a sampling error that is a sizeable part of 5 latents; the cost is one forward pass
  truncated to the SAEs' context and stopped after the deepest hooked block, small next to any claim.
- Published values are read from the directory's YAML entry for the SAE: `get_pretrained_saes_directory()`
  fills an absent value with a default (l0 0.0, variance_explained 1.0) that nobody published, and most
  entries publish no variance. An absent value is "not published", never a mismatch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml

L0 = "l0"
EXPLAINED_VARIANCE = "explained_variance"
TOLERANCES = {L0: 5.0, EXPLAINED_VARIANCE: 0.1}  # sae_lens's release benchmark (see the module docstring)
YAML_KEYS = {L0: "l0", EXPLAINED_VARIANCE: "variance_explained"}  # the keys of sae_lens's pretrained_saes.yaml
OK, MISMATCH, NOT_PUBLISHED = "ok", "mismatch", "not published"
ACCEPT_OPTION = "--accept-published-mismatch"
_CHUNK_ELEMENTS = 2**26  # latents encoded at once (256 MB in float32): a 1M-wide SAE takes 64 tokens at a time


@dataclass
class PublishedCheck:
    """One SAE x statistic measured in context and compared with sae_lens's published value."""

    sae_id: str
    statistic: str  # l0 | explained_variance
    measured: float
    published: float | None  # None: sae_lens's directory publishes no value for this SAE
    tolerance: float
    status: str  # ok | mismatch | not published
    subject: str = ""
    hook: str = ""
    n_tokens: int = 0  # tokens the statistic was measured on

    def one_line(self) -> str:
        """The check in one line: SAE id, statistic, measured vs published, tolerance."""
        head = f"SAE {self.sae_id}: {self.statistic} measured {self.measured:.4g}"
        if self.published is None:
            return f"{head}; sae_lens publishes no value"
        diff = abs(self.measured - self.published)
        return (f"{head}, published {self.published:.4g} (|difference| {diff:.3g} "
                f"{'<=' if self.status == OK else '>'} tolerance {self.tolerance:g})")


@dataclass(frozen=True)
class InContextStats:
    """An SAE's statistics over positions [1, ctx) of the evaluation tokens, BOS/EOS/pad excluded."""

    l0: float
    explained_variance: float
    n_tokens: int


class PublishedMismatchError(Exception):
    """A release's SAEs measure differently from what sae_lens publishes; the message says what and how to fix."""


def within(measured: float, published: float, tolerance: float) -> bool:
    """sae_lens's `pytest.approx(measured, abs=tolerance) == published`, edges included."""
    return abs(measured - published) <= tolerance


def status_of(measured: float, published: float | None, tolerance: float) -> str:
    if published is None:
        return NOT_PUBLISHED
    return OK if within(measured, published, tolerance) else MISMATCH


# ---------------------------------------------------------------- published values


@functools.cache
def _directory_blocks() -> dict[str, str]:
    """Top-level key -> its YAML text, from sae_lens's pretrained_saes.yaml (split, not parsed: parsing the
    whole directory takes seconds, one release's entry milliseconds)."""
    try:
        text = files("sae_lens").joinpath("pretrained_saes.yaml").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\t", "#", "-", "\n", "\r") and ":" in line:  # a top-level key: a release
            parsed = yaml.safe_load(line)
            if isinstance(parsed, dict) and parsed:
                current = blocks.setdefault(str(next(iter(parsed))), [])
        if current is not None:
            current.append(line)
    return {k: "".join(v) for k, v in blocks.items()}


@functools.cache
def published_statistics(release: str) -> dict[str, dict[str, float | None]] | None:
    """SAE id -> {statistic: published value or None} for a release of sae_lens's pretrained directory;
    None when sae_lens knows no such release (organism and local subjects)."""
    block = _directory_blocks().get(release)
    if block is None:
        return None
    entry = (yaml.load(block, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}).get(release) or {}
    out: dict[str, dict[str, float | None]] = {}
    for sae in entry.get("saes") or []:
        out[str(sae["id"])] = {stat: (float(sae[key]) if sae.get(key) is not None else None)
                               for stat, key in YAML_KEYS.items()}
    return out


# ---------------------------------------------------------------- measurement


def _ignored_tokens(subject: Any) -> set[int]:
    """BOS, EOS and pad: the tokens sae_lens's release benchmark leaves out of its statistics."""
    ids = {int(subject.bos_token_id)}
    tok = getattr(subject.model, "tokenizer", None)
    for name in ("eos_token_id", "pad_token_id"):
        value = getattr(tok, name, None) if tok is not None else None
        if isinstance(value, int):
            ids.add(value)
    return ids


class _Accumulator:
    """Streaming sums for L0 and sae_lens's pooled explained variance, in float64."""

    def __init__(self) -> None:
        self.sum_x = None
        self.sum_sq = 0.0
        self.sum_resid = 0.0
        self.active = 0
        self.n = 0

    def add(self, sae: Any, act: Any, keep: Any) -> None:
        """`act`: the hook's activation [B, c, ...]; `keep`: [B, c] tokens that count. The kept tokens are
        encoded in chunks, so a wide SAE's latents ([tokens, d_sae]) stay within _CHUNK_ELEMENTS."""
        x = act
        head = getattr(sae.cfg.metadata, "hook_head_index", None)
        if head is not None and x.ndim == 4:
            x = x[:, :, head]
        # hook_z ([B, c, heads, d_head]): an SAE that reshapes by itself takes [..., heads, d_head], else flattened
        reshaping = x.ndim == 4 and getattr(sae, "hook_z_reshaping_mode", False)
        x = x.reshape(-1, *x.shape[2:]) if reshaping else x.reshape(x.shape[0] * x.shape[1], -1)
        x = x[keep.reshape(-1)]
        step = max(1, _CHUNK_ELEMENTS // max(1, int(getattr(sae.cfg, "d_sae", 0) or 0)))
        for start in range(0, x.shape[0], step):
            x_in = x[start:start + step]
            feats = sae.encode(x_in)
            x_hat = sae.decode(feats)
            if feats.is_sparse:
                feats = feats.to_dense()
            xs = x_in.reshape(x_in.shape[0], -1).double()
            xh = x_hat.reshape(x_in.shape[0], -1).to(xs.device).double()
            self.sum_x = xs.sum(0) if self.sum_x is None else self.sum_x + xs.sum(0)
            self.sum_sq += float(xs.pow(2).sum())
            self.sum_resid += float((xs - xh).pow(2).sum())
            self.active += int((feats != 0).sum())
            self.n += int(x_in.shape[0])

    def stats(self) -> InContextStats:
        if self.n == 0 or self.sum_x is None:
            return InContextStats(math.nan, math.nan, 0)
        total_variance = self.sum_sq / self.n - float((self.sum_x / self.n).pow(2).sum())
        mse = self.sum_resid / self.n
        if total_variance < 1e-10:
            ev = 1.0 if mse < 1e-10 else 0.0
        else:
            ev = 1.0 - mse / total_variance
        return InContextStats(self.active / self.n, ev, self.n)


def measure_in_context(subject: Any, sae_ids: list[str] | None = None,
                       batch_tokens: int = 4096) -> dict[str, InContextStats]:
    """Each SAE's L0 and explained variance over positions [1, min(ctx, seq_len)) of every evaluation sequence,
    BOS/EOS/pad excluded. One forward pass per batch for all SAEs, on tokens truncated to the largest context
    and stopped after the deepest hooked block (activations before position ctx do not depend on later tokens)."""
    import torch  # lazy, as below: schema.py (PublishedCheck) stays free of torch for the ledger tool

    from .subjects.core import hook_order, sae_hook_name  # lazy: subjects import torch

    ids = list(sae_ids if sae_ids is not None else subject.saes)
    if not ids:
        return {}
    by_hook: dict[str, list[str]] = {}
    for i in ids:
        by_hook.setdefault(sae_hook_name(subject.saes[i]), []).append(i)
    ctx = {i: max(1, min(int(subject.context_sizes[i]), subject.seq_len)) for i in ids}
    width = max(ctx.values())
    tokens = subject.tokens[:, :width]
    ignored = torch.tensor(sorted(_ignored_tokens(subject)), device=tokens.device)
    keep = ~torch.isin(tokens, ignored)
    keep[:, 0] = False  # position 0 is BOS by construction; never counted even if the tokenizer has none
    stop = max(hook_order(h)[0] for h in by_hook) + 1
    acc = {i: _Accumulator() for i in ids}
    batch = max(1, batch_tokens // width)

    for start in range(0, tokens.shape[0], batch):
        rows = slice(start, start + batch)

        def make_hook(name: str, rows: slice = rows):
            def fn(act, hook=None):  # noqa: ARG001 (TransformerLens passes its HookPoint as `hook`)
                for i in by_hook[name]:
                    acc[i].add(subject.saes[i], act[:, :ctx[i]], keep[rows, :ctx[i]].to(act.device))
            return fn

        with torch.no_grad():
            subject.model.run_with_hooks(tokens[rows], fwd_hooks=[(h, make_hook(h)) for h in by_hook],
                                         stop_at_layer=stop)
    return {i: acc[i].stats() for i in ids}


# ---------------------------------------------------------------- the check


def check_published(subject: Any, name: str | None = None) -> list[PublishedCheck]:
    """Every SAE x statistic of a sae_lens release subject against the published value; [] for subjects that
    are no sae_lens release (organism, local:DIR)."""
    from .subjects.core import sae_hook_name  # lazy: subjects import torch (see in_context_statistics)

    release = subject.provenance.get("release") if isinstance(subject.provenance, dict) else None
    if not isinstance(release, str) or release.startswith("local:"):
        return []
    published = published_statistics(release)
    if published is None:
        return []
    ids = list(getattr(subject, "sae_ids", None) or subject.saes)
    measured = measure_in_context(subject, ids)
    checks = []
    for i in ids:
        m, pub = measured[i], published.get(i, {})
        for stat, value in ((L0, m.l0), (EXPLAINED_VARIANCE, m.explained_variance)):
            tol = TOLERANCES[stat]
            checks.append(PublishedCheck(
                sae_id=i, statistic=stat, measured=float(value), published=pub.get(stat), tolerance=tol,
                status=status_of(float(value), pub.get(stat), tol), subject=name or subject.name,
                hook=sae_hook_name(subject.saes[i]), n_tokens=m.n_tokens))
    return checks


def mismatch_message(spec: str, checks: list[PublishedCheck]) -> str:
    """The usage error for a release whose SAEs measure differently from what sae_lens publishes."""
    bad = [c for c in checks if c.status == MISMATCH]
    n = max((c.n_tokens for c in bad), default=0)
    lines = [f"--sae-subject {spec}: SAE statistics differ from sae_lens's published values beyond the tolerance "
             f"of sae_lens's release benchmark (positions [1, ctx) of the evaluation tokens, BOS excluded, "
             f"{n} tokens per SAE):"]
    lines += [f"  {c.one_line()}" for c in bad]
    lines.append("The SAEs do not see what they were trained on: check the evaluation tokens (tokenizer, BOS, "
                 "dataset or --text-file) and the model's from_pretrained kwargs; or pass "
                 f"{ACCEPT_OPTION} to judge the claims anyway (the mismatch is then shown at the top of REPORT.md).")
    return "\n".join(lines)
