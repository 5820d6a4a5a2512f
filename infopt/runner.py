"""Headless execution of the lab's notebooks with papermill (``python run_notebooks.py``).

One run = every selected notebook for every selected model on one device,
then the report. Layout::

    <output>/<run-name>/run.json                      manifest (atomic, updated after each notebook)
    <output>/<run-name>/report.ipynb, report.html
    <output>/<run-name>/<device>/<model>/<notebook>.ipynb, .html, {model}_{device}_*.csv|json, trace.json, charts/

Everything a user can get wrong is checked before any kernel starts (one line
on stderr, exit code 2). Notebooks run one after another (timing notebooks must
never share the device), each in a kernel running this very interpreter. A
failing notebook is kept (papermill's error banner), recorded, and the run goes
on; the exit code is then 1. Ctrl-C marks the manifest ``interrupted``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .devices import DEVICE_CHOICES, choose_device, device_kind
from .errors import InfoptError, InvalidInputError
from .models import check_model_name, list_models

REPO_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MODEL_NOTEBOOKS = ("benchmark", "profile", "memory", "optimize")
REPORT_NOTEBOOK = "report"
MANIFEST = "run.json"
SCHEMA_VERSION = 1
KERNEL_NAME = "python3"

#: Rough seconds per notebook on an otherwise idle 2-core CPU (kernel start and imports included), used only
#: for the up-front estimate. Full size: from a measured default run on a 2-core AVX-512 CPU (2026-11-26),
#: adjusted for the 8 s benchmark / 5 s variant caps on CPU (see model_parameters). GPUs are faster.
ESTIMATE_S = {
    "tiny": {"benchmark": 14, "profile": 14, "memory": 10, "optimize": 15, "report": 10},
    "full": {
        "benchmark": {"resnet50": 75, "gpt2": 170, "distilbert": 75},
        "profile": {"resnet50": 35, "gpt2": 80, "distilbert": 45},
        "memory": {"resnet50": 15, "gpt2": 45, "distilbert": 16},
        "optimize": {"resnet50": 115, "gpt2": 150, "distilbert": 85},
        "report": 12,
    },
}
#: Caps (seconds) on each timed point of a full CPU run, to keep the default run near 15 minutes.
CPU_VARIANT_MAX_TIME_S = 5.0
CPU_BENCHMARK_MAX_TIME_S = 8.0


class RunnerError(InfoptError):
    """A run that cannot start (bad option, existing run folder, notebook without a parameter)."""


# -- command line --------------------------------------------------------------

class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as one line on stderr and exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="run_notebooks.py",
        description="Execute the infopt notebooks headless for each model on one device, then the report.",
    )
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="device to measure on; auto = cuda, then mps, then cpu (default: auto)")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help=f"models to run (default: all of {', '.join(list_models())})")
    parser.add_argument("--notebooks", nargs="+", default=list(MODEL_NOTEBOOKS), metavar="NOTEBOOK",
                        help=f"per-model notebooks to run (default: {' '.join(MODEL_NOTEBOOKS)}); the report always runs")
    parser.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=None, metavar="N",
                        help="batch sizes to sweep (default: 1 4 8 16; --quick: 1 2 4)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny model sizes and few timing iterations: a smoke run of the whole pipeline")
    parser.add_argument("--output", default="results", help="folder that holds the runs (default: results)")
    parser.add_argument("--run-name", default=None, help="run folder name (default: a UTC timestamp)")
    parser.add_argument("--timeout", type=_positive_int, default=None, metavar="SECONDS",
                        help="per-cell execution timeout in seconds (default: none)")
    parser.add_argument("--html", action=argparse.BooleanOptionalAction, default=True,
                        help="also export every executed notebook to HTML (default: on)")
    parser.add_argument("--list", action="store_true",
                        help="list models, devices and notebook parameters, then exit")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing run folder, skipping notebooks that already succeeded "
                             "with the same parameters")
    parser.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                        help="extra notebook parameter (JSON value) passed to every notebook that declares it")
    parser.add_argument("--notebook-dir", default=str(REPO_NOTEBOOKS), help=argparse.SUPPRESS)
    return parser


# -- plan ----------------------------------------------------------------------

@dataclass
class Job:
    """One notebook execution (a model notebook or the report)."""

    notebook: str
    model: str | None
    source: Path
    output: Path              # executed .ipynb
    parameters: dict
    status: str = "pending"   # pending | running | succeeded | failed | skipped | interrupted
    duration_s: float | None = None
    error: str | None = None
    started_utc: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.notebook}" if self.model else self.notebook

    def comparable_parameters(self) -> dict:
        """Parameters minus absolute paths, for --resume's "same parameters" check."""
        return {k: v for k, v in self.parameters.items() if k not in ("output_dir", "results_dir", "overwrite")}


@dataclass
class Plan:
    run_dir: Path
    device: str              # what the notebooks receive, e.g. "cpu" or "cuda:0"
    device_label: str        # folder name: cpu | cuda | mps
    device_choice: dict
    settings: dict
    jobs: list[Job] = field(default_factory=list)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_run_name() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def notebook_parameters(path: Path) -> dict:
    """Declared parameters of a notebook (``papermill.inspect_notebook``)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def model_parameters(notebook: str, model: str, device: str, out_dir: Path, args) -> dict:
    """What the runner passes to a per-model notebook (sizes chosen so a CPU run stays near 15 minutes)."""
    quick = bool(args.quick)
    batch_sizes = list(args.batch_sizes or ([1, 2, 4] if quick else [1, 4, 8, 16]))
    one_batch = max([b for b in batch_sizes if b <= 8] or [min(batch_sizes)])
    params = {"model": model, "device": device, "size": "tiny" if quick else "full", "quick": quick,
              "output_dir": str(out_dir), "interactive": False}
    if quick:
        params["seq_len"] = 32
    if notebook == "benchmark":
        params["batch_sizes"] = batch_sizes
        if quick:
            params.update(prompt_lengths=[8, 32], no_cache_prompt_lengths=[8], new_tokens=8)
        elif device_kind(device) == "cpu":  # without the cache every step recomputes the prompt: one length shows it
            params.update(max_time_s=CPU_BENCHMARK_MAX_TIME_S, no_cache_prompt_lengths=[32])
    elif notebook == "profile":
        params.update(batch_size=one_batch, peaks_path=str(out_dir.parent / "device_peaks.json"))
        if quick:
            params["active"] = 1
    elif notebook == "memory":
        params.update(batch_sizes=batch_sizes, timeline_batch_size=one_batch)
        if quick:
            params.update(kv_prompt_len=8, kv_new_tokens=8)
    elif notebook == "optimize":
        params["batch_sizes"] = list(args.batch_sizes) if args.batch_sizes else ([4] if quick else [1, 8])
        # torch.compile takes minutes per variant on a CPU: measured on GPUs by default, opt in on CPU
        # with --param include_compile=true.
        params["include_compile"] = not quick and device_kind(device) != "cpu"
        if not quick and device_kind(device) == "cpu":
            params["max_time_s"] = CPU_VARIANT_MAX_TIME_S
        if quick:  # a few representative variants: the pipeline, not the search, is what --quick checks
            params["variants"] = ["channels-last", "bf16", "int8-dynamic"]
    return params


def report_parameters(run_dir: Path, output_root: Path, args) -> dict:
    return {"results_dir": str(output_root), "output_dir": str(run_dir), "run_name": run_dir.name,
            "interactive": False}


def build_plan(args) -> Plan:
    """Validate every option and build the list of executions; raises InfoptError on bad input."""
    notebook_dir = Path(args.notebook_dir)
    models = [check_model_name(m) for m in (args.models or list_models())]
    if len(set(models)) != len(models):
        raise InvalidInputError(f"--models lists a model twice: {' '.join(models)}.")
    notebooks = list(args.notebooks)
    for name in notebooks:
        if name not in MODEL_NOTEBOOKS:
            raise InvalidInputError(f"Unknown notebook '{name}': choose from {', '.join(MODEL_NOTEBOOKS)}.")
    if len(set(notebooks)) != len(notebooks):
        raise InvalidInputError(f"--notebooks lists a notebook twice: {' '.join(notebooks)}.")
    choice = choose_device(args.device)
    device = str(choice.device)
    label = device_kind(choice.device)
    run_name = args.run_name or default_run_name()
    if not run_name or run_name in (".", "..") or "/" in run_name or os.sep in run_name:
        raise InvalidInputError(f"--run-name must be a plain folder name, got {run_name!r}.")
    output_root = Path(args.output).resolve()
    run_dir = output_root / run_name
    if run_dir.exists() and not args.resume:
        raise RunnerError(f"Run folder {run_dir} already exists; pass --resume to continue it or choose "
                          f"another --run-name.")
    if args.resume and not (run_dir / MANIFEST).is_file():
        raise RunnerError(f"Cannot --resume: {run_dir / MANIFEST} does not exist.")

    sources = {name: notebook_dir / f"{name}.ipynb" for name in [*notebooks, REPORT_NOTEBOOK]}
    for name, path in sources.items():
        if not path.is_file():
            raise RunnerError(f"Notebook {path} does not exist.")
    declared = {name: notebook_parameters(path) for name, path in sources.items()}

    settings = {"models": models, "notebooks": notebooks, "batch_sizes": args.batch_sizes, "quick": args.quick,
                "timeout_s": args.timeout, "html": args.html, "output": str(output_root),
                "extra_parameters": dict(args.param), "notebook_dir": str(notebook_dir.resolve())}
    plan = Plan(run_dir=run_dir, device=device, device_label=label, device_choice=choice.as_dict(),
                settings=settings)
    for model in models:
        out_dir = run_dir / label / model
        for name in notebooks:
            params = model_parameters(name, model, device, out_dir, args)
            plan.jobs.append(Job(name, model, sources[name], out_dir / f"{name}.ipynb", params))
    plan.jobs.append(Job(REPORT_NOTEBOOK, None, sources[REPORT_NOTEBOOK], run_dir / f"{REPORT_NOTEBOOK}.ipynb",
                         report_parameters(run_dir, output_root, args)))

    extra = dict(args.param)
    for name in extra:
        if not any(name in declared[job.notebook] for job in plan.jobs):
            raise InvalidInputError(f"No selected notebook declares a parameter named '{name}'.")
    for job in plan.jobs:
        job.parameters.update({k: v for k, v in extra.items() if k in declared[job.notebook]})
        unknown = sorted(set(job.parameters) - set(declared[job.notebook]))
        if unknown:
            raise RunnerError(f"Notebook {job.source.name} has no parameter named {', '.join(map(repr, unknown))} "
                              f"(it declares: {', '.join(declared[job.notebook])}).")
    return plan


def estimate_seconds(plan: Plan) -> float:
    """Rough duration of the notebooks still to run (see :data:`ESTIMATE_S`)."""
    table = ESTIMATE_S["tiny" if plan.settings["quick"] else "full"]
    total = 0.0
    for job in plan.jobs:
        if job.status != "skipped":
            entry = table.get(job.notebook, 60)
            total += entry.get(job.model, 60) if isinstance(entry, dict) else entry
    return total


# -- kernel ----------------------------------------------------------------------

def _kernel_manager_class():
    """An AsyncKernelManager whose kernel is this interpreter with this infopt on its path.

    Using the runner's ``sys.executable`` (not whatever ``python3`` kernelspec
    happens to be installed) makes ``import infopt`` work in a virtualenv and
    guarantees the notebooks run the same code as the runner.
    """
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    package_root = str(Path(__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)

    class SameInterpreterKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self):
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python ({sys.executable})", language="python",
                    env={"PYTHONPATH": python_path}, metadata={"debugger": True},
                )
            return self._kernel_spec

    return SameInterpreterKernelManager


# -- manifest ------------------------------------------------------------------

def _write_json_atomic(obj: dict, path: Path) -> None:
    from .results import save_json

    save_json(obj, path, overwrite=True)


class Manifest:
    """``run.json``: command, settings, environment and each notebook's status, rewritten atomically."""

    def __init__(self, plan: Plan, argv: list[str]):
        from . import env

        self.plan = plan
        self.path = plan.run_dir / MANIFEST
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        environment = env.collect()
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "run_name": plan.run_dir.name,
            "status": "running",
            "command": argv,
            "command_line": " ".join(shlex.quote(a) for a in argv),
            "started_utc": _utc_now(),
            "finished_utc": None,
            "duration_s": None,
            "device": plan.device_choice,
            "device_label": plan.device_label,
            "settings": plan.settings,
            "environment": environment,
            "git_commit": environment.get("git_commit"),
            "notebooks": [],
        }
        if previous:
            self.data["previous_attempts"] = previous.get("previous_attempts", []) + [
                {k: previous.get(k) for k in ("command_line", "started_utc", "finished_utc", "status")}]
        self.previous_jobs = {entry["key"]: entry for entry in previous.get("notebooks", [])}

    def job_entry(self, job: Job) -> dict:
        return {
            "key": job.key, "notebook": job.notebook, "model": job.model, "device": self.plan.device_label,
            "path": str(job.output.relative_to(self.plan.run_dir)),
            "html": str(job.output.with_suffix(".html").relative_to(self.plan.run_dir)),
            "parameters": job.parameters, "status": job.status, "duration_s": job.duration_s,
            "started_utc": job.started_utc, "error": job.error,
        }

    def save(self, status: str | None = None) -> None:
        if status:
            self.data["status"] = status
            self.data["finished_utc"] = _utc_now()
            started = _dt.datetime.fromisoformat(self.data["started_utc"])
            self.data["duration_s"] = round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)
        self.data["notebooks"] = [self.job_entry(job) for job in self.plan.jobs]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.data, self.path)


def mark_resumable(plan: Plan, manifest: Manifest) -> None:
    """Skip notebooks that already succeeded with the same parameters; re-runs may overwrite stale files."""
    for job in plan.jobs:
        before = manifest.previous_jobs.get(job.key)
        same = before is not None and {k: v for k, v in before.get("parameters", {}).items()
                                       if k not in ("output_dir", "results_dir", "overwrite")} \
            == job.comparable_parameters()
        if job.model is not None and same and before.get("status") in ("succeeded", "skipped") \
                and job.output.is_file():
            job.status, job.duration_s, job.error = "skipped", before.get("duration_s"), None
        elif job.model is not None and before is not None:
            job.parameters["overwrite"] = True  # stale results of a failed attempt or of other parameters


# -- execution -----------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _html_exporter():
    from nbconvert import HTMLExporter

    return HTMLExporter()  # built once: loading the templates costs about a second


def export_html(notebook_path: Path) -> Path:
    """``jupyter nbconvert --to html`` equivalent (charts are the text/html outputs the notebooks emit)."""
    import nbformat

    body, _ = _html_exporter().from_notebook_node(nbformat.read(str(notebook_path), as_version=4))
    from .results import atomic_path

    target = notebook_path.with_suffix(".html")
    with atomic_path(target) as temporary:
        temporary.write_text(body, encoding="utf-8")
    return target


def _error_text(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


def execute(job: Job, *, timeout: int | None, cwd: Path, kernel_manager_class) -> None:
    """Run one notebook with papermill; the partially executed notebook is written even on failure."""
    import papermill

    job.output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(job.source), str(job.output), parameters=job.parameters, kernel_name=KERNEL_NAME,
        progress_bar={"desc": f"  {job.key}", "leave": False, "position": 1},
        cwd=str(cwd), execution_timeout=timeout, kernel_manager_class=kernel_manager_class,
    )


def run_plan(plan: Plan, args, argv: list[str], manifest: Manifest | None = None) -> int:
    from tqdm.auto import tqdm

    manifest = manifest or Manifest(plan, argv)
    manifest.save()
    kernel_manager_class = _kernel_manager_class()
    todo = [job for job in plan.jobs if job.status != "skipped"]
    overall = tqdm(total=len(todo), desc="overall", unit="notebook", position=0)
    current = None
    try:
        for job in todo:
            current = job
            overall.set_postfix_str(f"{job.key} on {plan.device_label}")
            job.status, job.started_utc, job.error = "running", _utc_now(), None
            manifest.save()
            start = time.perf_counter()
            try:
                execute(job, timeout=args.timeout, cwd=job.output.parent, kernel_manager_class=kernel_manager_class)
                job.status = "succeeded"
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                if getattr(exc, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
                    raise KeyboardInterrupt from exc
                job.status, job.error = "failed", _error_text(exc)
                tqdm.write(f"FAILED {job.key}: {job.error}", file=sys.stderr)
            job.duration_s = round(time.perf_counter() - start, 2)
            if args.html and job.output.is_file():
                try:
                    export_html(job.output)
                except Exception as exc:  # noqa: BLE001
                    job.error = (job.error + "; " if job.error else "") + f"HTML export failed: {_error_text(exc)}"
                    job.status = "failed"
            manifest.save()
            overall.update(1)
            current = None
    except KeyboardInterrupt:
        if current is not None:
            current.status, current.error = "interrupted", "stopped by Ctrl-C"
        for job in plan.jobs:
            if job.status == "pending":
                job.status = "not run"
        manifest.save("interrupted")
        overall.close()
        print(f"\nInterrupted; finished results stay in {plan.run_dir} (run.json says 'interrupted').",
              file=sys.stderr)
        return 130
    overall.close()
    failed = [job for job in plan.jobs if job.status not in ("succeeded", "skipped")]
    manifest.save("failed" if failed else "succeeded")
    print_summary(plan)
    return 1 if failed else 0


def print_summary(plan: Plan) -> None:
    rows = [(job.key, job.status, "" if job.duration_s is None else f"{job.duration_s:.1f}", job.error or "")
            for job in plan.jobs]
    widths = [max(len(r[i]) for r in rows + [("notebook", "status", "seconds", "")]) for i in range(3)]
    print(f"\nRun {plan.run_dir} on {plan.device}:")
    print(f"  {'notebook':<{widths[0]}}  {'status':<{widths[1]}}  {'seconds':>{widths[2]}}  error")
    for key, status, seconds, error in rows:
        print(f"  {key:<{widths[0]}}  {status:<{widths[1]}}  {seconds:>{widths[2]}}  {error[:100]}")
    report = plan.run_dir / "report.html"
    if report.is_file():
        print(f"Report: {report}")


def list_everything(notebook_dir: Path) -> None:
    print(f"models: {' '.join(list_models())}")
    print(f"devices: {' '.join(DEVICE_CHOICES)}")
    for name in [*MODEL_NOTEBOOKS, REPORT_NOTEBOOK]:
        path = notebook_dir / f"{name}.ipynb"
        if not path.is_file():
            print(f"\n{name}: missing ({path})")
            continue
        print(f"\n{name} ({path}) parameters:")
        for param in notebook_parameters(path).values():
            print(f"  {param['name']}: {param['inferred_type_name']} = {param['default']}  {param['help']}")


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
        list_everything(Path(args.notebook_dir))
        return 0
    try:
        plan = build_plan(args)
    except InfoptError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    command = [sys.argv[0] if from_cli else "run_notebooks.py", *argv]
    manifest = Manifest(plan, command) if args.resume else None
    if manifest is not None:
        mark_resumable(plan, manifest)
    else:
        plan.run_dir.mkdir(parents=True)
    skipped = sum(job.status == "skipped" for job in plan.jobs)
    minutes = estimate_seconds(plan) / 60
    print(f"infopt run '{plan.run_dir.name}': {len(plan.jobs) - skipped} notebook(s)"
          f"{f' ({skipped} already done, skipped)' if skipped else ''} on {plan.device} "
          f"({plan.device_choice['reason']}), {'quick (tiny models)' if args.quick else 'full size'}.")
    if not args.quick and plan.device_label == "cpu" and "optimize" in plan.settings["notebooks"] \
            and "include_compile" not in plan.settings["extra_parameters"]:
        print("Note: torch.compile variants are skipped on CPU (minutes of compilation each); "
              "add --param include_compile=true to measure them.")
    print(f"Estimated time: about {minutes:.0f} min (rough guide from a 2-core CPU; GPUs are faster). "
          f"Output: {plan.run_dir}", flush=True)
    return run_plan(plan, args, command, manifest)
