"""The plan of a run: one :class:`Job` per notebook, model and device target (target after target), the run's
settings, and ``--resume``'s rule that a continued run keeps the settings it started with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from infopt import layout
from infopt.devices import DeviceTarget, device_kind, resolve_targets
from infopt.errors import InfoptError, InvalidInputError
from infopt.measure.timing import check_threads
from infopt.models import list_models, spec_folder_name, validate_spec
from infopt import presets
from infopt.run.cli import REPO_NOTEBOOKS, RUNNER_PARAMETERS, check_param, notebook_parameters
from infopt.presets import MODEL_NOTEBOOKS, REPORT_NOTEBOOK


class RunnerError(InfoptError):
    """A run that cannot start (bad option, existing run folder, notebook without a parameter)."""


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


def default_run_name() -> str:
    return layout.timestamp()


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
    "threads": ("--threads", "threads", None),
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


def targets_of(args, texts) -> list[DeviceTarget]:
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
        targets = targets_of(args, given)
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


def check_data_option(args, models: list[str]) -> dict:
    """``--data`` loaded and probed for every model (on CPU) before any kernel starts; ``--accuracy-budget``
    needs it. Returns the notebook parameters and what the manifest records (split sizes and hashes)."""
    data, budget = getattr(args, "data", None), getattr(args, "accuracy_budget", None)
    if data is None:
        if budget is not None:
            raise InvalidInputError("--accuracy-budget needs --data: without data the guard compares outputs on "
                                    "random inputs, which has no accuracy to budget.")
        return {"parameters": {}, "record": {}}
    from infopt.data.check import check_data
    from infopt.data.specs import parse_data_spec
    from infopt.models import load_model

    parse_data_spec(data)
    records = {}
    for model in models:
        wrapper = load_model(model, device="cpu")
        records[model] = {**check_data(data, wrapper), "model_weights": wrapper.weights}
    parameters = {"data": data, "accuracy_budget": -1.0 if budget is None else float(budget)}
    return {"parameters": parameters, "record": {"data": data, "accuracy_budget": budget, "data_records": records}}


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
    targets = targets_of(args, args.device)
    if args.threads is not None:
        check_threads(args.threads)
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
    data_settings = check_data_option(args, models)
    texts = [target.text for target in targets]
    # one preset for every target (the usual case) is recorded as before; targets that differ (a full run on
    # cuda and cpu) get theirs by folder label
    names = {label: preset.name for label, preset in target_presets.items()}
    shared = len(set(names.values())) == 1
    first = next(iter(target_presets.values()))
    settings = {"device": texts[0] if len(texts) == 1 else texts, "models": models, "notebooks": notebooks,
                "batch_sizes": args.batch_sizes,
                "quick": args.quick, "timeout_s": args.timeout, "threads": args.threads, "html": args.html,
                "output": str(output_root),
                "extra_parameters": extra, "notebook_dir": str(notebook_dir.resolve()),
                **data_settings["record"],
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
        job.parameters.update({k: v for k, v in data_settings["parameters"].items() if k in declared[job.notebook]})
        unknown = sorted(set(job.parameters) - set(declared[job.notebook]))
        if unknown:
            raise RunnerError(f"Notebook {job.source.name} has no parameter named {', '.join(map(repr, unknown))} "
                              f"(it declares: {', '.join(declared[job.notebook])}).")
    return plan


__all__ = ["Job", "Plan", "RunnerError", "SETTING_FLAGS", "build_plan", "check_data_option", "default_run_name",
           "device_list", "model_parameters", "read_manifest", "report_parameters", "resolve_settings", "run_preset", "targets_of"]
