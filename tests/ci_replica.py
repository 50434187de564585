"""Stand-ins for the two schedulers README's "Sweeping a release" is written for, so its examples run verbatim
here: a small replica of a GitHub Actions runner (matrix jobs, `needs`, `if`, artifacts between jobs) and an
`sbatch` that runs a job array's tasks in turn with the variables SLURM sets.

What they do not do (nothing the examples need): containers, services, caches, secrets, job outputs, the
whole expression language (only `${{ matrix.X }}`, `${{ env.X }}`, `always()`, `!cancelled()`, `success()`).
`pip install` steps are skipped: the test's environment is the installed project.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepResult:
    job: str
    step: str
    returncode: int | None  # None: skipped
    output: str = ""


@dataclass
class WorkflowRun:
    steps: list[StepResult] = field(default_factory=list)
    artifacts: Path | None = None

    def failed(self, job: str) -> bool:
        return any(s.returncode not in (0, None) for s in self.steps if s.job.split(" ")[0] == job)

    def log(self) -> str:
        return "\n".join(f"[{s.job}] {s.step} -> {s.returncode}\n{s.output[-3000:]}" for s in self.steps)


def _expand(text: str, matrix: dict, env: dict) -> str:
    def value(m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("matrix."):
            return str(matrix[expr.removeprefix("matrix.")])
        if expr.startswith("env."):
            return str(env[expr.removeprefix("env.")])
        raise ValueError(f"the runner replica cannot evaluate ${{{{ {expr} }}}}")
    return EXPR.sub(value, text)


def _condition(cond: object, failed: bool) -> bool:
    """`if:` of a step or job: run after a failure only under always() or !cancelled()."""
    text = EXPR.sub(lambda m: m.group(1), str(cond if cond is not None else "success()")).strip()
    if text in ("always()", "!cancelled()"):
        return True
    if text == "success()":
        return not failed
    if text == "failure()":
        return failed
    raise ValueError(f"the runner replica cannot evaluate if: {cond!r}")


def _jobs_in_order(jobs: dict) -> list[str]:
    order: list[str] = []
    while len(order) < len(jobs):
        ready = [j for j, spec in jobs.items() if j not in order
                 and all(n in order for n in _needs(spec))]
        if not ready:
            raise ValueError("the workflow's `needs` form a cycle")
        order += ready
    return order


def _needs(spec: dict) -> list[str]:
    needs = spec.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def _combinations(spec: dict) -> list[dict]:
    matrix = (spec.get("strategy") or {}).get("matrix") or {}
    keys = [k for k in matrix if k not in ("include", "exclude")]
    return [dict(zip(keys, values)) for values in itertools.product(*(matrix[k] for k in keys))] or [{}]


def run_workflow(text: str, root: Path, checkout: list[Path], env: dict[str, str] | None = None) -> WorkflowRun:
    """Run every job of a workflow (each matrix combination in a fresh workspace under `root`, one after another);
    `checkout`: the project's files actions/checkout links into each workspace."""
    wf = yaml.safe_load(text)
    base_env = {**os.environ, **{k: str(v) for k, v in (wf.get("env") or {}).items()}, **(env or {})}
    base_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base_env.get('PATH', '')}"
    run = WorkflowRun(artifacts=root / "artifacts")
    run.artifacts.mkdir(parents=True, exist_ok=True)
    jobs = wf["jobs"]
    for name in _jobs_in_order(jobs):
        spec = jobs[name]
        needs_failed = any(run.failed(n) for n in _needs(spec))
        if not _condition(spec.get("if"), needs_failed):
            run.steps.append(StepResult(name, "(job skipped)", None))
            continue
        for combo in _combinations(spec):
            label = name + (" " + ",".join(f"{k}={v}" for k, v in combo.items()) if combo else "")
            work = root / "jobs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
            work.mkdir(parents=True)
            job_env = {**base_env, **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
            failed = False
            for step in spec["steps"]:
                title = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
                if not _condition(step.get("if"), failed):
                    run.steps.append(StepResult(label, title, None))
                    continue
                rc, out = _step(step, work, combo, job_env, checkout, run.artifacts)
                run.steps.append(StepResult(label, title, rc, out))
                failed = failed or rc not in (0, None)
    return run


def _step(step: dict, work: Path, matrix: dict, env: dict, checkout: list[Path], artifacts: Path
          ) -> tuple[int | None, str]:
    if "run" in step:
        cmd = _expand(step["run"], matrix, env)
        if cmd.strip().startswith("pip install"):
            return None, "skipped: the test's environment is the installed project"
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", cmd], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)
        return done.returncode, done.stdout + done.stderr
    uses = step["uses"].split("@")[0]
    args = {k: _expand(str(v), matrix, env) for k, v in (step.get("with") or {}).items()}
    if uses == "actions/checkout":
        for p in checkout:
            (work / p.name).symlink_to(p)
        return 0, ""
    if uses == "actions/setup-python":
        return 0, ""
    if uses == "actions/upload-artifact":
        src = work / args["path"]
        dest = artifacts / args["name"]
        if not src.exists():
            return 1, f"no files at {args['path']}"
        if src.is_dir():  # a folder's contents, without hidden files (upload-artifact@v4's default)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"))
        else:
            dest.mkdir(parents=True)
            shutil.copy2(src, dest)
        return 0, ""
    if uses == "actions/download-artifact":
        dest = work / args.get("path", ".")
        names = sorted(p.name for p in artifacts.iterdir())
        if "name" in args:
            shutil.copytree(artifacts / args["name"], dest, dirs_exist_ok=True)
            return 0, ""
        for n in fnmatch.filter(names, args.get("pattern", "*")):
            shutil.copytree(artifacts / n, dest / n, dirs_exist_ok=True)
        return 0, ""
    raise ValueError(f"the runner replica does not know the action {uses}")


SBATCH = '''#!{python}
"""A stand-in for SLURM's sbatch: runs a job array's tasks (#SBATCH --array=A-B) one after another with the
variables SLURM sets, or a --wrap command; prints a job id (only the id with --parsable)."""
import os, re, subprocess, sys

args = sys.argv[1:]
log = open(os.environ["SBATCH_REPLICA_LOG"], "a")
if "--wrap" in args:
    rc = subprocess.call(["bash", "-c", args[args.index("--wrap") + 1]])
    log.write(f"wrap {{rc}}\\n")
else:
    script = args[-1]
    text = open(script).read()
    m = re.search(r"^#SBATCH\\s+--array=(\\d+)-(\\d+)\\s*$", text, re.M)
    first, last = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    for task in range(first, last + 1) if m else [None]:
        env = dict(os.environ, SLURM_JOB_ID="4242")
        if task is not None:
            env.update(SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(first),
                       SLURM_ARRAY_TASK_MAX=str(last), SLURM_ARRAY_TASK_COUNT=str(last - first + 1))
        rc = subprocess.call(["bash", script], env=env)
        log.write(f"task {{task}} {{rc}}\\n")
print("4242" if "--parsable" in args else "Submitted batch job 4242")
'''


def install_sbatch(bin_dir: Path) -> Path:
    """Write the sbatch stand-in into `bin_dir` (put it first on PATH); returns its task log's path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "sbatch"
    exe.write_text(SBATCH.format(python=sys.executable))
    exe.chmod(0o755)
    return bin_dir / "sbatch.log"
