"""Executors: who runs a plan's notebooks. One protocol, two implementations.

An executor gets a list of jobs and the run's context, runs each job, and records its result on the job itself
(``status``, ``error``, ``duration_s``, ``host``, ``placement``), saving the manifest as jobs end. It lets
``KeyboardInterrupt`` (Ctrl-C, SIGTERM) and the runner's own write failures through, after marking what it had
in flight; everything a notebook does wrong is a recorded result, never an exception.

* :class:`LocalExecutor`: one notebook after another on this machine (timing notebooks never share a device).
* :class:`RayExecutor`: one Ray task per notebook, model and target (:mod:`infopt.run.ray_executor`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from infopt.run.clock import hostname, utc_now
from infopt.run.execute import (Zygote, error_text, execute, export_job_html, io_failure,
                                kernel_manager_class)
from infopt.run.manifest import Manifest
from infopt.run.plan import Job, Plan


@dataclass
class RunContext:
    """What every executor needs to know about the run it works for."""

    plan: Plan
    manifest: Manifest
    timeout: int | None = None     # per-cell limit in seconds (None: none)
    html: bool = True              # export each executed notebook to HTML
    progress: object | None = None  # a tqdm bar, advanced once per finished job
    after_job: Callable[[Job], None] | None = None  # called after each model notebook (the local executor)
    zygote: Zygote | None = None   # the run's kernel zygote (local notebooks fork from it), or None


class Executor(Protocol):
    """Runs ``jobs`` and records each job's result on it (see the module docstring)."""

    name: str

    def run(self, jobs: list[Job], context: RunContext) -> None: ...


class LocalExecutor:
    """One notebook after another in a kernel on this interpreter: forked from the run's kernel zygote
    (``context.zygote``, :func:`~infopt.run.execute.kernel_zygote`) when there is one and it serves the notebook
    (:meth:`~infopt.run.execute.Zygote.serves`), else in a plain one."""

    name = "local"

    def run(self, jobs: list[Job], context: RunContext) -> None:
        plan, manifest = context.plan, context.manifest
        log = plan.run_dir / ".kernels.log"
        zygote = context.zygote
        plain, forked = kernel_manager_class(log), kernel_manager_class(log, zygote.socket if zygote else None)
        for job in jobs:
            if context.progress is not None:
                context.progress.set_postfix_str(f"{job.key} on {job.target.label if job.target else 'this host'}")
            job.status, job.started_utc, job.error = "running", utc_now(), None
            job.host = hostname()
            if job.model is None:  # the report reads run.json: it sees the measuring part as finished
                manifest.save("failed" if any(j.status not in ("succeeded", "skipped") for j in plan.jobs
                                              if j is not job) else "succeeded")
            else:
                manifest.save()
            start = time.perf_counter()
            try:
                managers = forked if zygote and zygote.serves(job.notebook) else plain
                execute(job, timeout=context.timeout, cwd=job.output.parent, kernel_manager_class=managers)
                job.status = "succeeded"
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                if io_failure(exc):
                    raise
                if getattr(exc, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
                    raise KeyboardInterrupt from exc
                job.status = "failed"
                job.error = error_text(exc, timeout=context.timeout, notebook=job.output.name)
                print(f"FAILED {job.key}: {job.error}", file=sys.stderr)
            job.duration_s = round(time.perf_counter() - start, 2)
            if context.html:
                export_job_html(job, plan.run_dir)
            manifest.save()
            if context.after_job is not None and job.model is not None:
                context.after_job(job)
            if context.progress is not None:
                context.progress.update(1)


class RayExecutor:
    """Model notebooks as Ray tasks over the GPUs and hosts of a Ray cluster (``address`` None: a local one)."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address

    def run(self, jobs: list[Job], context: RunContext) -> None:
        from infopt.run.ray_executor import run_model_jobs  # Ray is an optional extra

        run_model_jobs(jobs, context, address=self.address)


def executor_for(args) -> Executor:
    """The executor ``--executor`` names (``--ray-address`` for Ray)."""
    if getattr(args, "executor", "local") == "ray":
        return RayExecutor(getattr(args, "ray_address", None))
    return LocalExecutor()


__all__ = ["Executor", "LocalExecutor", "RayExecutor", "RunContext", "executor_for"]
