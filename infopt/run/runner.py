"""Headless execution of the lab's notebooks with papermill (``python run_notebooks.py``).

One run = every selected notebook for every selected model on each device
target (``--device cuda cpu``: :func:`infopt.devices.resolve_targets`, one
``<target>/<model>/`` tree each, target after target), then the report, in the
folders :class:`infopt.layout.RunLayout` defines, with the sizes of one
:class:`infopt.presets.Preset` per target (recorded in ``run.json``).

Everything a user can get wrong is checked before any kernel starts (one line
on stderr, exit code 2), ``--param`` values included. Notebooks run one after
another (timing notebooks must never share the device), each in a kernel running
this very interpreter, while the run folder is locked (``.run.lock``). A failing
notebook is kept (papermill's error banner), recorded, and the run goes on; the
exit code is then 1. A failure to write the run's own files stops the run (exit 1,
reason in ``run.json``). Ctrl-C (130) and SIGTERM (143) mark it ``interrupted``.
``--resume`` continues a run with the settings in its manifest.

This module is the orchestration only: the command line (:mod:`~infopt.run.cli`), the plan
(:mod:`~infopt.run.plan`), the manifest and lock (:mod:`~infopt.run.manifest`), executing a notebook
(:mod:`~infopt.run.execute`), the estimate (:mod:`~infopt.run.estimate`) and the executors
(:mod:`~infopt.run.executors`) each live in their own module.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from infopt.errors import InfoptError
from infopt.run.cli import PROG, REPO_NOTEBOOKS, build_parser, list_everything
from infopt.run.estimate import estimate_seconds, recorded_durations, recorded_key, search_line
from infopt.run.execute import (PAPERMILL_LOG_FILTER, Terminated, describe_os_error,
                                kernel_zygote, quiet_shutdown_noise, running_kernels, signals_ignored,
                                sigterm_as_interrupt)
from infopt.run.executors import LocalExecutor, RunContext, executor_for
from infopt.run.manifest import Manifest, RunLock, mark_resumable
from infopt.run.plan import Plan, RunnerError, build_plan, read_manifest

#: Seconds the machine is watched before the first timing notebook (infopt.measure.interference.check_machine);
#: a quick run's smoke figures are not results, so it looks for one second.
MACHINE_CHECK_S = 3.0
QUICK_MACHINE_CHECK_S = 1.0


def stop_jobs(plan: Plan, status: str, error: str) -> None:
    """A run cut short: the notebooks in flight get ``status`` and ``error``, the pending ones "not run"."""
    for job in plan.jobs:
        if job.status == "running":
            job.status, job.error = status, error
        elif job.status == "pending":
            job.status = "not run"


def run_plan(plan: Plan, args, argv: list[str], manifest: Manifest | None = None) -> int:
    """Execute the plan's jobs (model notebooks with the chosen executor, then the report here); returns the
    exit code.

    0: every notebook succeeded; 1: a notebook failed, or the run's files could not be written (the run
    stops, ``run.json`` says why if it can still be written); 130 / 143: Ctrl-C / SIGTERM (finished results
    stay, ``run.json`` says ``interrupted``).
    """
    from tqdm.auto import tqdm

    manifest = manifest or Manifest(plan, argv)
    logging.getLogger("papermill").addFilter(PAPERMILL_LOG_FILTER)  # papermill hands its logger to nbclient
    todo = [job for job in plan.jobs if job.status != "skipped"]
    overall = tqdm(total=len(todo), desc="overall", unit="notebook", position=0, disable=None)
    context = RunContext(plan, manifest, timeout=args.timeout, html=bool(args.html), progress=overall)
    try:
        with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
            manifest.save()
            timed = [job for job in todo if job.model is not None]
            reference_device = next((t.device for t in plan.targets if t.kind == "cuda" and ":" in t.device), None) \
                or next((t.device for t in plan.targets if t.kind == "mps"), "cpu")
            quick = bool(plan.settings.get("quick"))
            if timed:  # machine drift: the fixed reference workload before the first and after the last notebook
                record_drift(manifest, "start", reference_device, quick)
            executor = executor_for(args)
            local = [job for job in todo if job.model is None or isinstance(executor, LocalExecutor)]
            # the libraries imported once, now (nothing else runs), for every local notebook's kernel to fork from;
            # it imports more than one notebook does (6-7 s on 2 cores), so it waits for four model notebooks (the
            # report's kernel, which imports little, does not count)
            if sum(job.model is not None for job in local) >= ZYGOTE_MIN_NOTEBOOKS:
                context.zygote = stack.enter_context(kernel_zygote(plan.run_dir / ".kernels.log"))

            def checkpoint(job):  # ... and after each timing notebook but the last (local executor: Ray's run elsewhere)
                if job.notebook in TIMING_NOTEBOOKS and job is not timed[-1]:
                    record_drift(manifest, "checkpoint", reference_device, quick, job.key)

            context.after_job = checkpoint
            executor.run(timed, context)
            if timed:
                record_drift(manifest, "end", reference_device, quick)
            # the report reads every model's files and run.json: on this host, after the model notebooks
            LocalExecutor().run([job for job in todo if job.model is None], context)
            failed = [job for job in plan.jobs if job.status not in ("succeeded", "skipped")]
            manifest.save("failed" if failed else "succeeded")
    except KeyboardInterrupt as interrupt:
        with signals_ignored():
            quiet_shutdown_noise()
            by = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
            stop_jobs(plan, "interrupted", f"stopped by {by}")
            overall.close()
            try:
                manifest.save("interrupted")
                where = "run.json says 'interrupted'"
            except OSError as error:
                where = f"run.json could not be updated: {describe_os_error(error)}"
            print(f"Interrupted by {by}; finished results stay in {plan.run_dir} ({where}).", file=sys.stderr)
        return 143 if by == "SIGTERM" else 130
    except OSError as error:  # io_failure: the runner's own writes
        reason = describe_os_error(error)
        stop_jobs(plan, "failed", f"write failed: {reason}")
        overall.close()
        manifest.data["failure_reason"] = reason
        try:
            manifest.save("failed")
            where = "run.json says 'failed' with the reason"
        except OSError:
            where = "run.json could not be updated either"
        print(f"{PROG}: error: the run stopped because a file could not be written ({reason}); {where}.",
              file=sys.stderr)
        return 1
    overall.close()
    print_summary(plan)
    from infopt.report.summary import print_headline  # the report's headline table, so the answer shows without a file

    print_headline(plan.run_dir)
    from infopt.run.history import log_history

    log_history(plan.run_dir, args)
    return 1 if failed else 0


#: Runs with fewer model notebooks start every kernel plain (the zygote's imports would cost what it saves).
ZYGOTE_MIN_NOTEBOOKS = 4
#: Seconds the runner waits for its notebook kernels to exit before timing the reference workload.
KERNEL_EXIT_WAIT_S = 10.0
#: Notebooks whose timings a run-vs-run comparison reads; the reference is timed again after each of them.
TIMING_NOTEBOOKS = ("benchmark", "optimize")


def record_drift(manifest: Manifest, moment: str, device: str, quick: bool, after: str | None = None) -> None:
    """Time the reference workload (:mod:`infopt.measure.drift`) into ``run.json``'s ``reference_workload``
    (``moment``: "start", "checkpoint" after the notebook ``after``, or "end").

    After a notebook, first wait (up to :data:`KERNEL_EXIT_WAIT_S`) for the notebooks' kernels
    (:func:`~infopt.run.execute.running_kernels`) to exit: a kernel still shutting down competes with the
    reference's second or so of timing, and a slowed reference widens the drift band every run-vs-run comparison
    relies on."""
    import psutil

    from infopt.measure.drift import record_reference

    if moment != "start":
        psutil.wait_procs(running_kernels(), timeout=KERNEL_EXIT_WAIT_S)
    manifest.data["reference_workload"] = record_reference(manifest.data.get("reference_workload"), moment,
                                                           device, quick, after)
    manifest.save()


def print_summary(plan: Plan) -> None:
    rows = [(job.key, job.status, "" if job.duration_s is None else f"{job.duration_s:.1f}", job.error or "")
            for job in plan.jobs]
    widths = [max(len(r[i]) for r in rows + [("notebook", "status", "seconds", "")]) for i in range(3)]
    where = plan.device if len(plan.targets) == 1 else ", ".join(t.label for t in plan.targets)
    print(f"\nRun {plan.run_dir} on {where}:")
    print(f"  {'notebook':<{widths[0]}}  {'status':<{widths[1]}}  {'seconds':>{widths[2]}}  error")
    for key, status, seconds, error in rows:
        print(f"  {key:<{widths[0]}}  {status:<{widths[1]}}  {seconds:>{widths[2]}}  {error[:100]}")
    from infopt.measure.interference import run_quality_lines

    for line in run_quality_lines(plan.run_dir):  # flagged / non-converged / too-few-samples rows, per file
        print(line)
    report = plan.run_dir / "report.html"
    if report.is_file():
        print(f"Report: {report}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``run_notebooks.py``; returns the exit code (0 ok, 1 a notebook failed, 2 bad input)."""
    from_cli = argv is None
    argv = list(sys.argv[1:] if from_cli else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one line (or --help)
        return int(exc.code or 0)
    if args.list:
        list_everything(Path(args.notebook_dir or REPO_NOTEBOOKS))
        return 0
    if args.mlflow is not None:  # the history extra missing: one line before anything runs
        from infopt.run.history import check_available

        try:
            check_available()
        except InfoptError as exc:
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
            return 2
    if args.ab:  # A/B: both models in this process, alternating blocks (infopt.run.ab)
        from infopt.run.ab import run_ab

        return run_ab(args, [sys.argv[0] if from_cli else "run_notebooks.py", *argv])
    try:
        plan = build_plan(args)
        from infopt.run import ray_executor  # Ray missing, cluster unreachable, option misfit: one line, exit 2, before any run

        ray_executor.check_options(args)
        if args.executor == "ray":
            ray_executor.check_targets(ray_executor.connect(args.ray_address), plan.targets)
    except InfoptError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    command = [sys.argv[0] if from_cli else "run_notebooks.py", *argv]
    try:
        lock = take_run_folder(plan, resume=bool(args.resume))
    except InfoptError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        with sigterm_as_interrupt():
            return start(plan, args, command)
    except KeyboardInterrupt as interrupt:  # before the first notebook (run_plan handles the rest)
        by = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
        print(f"Interrupted by {by} before any notebook ran; nothing was measured.", file=sys.stderr)
        return 143 if by == "SIGTERM" else 130
    finally:
        lock.release()
        if not args.resume and not plan.layout.manifest.exists():
            with contextlib.suppress(OSError):  # a new run that never started leaves no folder behind
                plan.run_dir.rmdir()


def take_run_folder(plan: Plan, *, resume: bool) -> RunLock:
    """Create the run folder (a new run) and lock it; a resumed run re-reads its manifest under the lock."""
    try:
        if not resume:
            plan.run_dir.mkdir(parents=True)
        lock = RunLock(plan.layout.lock).acquire()
    except FileExistsError:
        raise RunnerError(f"Run folder {plan.run_dir} already exists (another runner just created it); choose "
                          f"another --run-name.") from None
    except OSError as error:
        raise RunnerError(f"Cannot create the run folder {plan.run_dir}: {describe_os_error(error)}.") from None
    if resume:
        try:
            plan.previous = read_manifest(plan.layout.manifest)  # as the last runner left it
        except InfoptError:
            lock.release()
            raise
    return lock


def start(plan: Plan, args, command: list[str]) -> int:
    from infopt.measure.timing import pin_threads

    pin_threads(plan.settings.get("threads"))  # before the zygote and every kernel: they inherit it
    manifest = Manifest(plan, command)
    if args.resume:
        mark_resumable(plan, manifest)
    skipped = sum(job.status == "skipped" for job in plan.jobs)
    recorded = recorded_durations(plan)
    estimate_s = estimate_seconds(plan, recorded)
    print(f"infopt run '{plan.run_dir.name}': {len(plan.jobs) - skipped} notebook(s)"
          f"{f' ({skipped} already done, skipped)' if skipped else ''} on {plan.describe()}, "
          f"{'quick (tiny models)' if args.quick else 'full size'}.")
    if search_line(plan):
        print(search_line(plan))
    todo = [job for job in plan.jobs if job.status != "skipped"]
    known = sum(recorded_key(job) in recorded for job in todo)
    source = "rough guide from a 2-core CPU; GPUs are faster" if not known else \
        f"{known} of {len(todo)} notebooks as long as this machine's last run of them"
    duration = f"{estimate_s:.0f} s" if estimate_s < 90 else f"{estimate_s / 60:.0f} min"
    print(f"Estimated time: about {duration} ({source}). Output: {plan.run_dir}", flush=True)
    if any(job.model is not None and job.status != "skipped" for job in plan.jobs):  # timing notebooks to run
        from infopt.measure.interference import check_machine

        # a GPU resolved on this machine is watched too (NVML); a target Ray places elsewhere is not this machine
        watched = next((t.device for t in plan.targets if t.kind == "cuda" and ":" in t.device), None) \
            or next((t.device for t in plan.targets if t.kind == "mps"), "cpu")
        state = check_machine(QUICK_MACHINE_CHECK_S if args.quick else MACHINE_CHECK_S, watched)
        manifest.data["machine_check"] = state.to_dict()
        if state.busy:
            print(state.line + (". Refusing to measure (--strict-quiet)." if args.strict_quiet else
                                ". Measuring anyway: rows timed while it stays busy are flagged (interference)."),
                  flush=True)
        if state.busy and args.strict_quiet:
            manifest.data["failure_reason"] = "machine busy before the run (--strict-quiet)"
            manifest.save("refused")
            return 2
    return run_plan(plan, args, command, manifest)


__all__ = ["MACHINE_CHECK_S", "QUICK_MACHINE_CHECK_S", "main", "print_summary", "run_plan", "start", "stop_jobs",
           "take_run_folder"]
