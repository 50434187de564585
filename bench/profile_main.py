"""Where the wall time of the main command (`pytest claims -m gpu`) goes.

    python bench/profile_main.py [--quick] [--attention fused|eager] [-- EXTRA PYTEST ARGS]

Runs the main command in this process (on the organism unless EXTRA PYTEST ARGS say otherwise; the report
goes to a temporary directory, so the repository's REPORT.md is left alone) with wall-clock regions
(CUDA-synchronised on a GPU) around the library's own functions and modules, patched for the run only:
subject load, the in-context statistics pass, clean passes, the suffix runs' blocks (attention vs MLP),
unembedding + log-sum-exp, SAE encode/decode, the variants (splice-in), sparse re-encoding, bootstraps,
figures and the report. Nested regions print as a tree with inclusive seconds and their share of the
total; `(self)` rows are a region's time outside its children (Python, copies, layer norms, residual adds,
pytest). `--quick` is a smoke run (4 sequences of 128 tokens, 200 resamples, 2 re-encoded sequences):
its numbers show the shape of the table, not the full command's.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class Regions:
    """Nested wall-clock regions keyed by their path from the root."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.stack: list[tuple[str, float]] = []
        self.incl: dict[tuple[str, ...], float] = defaultdict(float)
        self.calls: dict[tuple[str, ...], int] = defaultdict(int)
        self.first: dict[tuple[str, ...], int] = {}
        self.undo: list = []

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def push(self, label: str) -> None:
        self._sync()
        self.stack.append((label, time.perf_counter()))
        path = tuple(label for label, _ in self.stack)
        self.first.setdefault(path, len(self.first))

    def pop(self) -> None:
        self._sync()
        path = tuple(label for label, _ in self.stack)
        _, t0 = self.stack.pop()
        self.incl[path] += time.perf_counter() - t0
        self.calls[path] += 1

    @contextlib.contextmanager
    def region(self, label: str):
        self.push(label)
        try:
            yield
        finally:
            self.pop()

    def wrap(self, owner, name: str, label: str, **inject) -> None:
        """Time every call of owner.name (a module's function, a class's method or an instance's method)
        as `label`; `inject` adds keyword arguments the callee accepts."""
        if not hasattr(owner, name):
            return
        orig = getattr(owner, name)
        had_own = name in getattr(owner, "__dict__", {})
        try:
            params = inspect.signature(orig).parameters
        except (TypeError, ValueError):
            params = {}
        extra = {k: v for k, v in inject.items() if k in params}

        @functools.wraps(orig)
        def timed(*args, **kwargs):
            with self.region(label):
                return orig(*args, **{**extra, **kwargs})

        setattr(owner, name, timed)
        self.undo.append((lambda: setattr(owner, name, orig)) if had_own else (lambda: delattr(owner, name)))

    def module(self, mod: torch.nn.Module, label: str) -> None:
        """Time every forward of an nn.Module (through torch's module hooks, so whatever replaces its
        forward, e.g. the fused attention path, is timed the same way)."""
        a = mod.register_forward_pre_hook(lambda m, args: self.push(label))
        b = mod.register_forward_hook(lambda m, args, out: self.pop())
        self.undo += [a.remove, b.remove]

    def restore(self) -> None:
        for f in reversed(self.undo):
            f()
        self.undo.clear()

    def table(self, total: float) -> str:
        rows = [f"{'region':64s} {'seconds':>9s} {'share':>7s} {'calls':>7s}"]
        children: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
        for path in sorted(self.incl, key=self.first.get):
            children[path[:-1]].append(path)

        def emit(path, depth):
            t = self.incl[path]
            rows.append(f"{'  ' * depth + path[-1]:64s} {t:9.3f} {t / total:7.1%} {self.calls[path]:7d}")
            kids = children.get(path, [])
            for k in kids:
                emit(k, depth + 1)
            own = t - sum(self.incl[k] for k in kids)
            if kids and own > 0.005 * total:
                rows.append(f"{'  ' * (depth + 1) + '(self)':64s} {own:9.3f} {own / total:7.1%}")

        for r in children[()]:
            emit(r, 0)
        covered = sum(self.incl[r] for r in children[()])
        rows.append(f"{'total (wall)':64s} {total:9.3f} {1:7.1%}")
        if total - covered > 0.005 * total:
            rows.append(f"{'  (outside the regions: start-up, imports)':64s} {total - covered:9.3f} "
                        f"{(total - covered) / total:7.1%}")
        return "\n".join(rows)


class _PytestStages:
    """pytest hook wrappers: collection (which loads the subjects), the tests, the session's end (report)."""

    def __init__(self, prof: Regions):
        self.prof = prof

    def _around(self, label: str):
        with self.prof.region(label):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_collection(self, session):
        return (yield from self._around("collection (subject load, ledgers)"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session):
        return (yield from self._around("claim tests"))

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session, exitstatus):
        return (yield from self._around("session finish (report)"))


def instrument(prof: Regions, fused: bool) -> None:
    """Wrap the library's stages (module-level names, looked up at call time)."""
    import saeclaims.subjects as subjects_pkg
    from saeclaims import instruments, report, session, splice, splicing, stats, variants, workbench

    def load(orig):
        @functools.wraps(orig)
        def loaded(*args, **kwargs):
            with prof.region("subject load"):
                subj = orig(*args, **kwargs)
            instrument_subject(prof, subj)
            return subj
        return loaded

    orig_load = subjects_pkg.load_subject
    subjects_pkg.load_subject = load(orig_load)
    prof.undo.append(lambda: setattr(subjects_pkg, "load_subject", orig_load))
    prof.wrap(session, "check_published", "published-statistics preflight")
    prof.wrap(workbench, "measure", "measure (splice workload)", fused_attention=fused)
    prof.wrap(splice, "in_context_stats", "in-context statistics pass")
    prof.wrap(splice, "splice_batch", "splice_batch")
    prof.wrap(splice, "_clean_cache", "clean pass")
    prof.wrap(splicing, "splice_variants", "variants (splice-in)")
    prof.wrap(splicing, "suffix_run", "suffix runs")
    prof.wrap(splice, "chunked_losses", "unembedding + log-sum-exp")
    prof.wrap(variants, "reencode_with_omp", "sparse re-encoding (NNOMP)")
    prof.wrap(workbench.Workbench, "_record_series", "figure series (bootstraps)")
    for owner in (instruments, stats):
        prof.wrap(owner, "cluster_bootstrap", "bootstrap")
    prof.wrap(stats.sps, "bootstrap", "scipy BCa")
    prof.wrap(stats, "paired_replicates", "paired replicates")
    prof.wrap(report, "write_report", "report")
    import saeclaims.figures as figures

    prof.wrap(figures, "draw_all", "figures")


def instrument_subject(prof: Regions, subj) -> None:
    """Time the subject's model (blocks: attention vs MLP) and SAEs (encode, decode)."""
    model = subj.model
    prof.module(model, "model forward")
    for block in model.blocks:
        prof.module(block, "block")
        prof.module(block.attn, "attention")
        if hasattr(block, "mlp"):
            prof.module(block.mlp, "MLP")
    for sae in [*subj.saes.values(), *subj.full_context_saes.values()]:
        prof.wrap(sae, "encode", "SAE encode")
        prof.wrap(sae, "decode", "SAE decode")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 4 x 128 tokens, 200 resamples")
    ap.add_argument("--attention", choices=["fused", "eager"], default="fused",
                    help="attention in the splice kernels (splice.measure's fused_attention)")
    ap.add_argument("pytest_args", nargs="*", help="more arguments for pytest (after --)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    prof = Regions(cuda)
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--n-seqs", "4", "--seq-len", "128", "--n-resamples", "200", "--reencode-seqs", "2"] \
            if args.quick else []
        pytest_args = [str(ROOT / "claims"), "-m", "gpu", "-q", "-p", "no:cacheprovider", "--sae-progress", "off",
                       "--sae-report", str(Path(tmp) / "REPORT.md"), *extra, *args.pytest_args]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{'cuda' if cuda else 'cpu'}; attention {args.attention}; pytest {' '.join(pytest_args)}")
        t0 = time.perf_counter()
        instrument(prof, args.attention == "fused")
        try:
            code = pytest.main(pytest_args, plugins=[_PytestStages(prof)])
        finally:
            prof.restore()
        total = time.perf_counter() - t0
    print(prof.table(total))
    if cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
