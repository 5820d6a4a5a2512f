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
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import layout, presets
from .devices import DEVICE_CHOICES, TARGET_SYNTAX, DeviceTarget, device_kind, device_name, parse_target, \
    resolve_targets
from .errors import InfoptError, InvalidInputError
from .models import list_models, spec_folder_name, spec_help, validate_spec
from .presets import MODEL_NOTEBOOKS, REPORT_NOTEBOOK

REPO_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SCHEMA_VERSION = 1
PROG = "run_notebooks.py"
KERNEL_NAME = "python3"
#: Seconds the machine is watched before the first timing notebook (infopt.interference.check_machine).
MACHINE_CHECK_S = 3.0

#: Rough seconds per notebook on an otherwise idle 2-core CPU (kernel start and imports included), used only
#: for the up-front estimate when this host has no earlier run of the same notebook. Full size: the notebooks'
#: durations in a default run (``run_notebooks.py --device cpu``, preset full-cpu, 29 min) measured alone on a
#: 2-core AVX-512 CPU on 2026-11-26. GPUs are faster.
ESTIMATE_S = {
    "tiny": {"benchmark": 14, "profile": 14, "memory": 10, "optimize": 15, "report": 10},
    "full": {
        "benchmark": {"resnet50": 59, "gpt2": 159, "distilbert": 60},
        "profile": {"resnet50": 42, "gpt2": 79, "distilbert": 47},
        "memory": {"resnet50": 14, "gpt2": 44, "distilbert": 15},
        "optimize": {"resnet50": 276, "gpt2": 736, "distilbert": 201},
        "report": 10,
    },
}


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


def _param(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as (name, raw text); the value is converted once the notebook's declared type is known."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    if not name.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a parameter name, got {text!r}")
    return name.strip(), raw


def _device_target(text: str) -> str:
    """A target's canonical text (``cuda``, ``cpu@zone=a``); its syntax is checked here, the device later."""
    try:
        return parse_target(text).text
    except InfoptError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: Notebook parameters the runner sets itself, and the flag that sets each (None: the runner alone).
RUNNER_PARAMETERS = {
    "model": "--models", "device": "--device", "batch_sizes": "--batch-sizes", "quick": "--quick",
    "size": "--quick", "output_dir": "--output and --run-name", "results_dir": "--output", "run_name": "--run-name",
    "overwrite": "--resume", "peaks_path": None, "interactive": None,
}
#: Rules beyond the declared type, the same the named flags apply.
_POSITIVE_INTS = {"seq_len", "batch_size", "timeline_batch_size", "active", "new_tokens", "kv_prompt_len",
                  "kv_new_tokens"}
_POSITIVE_INT_LISTS = {"prompt_lengths": False, "no_cache_prompt_lengths": True}  # name: may be empty
_POSITIVE_NUMBERS = {"max_time_s"}
_STRING_LISTS = {"variants"}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "list": "a JSON list", "dict": "a JSON object"}


def check_param(name: str, raw: str, declared_type: str) -> object:
    """The value of ``--param name=raw`` for a parameter declared as ``declared_type``; one sentence if wrong.

    Parameters the runner sets are refused with a pointer to their flag; values must have the declared type
    (JSON syntax: ``true``, ``[1, 2]``; a ``str`` parameter takes the text as is) and pass the same checks as
    the named flags (sizes and lengths at least 1, time caps above 0).
    """
    if name in RUNNER_PARAMETERS:
        flag = RUNNER_PARAMETERS[name]
        raise InvalidInputError(f"--param {name} is set by the runner" + (f": use {flag} instead." if flag else
                                ("; headless runs have no widgets." if name == "interactive" else ".")))
    where = f"--param {name}={raw}"
    if declared_type == "str":
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        return value if isinstance(value, str) else raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInputError(f"{where}: expected {_TYPE_WORDS.get(declared_type, declared_type)} "
                                f"(JSON syntax), got {raw!r}.") from None
    python_type = {"int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict}.get(declared_type)
    if python_type is not None and (not isinstance(value, python_type)
                                    or (declared_type in ("int", "float") and isinstance(value, bool))):
        raise InvalidInputError(f"{where}: expected {_TYPE_WORDS[declared_type]}, got {raw!r}.")
    if declared_type == "float":
        value = float(value)
    if name in _POSITIVE_INTS and value < 1:
        raise InvalidInputError(f"{where}: must be at least 1.")
    if name in _POSITIVE_NUMBERS and not value > 0:
        raise InvalidInputError(f"{where}: must be above 0.")
    if name in _POSITIVE_INT_LISTS:
        if not value and not _POSITIVE_INT_LISTS[name]:
            raise InvalidInputError(f"{where}: must list at least one length.")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            raise InvalidInputError(f"{where}: every entry must be an integer of at least 1.")
    if name in _STRING_LISTS and not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInputError(f"{where}: every entry must be a non-empty string.")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description="Execute the infopt notebooks headless for each model on each device target, then the report.",
    )
    parser.add_argument("--device", nargs="+", default=None, type=_device_target, metavar="TARGET",
                        help="one or more device targets to measure on, each in its own <target>/ folder and one "
                             "after another with the local executor; auto = cuda, then mps, then cpu (default: "
                             f"auto). TARGET is {TARGET_SYNTAX}, e.g. cuda@accelerator_type:H100")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help=f"models to run: built-in names (default: all of {', '.join(list_models())}), "
                             "torchvision:<name>, hf:<folder or cached hub id> or py:<module>:<function> "
                             "(see --list and the README's 'Your own model')")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="NOTEBOOK",
                        help=f"per-model notebooks to run (default: {' '.join(MODEL_NOTEBOOKS)}); the report always runs")
    parser.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=None, metavar="N",
                        help=f"batch sizes to sweep (default: {' '.join(map(str, presets.FULL.batch_sizes))}; "
                             f"--quick: {' '.join(map(str, presets.QUICK.batch_sizes))})")
    parser.add_argument("--quick", action="store_true", default=None,
                        help="tiny model sizes and few timing iterations: a smoke run of the whole pipeline")
    parser.add_argument("--output", default="results", help="folder that holds the runs (default: results)")
    parser.add_argument("--run-name", default=None, help="run folder name (default: a UTC timestamp)")
    parser.add_argument("--timeout", type=_positive_int, default=None, metavar="SECONDS",
                        help="per-cell execution timeout in seconds (default: none)")
    parser.add_argument("--html", action=argparse.BooleanOptionalAction, default=None,
                        help="also export every executed notebook to HTML (default: on)")
    parser.add_argument("--list", action="store_true",
                        help="list models, devices and notebook parameters, then exit")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing run folder with its recorded settings, skipping notebooks "
                             "that already succeeded (other flags must match the run's settings or be left out)")
    parser.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                        help="extra notebook parameter (JSON value, checked against its declared type) passed to "
                             "every notebook that declares it; parameters with a flag of their own are refused")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: one notebook after another on this machine (default); ray: one Ray task per "
                             "notebook, model and device, over the GPUs and hosts of a Ray cluster (README: "
                             "'More than one machine')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster to send jobs to with --executor ray (default: start a local Ray instance)")
    parser.add_argument("--strict-quiet", action="store_true",
                        help="refuse to measure (exit 2) when the machine check before the first timing notebook "
                             "finds other processes busy (default: say so, record it in run.json, carry on)")
    parser.add_argument("--notebook-dir", default=None, help=argparse.SUPPRESS)
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
    placement: dict | None = None  # where an executor other than the local one ran it (node, host, times)
    target: DeviceTarget | None = None  # the device target of a model notebook (None: the report)
    named_target: bool = False  # several targets: the key names the target too ("cuda-H100/gpt2/benchmark")
    host: str | None = None   # the host that ran it (the local executor: this one; Ray: the placement's)

    @property
    def key(self) -> str:
        if not self.model:
            return self.notebook
        return f"{self.target.label}/{self.model}/{self.notebook}" if self.named_target and self.target \
            else f"{self.model}/{self.notebook}"

    def comparable_parameters(self) -> dict:
        """Parameters minus absolute paths, for --resume's "same parameters" check."""
        return {k: v for k, v in self.parameters.items() if k not in ("output_dir", "results_dir", "overwrite")}


@dataclass
class Plan:
    run_dir: Path
    targets: list[DeviceTarget]  # the devices measured, in order; each has its <label>/ tree
    settings: dict
    jobs: list[Job] = field(default_factory=list)
    previous: dict | None = None  # the manifest of the run being resumed

    @property
    def layout(self) -> layout.RunLayout:
        return layout.RunLayout(self.run_dir)

    @property
    def device(self) -> str:
        """What the notebooks of the first (in a single-target run: the only) target receive, e.g. "cuda:0"."""
        return self.targets[0].device

    @property
    def device_label(self) -> str:
        """The first target's folder name (cpu, cuda, cuda-H100)."""
        return self.targets[0].label

    def describe(self) -> str:
        """The targets for the terminal: ``cpu (requested)`` or ``cpu (requested), cuda-H100 (cuda, ...)``."""
        if len(self.targets) == 1:
            return f"{self.device} ({self.targets[0].reason})"
        return ", ".join(f"{t.label} ({t.device}, {t.reason})" for t in self.targets)


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_run_name() -> str:
    return layout.timestamp()


def notebook_parameters(path: Path) -> dict:
    """Declared parameters of a notebook (``papermill.inspect_notebook``)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def run_preset(args, device: str) -> presets.Preset:
    """The preset of this run (quick, full, or full with the CPU caps), with ``--batch-sizes`` applied."""
    preset = presets.preset_for(bool(args.quick), device_kind(device))
    return preset.with_batch_sizes(args.batch_sizes) if args.batch_sizes else preset


def model_parameters(notebook: str, model: str, device: str, run: layout.RunLayout, preset: presets.Preset,
                     label: str | None = None) -> dict:
    """What the runner passes to a per-model notebook: the preset's sizes plus model, device and folders
    (``<label>/<model>/``; the label defaults to the device kind)."""
    label = label or device_kind(device)
    params = {"model": model, "device": device, "output_dir": str(run.model_dir(label, model)), "interactive": False,
              **preset.notebook_parameters(notebook)}
    if notebook == "profile":
        params["peaks_path"] = str(run.peaks_file(label))
    return params


def report_parameters(run_dir: Path, output_root: Path, args) -> dict:
    return {"results_dir": str(output_root), "output_dir": str(run_dir), "run_name": run_dir.name,
            "interactive": False}


#: Flags that make up a run's settings: argparse name -> (flag, manifest settings key, default).
SETTING_FLAGS = {
    "device": ("--device", "device", "auto"),
    "models": ("--models", "models", None),
    "notebooks": ("--notebooks", "notebooks", list(MODEL_NOTEBOOKS)),
    "batch_sizes": ("--batch-sizes", "batch_sizes", None),
    "quick": ("--quick", "quick", False),
    "timeout": ("--timeout", "timeout_s", None),
    "html": ("--html/--no-html", "html", True),
    "notebook_dir": ("--notebook-dir", "notebook_dir", str(REPO_NOTEBOOKS)),
}


def read_manifest(path: Path) -> dict:
    """A run's ``run.json`` for ``--resume``; anything but a manifest object is refused in one sentence."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunnerError(f"Cannot --resume: {path} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunnerError(f"Cannot --resume: {path} is not readable JSON ({error}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict) \
            or not isinstance(data.get("notebooks", []), list):
        raise RunnerError(f"Cannot --resume: {path} is not a run manifest (expected a JSON object with 'settings').")
    return data


def device_list(value) -> list[str]:
    """``settings.device`` as a list of targets: one text in a single-target run, a list with several."""
    return [value] if isinstance(value, str) else [str(v) for v in value or ["auto"]]


def _targets_of(args, texts) -> list[DeviceTarget]:
    """Resolve ``--device``'s targets for the chosen executor (a remote Ray cluster is not this machine)."""
    ray = getattr(args, "executor", "local") == "ray"
    return resolve_targets(device_list(texts), ray=ray, check_locally=not (ray and getattr(args, "ray_address", None)))


def _recorded_labels(manifest: dict) -> list[str] | None:
    targets = manifest.get("targets")
    if isinstance(targets, list) and targets:
        return sorted(str(t.get("label")) for t in targets if isinstance(t, dict))
    return [manifest["device_label"]] if manifest.get("device_label") else None


def _same_setting(name: str, given, recorded, manifest: dict, args=None) -> bool:
    if name == "device":  # the same devices, in the same folders (--device cpu continues an "auto" run on a CPU)
        labels = _recorded_labels(manifest)
        targets = _targets_of(args, given)
        if labels is None:  # a manifest without folder labels: compare the devices
            return [t.device for t in targets] == [(manifest.get("device") or {}).get("device")]
        return sorted(t.label for t in targets) == labels
    if name == "models":
        return sorted(validate_spec(m) for m in given) == sorted(recorded or list_models())
    if name == "notebook_dir":
        return Path(given).resolve() == Path(recorded).resolve()
    return given == recorded


def resolve_settings(args) -> dict | None:
    """Fill the settings flags: defaults for a new run, the manifest's for ``--resume`` (returned).

    A resumed run keeps the settings it started with, so a flag given with ``--resume`` must agree with
    them; one that contradicts them is refused, naming the difference.
    """
    if not args.resume:
        for name, (_, _, default) in SETTING_FLAGS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        return None
    if args.run_name is None:
        raise RunnerError("--resume needs the --run-name of the run to continue.")
    manifest = read_manifest(layout.RunLayout.at(Path(args.output).resolve(), args.run_name).manifest)
    settings = manifest["settings"]
    for name, (flag, key, default) in SETTING_FLAGS.items():
        recorded = settings.get(key, default)
        if name == "device" and key not in settings:
            recorded = (manifest.get("device") or {}).get("requested", default)
        given = getattr(args, name)
        if given is not None and not _same_setting(name, given, recorded, manifest, args):
            shown = " ".join(map(str, given)) if isinstance(given, list) else given
            raise RunnerError(f"--resume: {flag} {shown} contradicts the run's recorded setting {key}={recorded!r}; "
                              f"leave it out to continue the run with its own settings.")
        setattr(args, name, recorded if name != "models" or recorded else None)
    recorded_params = settings.get("extra_parameters") or {}
    if not isinstance(recorded_params, dict):
        raise RunnerError("Cannot --resume: the manifest's extra_parameters is not an object.")
    if args.param:
        given = {}
        for name, raw in args.param:
            try:
                given[name] = json.loads(raw)
            except json.JSONDecodeError:
                given[name] = raw
        if given != recorded_params:
            raise RunnerError(f"--resume: --param {' '.join(f'{k}={v}' for k, v in args.param)} contradicts the run's "
                              f"recorded parameters {recorded_params!r}; leave --param out to continue the run.")
    args.param = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in recorded_params.items()]
    return manifest


def build_plan(args) -> Plan:
    """Validate every option and build the list of executions; raises InfoptError on bad input."""
    previous = resolve_settings(args)
    notebook_dir = Path(args.notebook_dir)
    # validate_spec: cheap checks (no model build except a py: factory), canonical spec (absolute hf: folder)
    models = [validate_spec(m) for m in (args.models or list_models())]
    folders = [spec_folder_name(m) for m in models]
    if len(set(folders)) != len(folders):
        raise InvalidInputError(f"--models lists a model twice (or two that share a results folder): "
                                f"{' '.join(models)}.")
    notebooks = list(args.notebooks)
    for name in notebooks:
        if name not in MODEL_NOTEBOOKS:
            raise InvalidInputError(f"Unknown notebook '{name}': choose from {', '.join(MODEL_NOTEBOOKS)}.")
    if len(set(notebooks)) != len(notebooks):
        raise InvalidInputError(f"--notebooks lists a notebook twice: {' '.join(notebooks)}.")
    targets = _targets_of(args, args.device)
    run_name = default_run_name() if args.run_name is None else args.run_name
    output_root = Path(args.output).resolve()
    if output_root.exists() and not output_root.is_dir():
        raise InvalidInputError(f"--output {output_root} is a file, not a folder.")
    run = layout.RunLayout.at(output_root, run_name)
    run_dir = run.run_dir
    if run_dir.exists() and not args.resume:
        raise RunnerError(f"Run folder {run_dir} already exists; pass --resume to continue it or choose "
                          f"another --run-name.")

    sources = {name: notebook_dir / f"{name}.ipynb" for name in [*notebooks, REPORT_NOTEBOOK]}
    for name, path in sources.items():
        if not path.is_file():
            raise RunnerError(f"Notebook {path} does not exist.")
    declared = {name: notebook_parameters(path) for name, path in sources.items()}

    target_presets = {target.label: run_preset(args, target.device) for target in targets}
    extra = {}
    for name, raw in args.param:
        declaring = [n for n in sources if name in declared[n]]
        if name in RUNNER_PARAMETERS:
            check_param(name, raw, "str")  # refused, with the flag to use instead
        if not declaring:
            raise InvalidInputError(f"No selected notebook declares a parameter named '{name}'.")
        for notebook in declaring:  # the same name must be valid for every notebook that declares it
            extra[name] = check_param(name, raw, declared[notebook][name]["inferred_type_name"])
    texts = [target.text for target in targets]
    # one preset for every target (the usual case) is recorded as before; targets that differ (a full run on
    # cuda and cpu) get theirs by folder label
    names = {label: preset.name for label, preset in target_presets.items()}
    shared = len(set(names.values())) == 1
    first = next(iter(target_presets.values()))
    settings = {"device": texts[0] if len(texts) == 1 else texts, "models": models, "notebooks": notebooks,
                "batch_sizes": args.batch_sizes,
                "quick": args.quick, "timeout_s": args.timeout, "html": args.html, "output": str(output_root),
                "extra_parameters": extra, "notebook_dir": str(notebook_dir.resolve()),
                "preset": first.name if shared else names,
                "preset_values": first.to_dict() if shared else {k: v.to_dict() for k, v in target_presets.items()}}
    plan = Plan(run_dir=run_dir, targets=targets, settings=settings, previous=previous)
    for target in targets:  # target after target: the local executor measures one device at a time
        for model in models:
            for name in notebooks:
                params = model_parameters(name, model, target.device, run, target_presets[target.label],
                                          label=target.label)
                plan.jobs.append(Job(name, model, sources[name], run.notebook_output(target.label, model, name),
                                     params, target=target, named_target=len(targets) > 1))
    plan.jobs.append(Job(REPORT_NOTEBOOK, None, sources[REPORT_NOTEBOOK], run.report_notebook,
                         report_parameters(run_dir, output_root, args)))

    for job in plan.jobs:
        job.parameters.update({k: v for k, v in extra.items() if k in declared[job.notebook]})
        unknown = sorted(set(job.parameters) - set(declared[job.notebook]))
        if unknown:
            raise RunnerError(f"Notebook {job.source.name} has no parameter named {', '.join(map(repr, unknown))} "
                              f"(it declares: {', '.join(declared[job.notebook])}).")
    return plan


def recorded_durations(plan: Plan) -> dict[tuple, float]:
    """Seconds this host took for the same notebook, model, target and parameters in earlier runs (newest wins).

    Read from the run.json files next to this run, so the estimate of a repeated run is this machine's own
    measurement, not a table from another machine.
    """
    this_host = _hostname()
    found: dict[tuple, float] = {}
    manifests = sorted(plan.run_dir.parent.glob(f"*/{layout.MANIFEST_NAME}"), key=lambda p: p.stat().st_mtime)
    for path in manifests:  # oldest first: newer runs overwrite
        if path.parent == plan.run_dir:
            continue
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict):
            continue
        here = (manifest.get("environment") or {}).get("hostname")
        for entry in manifest.get("notebooks") or []:
            if not isinstance(entry, dict):
                continue
            host = layout.entry_host(entry) or here
            if entry.get("status") == "succeeded" and entry.get("duration_s") and host == this_host:
                params = {k: v for k, v in (entry.get("parameters") or {}).items()
                          if k not in ("output_dir", "results_dir", "overwrite", "run_name", "peaks_path")}
                label = (entry.get("device") or manifest.get("device_label")) if entry.get("model") else None
                found[(label, entry.get("notebook"), entry.get("model"), json.dumps(params, sort_keys=True))] = \
                    float(entry["duration_s"])
    return found


def _recorded_key(job: Job) -> tuple:
    params = {k: v for k, v in job.comparable_parameters().items() if k not in ("run_name", "peaks_path")}
    return job.target.label if job.target else None, job.notebook, job.model, json.dumps(params, sort_keys=True)


def estimate_seconds(plan: Plan, recorded: dict | None = None) -> float:
    """Duration of the notebooks still to run: this host's earlier run of the same job, else :data:`ESTIMATE_S`."""
    table = ESTIMATE_S["tiny" if plan.settings["quick"] else "full"]
    recorded = recorded_durations(plan) if recorded is None else recorded
    total = 0.0
    for job in plan.jobs:
        if job.status != "skipped":
            seen = recorded.get(_recorded_key(job))
            if seen is not None:
                total += seen
                continue
            entry = table.get(job.notebook, 60)
            total += entry.get(job.model, 60) if isinstance(entry, dict) else entry
    return total


# -- kernel ----------------------------------------------------------------------

def _kernel_manager_class(kernel_log: Path | None = None):
    """An AsyncKernelManager whose kernel is this interpreter with this infopt on its path.

    Using the runner's ``sys.executable`` (not whatever ``python3`` kernelspec
    happens to be installed) makes ``import infopt`` work in a virtualenv and
    guarantees the notebooks run the same code as the runner. With ``kernel_log``
    the kernel process's own stderr (its start-up warnings, ZeroMQ tracebacks when
    it is interrupted or shut down) is appended there instead of reaching the
    terminal; what the notebook's code prints stays in the notebook.
    """
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    package_root = str(Path(__file__).resolve().parent.parent)
    # the runner's working directory too, so py:<module>:<function> factories import in the kernel as here
    python_path = os.pathsep.join(p for p in (package_root, os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)

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

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if kernel_log is not None and "stderr" not in kw:
                with open(kernel_log, "a", encoding="utf-8") as sink:  # the child keeps its own descriptor
                    kw["stderr"] = sink
                    return await super()._async_launch_kernel(kernel_cmd, **kw)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

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
        self.path = plan.layout.manifest
        previous = plan.previous or {}
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
            # a single-target run keeps the fields it always had; "targets" lists every target (one or more)
            **({"device": {k: plan.targets[0].as_dict()[k] for k in ("device", "requested", "reason")},
                "device_label": plan.device_label} if len(plan.targets) == 1 else {}),
            "targets": [target.as_dict() for target in plan.targets],
            "settings": plan.settings,
            "environment": environment,
            "git_commit": environment.get("git_commit"),
            "notebooks": [],
        }
        entries = [entry for entry in previous.get("notebooks", []) if isinstance(entry, dict) and "key" in entry]
        if previous:  # every earlier attempt stays on record, with what each of its notebooks did
            attempt = {k: previous.get(k) for k in ("command_line", "started_utc", "finished_utc", "status",
                                                    "failure_reason")}
            attempt["notebooks"] = [{k: entry.get(k) for k in ("key", "status", "duration_s", "error")}
                                    for entry in entries]
            earlier = previous.get("previous_attempts")
            self.data["previous_attempts"] = (earlier if isinstance(earlier, list) else []) + [attempt]
        self.previous_jobs = {entry["key"]: entry for entry in entries}
        planned = {job.key for job in plan.jobs}
        #: jobs of the run this plan does not hold (e.g. from an older runner): kept as they were
        self.other_jobs = [entry for entry in entries if entry["key"] not in planned]

    def job_entry(self, job: Job) -> dict:
        """One notebook's record; a model notebook's names its target, and once it ran, the host (and the Ray
        node, in ``placement``) that ran it and the hardware behind its device (``device_name``)."""
        target = {}
        if job.target is not None:
            before = self.previous_jobs.get(job.key) or {}
            host = (job.placement or {}).get("host") or job.host or (before.get("host") if job.status == "skipped"
                                                                     else None)
            name = (job.placement or {}).get("device_name")
            if name is None and host is not None and not job.placement:  # ran here: this machine's environment
                name = before.get("device_name") if job.status == "skipped" else \
                    device_name(self.data["environment"], job.target.device)
            target = {"target": job.target.text, "host": host, "device_name": name}
        return {
            "key": job.key, "notebook": job.notebook, "model": job.model,
            "device": job.target.label if job.target else self.plan.device_label,
            **target,
            "path": str(job.output.relative_to(self.plan.run_dir)),
            "html": str(job.output.with_suffix(".html").relative_to(self.plan.run_dir)),
            "parameters": job.parameters, "status": job.status, "duration_s": job.duration_s,
            "started_utc": job.started_utc, "error": job.error,
            **({"placement": job.placement} if job.placement else {}),
        }

    def save(self, status: str | None = None) -> None:
        if status:
            self.data["status"] = status
            self.data["finished_utc"] = _utc_now()
            started = _dt.datetime.fromisoformat(self.data["started_utc"])
            self.data["duration_s"] = round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)
        self.data["notebooks"] = [self.job_entry(job) for job in self.plan.jobs] + self.other_jobs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.data, self.path)


class RunLock:
    """``<run>/.run.lock``: one runner per run folder at a time.

    The lock holds the owner's process id and host. A lock whose process is gone (same host) is stale and
    taken over; a live one makes a second runner stop with one line. It is removed when the run ends.
    """

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def _owner(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _alive(owner: dict) -> bool:
        import socket

        pid = owner.get("pid")
        if not isinstance(pid, int) or owner.get("host") != socket.gethostname():
            return True  # another host's (or a half-written) lock: cannot tell, so respect it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> "RunLock":
        import socket

        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_utc": _utc_now()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released meanwhile
                if owner and not self._alive(owner):
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()  # stale: its runner is gone
                    continue
                if not owner and time.time() - self._mtime() > 10:
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()  # unreadable for long: a crash while writing it
                    continue
                who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "another runner"
                raise RunnerError(f"Run folder {self.path.parent} is in use by {who} (lock file {self.path}); "
                                  f"wait for it to finish, or delete the lock file if that runner is gone.")
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(record + "\n")
            self.held = True
            return self
        raise RunnerError(f"Could not take the lock {self.path}: it keeps changing.")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self.held = False


def mark_resumable(plan: Plan, manifest: Manifest) -> None:
    """Skip notebooks that already succeeded with the same parameters; re-runs may overwrite stale files."""
    for job in plan.jobs:
        before = manifest.previous_jobs.get(job.key)
        same = before is not None and isinstance(before.get("parameters"), dict) and \
            {k: v for k, v in before["parameters"].items()
                                       if k not in ("output_dir", "results_dir", "overwrite")} \
            == job.comparable_parameters()
        if job.model is not None and same and before.get("status") in ("succeeded", "skipped") \
                and job.output.is_file():
            job.status, job.duration_s, job.error = "skipped", before.get("duration_s"), None
        elif job.model is not None and before is not None:
            job.parameters["overwrite"] = True  # stale results of a failed attempt or of other parameters


# -- execution -----------------------------------------------------------------

def export_html(notebook_path: Path, plotly_js: Path | None = None) -> Path:
    """The shareable page of an executed notebook: code hidden, charts via the run's one plotly.min.js, no CDN."""
    from .htmlexport import export_html as _export

    return _export(notebook_path, plotly_js=plotly_js)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, CI): handled like Ctrl-C."""


class RunWriteError(InfoptError):
    """The runner could not write the run's files (full disk, read-only or vanished folder): the run stops."""


def io_failure(error: BaseException) -> bool:
    """An error of the runner's own file writing (the run stops), not of a notebook (recorded, the run goes on).

    A cell timeout is a ``TimeoutError``, itself an ``OSError``: it belongs to the notebook.
    """
    return isinstance(error, OSError) and not isinstance(error, TimeoutError)


def describe_os_error(error: OSError) -> str:
    """``no space left on device: /path`` (the reason, then the file), one line."""
    reason = (error.strerror or str(error) or type(error).__name__).strip().lower()
    name = error.filename or ""
    return f"{reason}: {name}" if name else reason


def _timed_out_cell(notebook_path: Path) -> int | None:
    """1-based number of the cell papermill was running in a timed-out executed notebook (its last started one)."""
    import nbformat

    try:
        nb = nbformat.read(str(notebook_path), as_version=4)
    except Exception:  # noqa: BLE001 - best effort: the message still says a cell timed out
        return None
    started = [index for index, cell in enumerate(nb.cells)
               if (cell.get("metadata", {}).get("papermill") or {}).get("start_time")]
    return started[-1] + 1 if started else None


def _error_text(exc: BaseException, *, timeout: int | None = None, notebook: str = "the notebook") -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    if type(exc).__name__ == "CellTimeoutError" or isinstance(exc, TimeoutError):
        cell = getattr(exc, "infopt_cell", None)
        where = f"cell {cell} of {notebook}" if cell else f"a cell of {notebook}"
        return f"CellTimeoutError: {where} ran past the --timeout of {timeout} s per cell"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


def partial_path(output: Path) -> Path:
    """Where a notebook is written while it runs: a hidden name, moved to ``output`` once it has ended."""
    return output.with_name(f".{output.stem}.partial{output.suffix}")


def execute(job: Job, *, timeout: int | None, cwd: Path, kernel_manager_class) -> None:
    """Run one notebook with papermill into a temporary name; the executed notebook replaces ``job.output``
    when it ends, failed or not (papermill's error banner included), never while it is partial."""
    import papermill

    job.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(job.output)
    ended = False
    try:
        papermill.execute_notebook(
            str(job.source), str(temporary), parameters=job.parameters, kernel_name=KERNEL_NAME,
            progress_bar={"desc": f"  {job.key}", "leave": False, "position": 1, "disable": None},
            cwd=str(cwd), execution_timeout=timeout, kernel_manager_class=kernel_manager_class,
        )
        ended = True
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing notebook ended: keep it, with the cell that failed
        if io_failure(exc):
            raise
        ended = getattr(exc, "ename", None) != "KeyboardInterrupt"
        if type(exc).__name__ == "CellTimeoutError" or isinstance(exc, TimeoutError):
            exc.infopt_cell = _timed_out_cell(temporary)  # read before the file moves
        raise
    finally:
        if ended and temporary.is_file():
            os.replace(temporary, job.output)
        else:
            with contextlib.suppress(OSError):
                temporary.unlink()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so it ends a run like Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored():
    """Let the final manifest write finish even if a second Ctrl-C or SIGTERM arrives."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _quiet_shutdown_noise() -> None:
    """After an interrupt, kernel-client sockets and tasks torn down mid-flight print tracebacks at exit
    (ZeroMQ, asyncio): none of it is about the run, so it stays off the terminal."""
    import asyncio
    import logging

    sys.unraisablehook = lambda unraisable: None
    for name in ("asyncio", "traitlets", "papermill", "nbclient", "jupyter_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with contextlib.suppress(Exception):
        asyncio.get_event_loop_policy().get_event_loop().set_exception_handler(lambda loop, context: None)


class _RecordedElsewhere(logging.Filter):
    """nbclient logs a cell timeout before raising it; the runner records it (cell and limit) and prints one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout waiting for execute reply")


_PAPERMILL_LOG_FILTER = _RecordedElsewhere()


def _stop_jobs(plan: Plan, current: Job | None, status: str, error: str) -> None:
    """A run cut short: the notebook in flight gets ``status`` and ``error``, the pending ones "not run"."""
    if current is not None:
        current.status, current.error = status, error
    for job in plan.jobs:
        if job.status == "pending":
            job.status = "not run"


def run_plan(plan: Plan, args, argv: list[str], manifest: Manifest | None = None) -> int:
    """Execute the plan's jobs in order; returns the exit code.

    0: every notebook succeeded; 1: a notebook failed, or the run's files could not be written (the run
    stops, ``run.json`` says why if it can still be written); 130 / 143: Ctrl-C / SIGTERM (finished results
    stay, ``run.json`` says ``interrupted``).
    """
    from tqdm.auto import tqdm

    manifest = manifest or Manifest(plan, argv)
    logging.getLogger("papermill").addFilter(_PAPERMILL_LOG_FILTER)  # papermill hands its logger to nbclient
    kernel_manager_class = _kernel_manager_class(plan.run_dir / ".kernels.log")
    todo = [job for job in plan.jobs if job.status != "skipped"]
    overall = tqdm(total=len(todo), desc="overall", unit="notebook", position=0, disable=None)
    current = None
    try:
        with _sigterm_as_interrupt():
            manifest.save()
            if getattr(args, "executor", "local") == "ray":  # model notebooks as Ray tasks; the report stays here
                from .ray_executor import run_model_jobs

                todo = run_model_jobs(plan, args, manifest, overall)
            for job in todo:
                current = job
                overall.set_postfix_str(f"{job.key} on {job.target.label if job.target else 'this host'}")
                job.status, job.started_utc, job.error = "running", _utc_now(), None
                job.host = _hostname()
                if job.model is None:  # the report reads run.json: it sees the measuring part as finished
                    manifest.save("failed" if any(j.status not in ("succeeded", "skipped") for j in plan.jobs
                                                  if j is not job) else "succeeded")
                else:
                    manifest.save()
                start = time.perf_counter()
                try:
                    execute(job, timeout=args.timeout, cwd=job.output.parent,
                            kernel_manager_class=kernel_manager_class)
                    job.status = "succeeded"
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                    if io_failure(exc):
                        raise
                    if getattr(exc, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
                        raise KeyboardInterrupt from exc
                    job.status = "failed"
                    job.error = _error_text(exc, timeout=args.timeout, notebook=job.output.name)
                    tqdm.write(f"FAILED {job.key}: {job.error}", file=sys.stderr)
                job.duration_s = round(time.perf_counter() - start, 2)
                if args.html and job.output.is_file():
                    try:
                        export_html(job.output, plan.run_dir / "plotly.min.js")
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        if io_failure(exc):
                            raise
                        job.error = (job.error + "; " if job.error else "") + \
                            f"HTML export failed: {_error_text(exc)}"
                        job.status = "failed"
                manifest.save()
                overall.update(1)
                current = None
            failed = [job for job in plan.jobs if job.status not in ("succeeded", "skipped")]
            manifest.save("failed" if failed else "succeeded")
    except KeyboardInterrupt as interrupt:
        with _signals_ignored():
            _quiet_shutdown_noise()
            by = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
            _stop_jobs(plan, current, "interrupted", f"stopped by {by}")
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
        _stop_jobs(plan, current, "failed", f"write failed: {reason}")
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
    from .summary import print_headline  # the report's headline table, so the answer shows without a file

    print_headline(plan.run_dir)
    return 1 if failed else 0


def print_summary(plan: Plan) -> None:
    rows = [(job.key, job.status, "" if job.duration_s is None else f"{job.duration_s:.1f}", job.error or "")
            for job in plan.jobs]
    widths = [max(len(r[i]) for r in rows + [("notebook", "status", "seconds", "")]) for i in range(3)]
    where = plan.device if len(plan.targets) == 1 else ", ".join(t.label for t in plan.targets)
    print(f"\nRun {plan.run_dir} on {where}:")
    print(f"  {'notebook':<{widths[0]}}  {'status':<{widths[1]}}  {'seconds':>{widths[2]}}  error")
    for key, status, seconds, error in rows:
        print(f"  {key:<{widths[0]}}  {status:<{widths[1]}}  {seconds:>{widths[2]}}  {error[:100]}")
    from .interference import run_quality_lines

    for line in run_quality_lines(plan.run_dir):  # flagged / non-converged / too-few-samples rows, per file
        print(line)
    report = plan.run_dir / "report.html"
    if report.is_file():
        print(f"Report: {report}")


def list_everything(notebook_dir: Path) -> None:
    print(f"models: {' '.join(list_models())}")
    print(f"  {spec_help()}")
    print(f"devices: {' '.join(DEVICE_CHOICES)} cuda:N; --device takes several targets, each {TARGET_SYNTAX}")
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
        list_everything(Path(args.notebook_dir or REPO_NOTEBOOKS))
        return 0
    try:
        plan = build_plan(args)
        from . import ray_executor  # Ray missing, cluster unreachable, option misfit: one line, exit 2, before any run

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
        with _sigterm_as_interrupt():
            return _start(plan, args, command)
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


def _start(plan: Plan, args, command: list[str]) -> int:
    manifest = Manifest(plan, command)
    if args.resume:
        mark_resumable(plan, manifest)
    skipped = sum(job.status == "skipped" for job in plan.jobs)
    recorded = recorded_durations(plan)
    estimate_s = estimate_seconds(plan, recorded)
    print(f"infopt run '{plan.run_dir.name}': {len(plan.jobs) - skipped} notebook(s)"
          f"{f' ({skipped} already done, skipped)' if skipped else ''} on {plan.describe()}, "
          f"{'quick (tiny models)' if args.quick else 'full size'}.")
    if not args.quick and any(t.kind == "cpu" for t in plan.targets) and "optimize" in plan.settings["notebooks"] \
            and "include_compile" not in plan.settings["extra_parameters"]:
        print("Note: torch.compile variants are skipped on CPU (20 s to minutes of compilation each); "
              "add --param include_compile=true to measure them (the compile-freezing ones are often the fastest).")
    todo = [job for job in plan.jobs if job.status != "skipped"]
    known = sum(_recorded_key(job) in recorded for job in todo)
    source = "rough guide from a 2-core CPU; GPUs are faster" if not known else \
        f"{known} of {len(todo)} notebooks as long as this machine's last run of them"
    duration = f"{estimate_s:.0f} s" if estimate_s < 90 else f"{estimate_s / 60:.0f} min"
    print(f"Estimated time: about {duration} ({source}). Output: {plan.run_dir}", flush=True)
    if any(job.model is not None and job.status != "skipped" for job in plan.jobs):  # timing notebooks to run
        from .interference import check_machine

        # a GPU resolved on this machine is watched too (NVML); a target Ray places elsewhere is not this machine
        watched = next((t.device for t in plan.targets if t.kind == "cuda" and ":" in t.device), None) \
            or next((t.device for t in plan.targets if t.kind == "mps"), "cpu")
        state = check_machine(MACHINE_CHECK_S, watched)
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
