"""Where a run's files live: the one owner of the ``<run>/<target>/<model>/`` layout.

::

    <results>/<run>/run.json                          manifest (MANIFEST_NAME)
    <results>/<run>/report.ipynb, report.html, charts/
    <results>/<run>/<target>/device_peaks.json        peaks, measured once per device target and run
    <results>/<run>/<target>/<model>/<notebook>.ipynb, .html, {model}_{device}_{kind}.csv|json, trace.json, charts/

``<target>`` is the folder label of a device target (:func:`infopt.devices.resolve_targets`):
``cpu``, ``cuda`` or ``mps``, or with a Ray placement selector ``cuda-H100``, ``cpu-zone-a``;
``{device}`` in file names stays the device kind. ``<model>`` is the model spec
made filesystem-safe (``torchvision:vit_b_16`` -> ``torchvision-vit_b_16``).
A :class:`RunLayout` is built from a results folder and a run name
(:meth:`RunLayout.at`), from a model folder or from any result file in it
(:meth:`RunLayout.of_file`). Notebooks opened by hand write to a fresh
``<results>/interactive`` run (one folder per device and model, shared by
every hand run; :func:`default_results_dir` says where ``<results>`` is).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from infopt.errors import InvalidInputError

MANIFEST_NAME = "run.json"
PEAKS_NAME = "device_peaks.json"
CHARTS_NAME = "charts"
LOCK_NAME = ".run.lock"
#: UTC timestamps of run names (``20261126-142501``) and interactive folders.
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
#: Longest run name accepted (file systems allow 255 bytes; leave room for temporary-file prefixes).
MAX_RUN_NAME = 120
#: Environment variable that names the results folder (see :func:`default_results_dir`).
RESULTS_ENV = "INFOPT_RESULTS"
#: The run folder, under the results folder, that notebooks opened by hand (no ``output_dir``) share.
INTERACTIVE_RUN = "interactive"
#: Where a report opened by hand (no ``output_dir``) writes, under the results folder.
REPORTS_NAME = "reports"


def default_results_dir() -> Path:
    """The results folder, the same from any working directory (papermill, nbconvert, JupyterLab).

    ``$INFOPT_RESULTS`` if set, else ``results/`` of the checkout infopt runs
    from, else ``~/infopt-results`` for an installed package. Never relative to the cwd.
    """
    import os

    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "infopt").is_dir():
        return checkout / "results"
    return Path.home() / "infopt-results"


def timestamp() -> str:
    """The current UTC time as a folder name (:data:`TIMESTAMP_FORMAT`)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime(TIMESTAMP_FORMAT)


def model_folder_name(model: str) -> str:
    """The folder name of a model spec (``torchvision:vit_b_16`` -> ``torchvision-vit_b_16``): never a path.

    The spec's own folder name (:func:`infopt.models.specs.spec_folder_name`) where the spec parses, else the
    file-name-safe form of the text.
    """
    from infopt.names import safe_name

    try:
        from infopt.models.specs import spec_folder_name
    except ImportError:  # pragma: no cover - specs is part of the package
        return safe_name(model)
    try:
        return spec_folder_name(model)
    except Exception:  # noqa: BLE001 - an unparsable name still gets a safe folder; the model check reports it
        return safe_name(model)


def check_run_name(name: str) -> str:
    """A run name is one plain folder name of reasonable length; anything else is refused in one sentence."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("--run-name must not be empty.")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise InvalidInputError(f"--run-name must be a plain folder name, got {name!r}.")
    if len(name.encode("utf-8")) > MAX_RUN_NAME:
        raise InvalidInputError(f"--run-name is {len(name.encode('utf-8'))} bytes long; the limit is {MAX_RUN_NAME}.")
    return name


@dataclass(frozen=True)
class RunLayout:
    """The folders and files of one run, all derived from the run folder."""

    run_dir: Path

    @classmethod
    def at(cls, results_dir: str | Path, run_name: str) -> "RunLayout":
        """The run ``run_name`` under the results folder (the name is validated, the folder not created)."""
        return cls(Path(results_dir) / check_run_name(run_name))

    @classmethod
    def of_model_folder(cls, model_dir: str | Path) -> "RunLayout":
        """The run a ``<run>/<device>/<model>`` folder belongs to."""
        return cls(Path(model_dir).parent.parent)

    @classmethod
    def of_file(cls, result_file: str | Path, known_runs=()) -> "RunLayout":
        """The run a result file belongs to: the nearest of ``known_runs`` above it, else ``<run>/<device>/<model>/file``."""
        path = Path(result_file)
        known = set(map(Path, known_runs))
        for parent in path.parents:
            if parent in known:
                return cls(parent)
        return cls.of_model_folder(path.parent)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def results_dir(self) -> Path:
        """The folder holding this run and the runs next to it (what the report reads)."""
        return self.run_dir.parent

    @property
    def manifest(self) -> Path:
        return self.run_dir / MANIFEST_NAME

    @property
    def lock(self) -> Path:
        return self.run_dir / LOCK_NAME

    @property
    def report_notebook(self) -> Path:
        return self.run_dir / "report.ipynb"

    @property
    def charts(self) -> Path:
        """The report's chart folder."""
        return self.run_dir / CHARTS_NAME

    def device_dir(self, device_label: str) -> Path:
        return self.run_dir / device_label

    def peaks_file(self, device_label: str) -> Path:
        """Device peaks shared by every model of the run on that device."""
        return self.device_dir(device_label) / PEAKS_NAME

    def model_dir(self, device_label: str, model: str) -> Path:
        return self.device_dir(device_label) / model_folder_name(model)

    def notebook_output(self, device_label: str, model: str, notebook: str) -> Path:
        return self.model_dir(device_label, model) / f"{notebook}.ipynb"

    def target_of(self, path: str | Path) -> str | None:
        """The ``<target>`` folder label of a file in ``<run>/<target>/<model>/``, else None."""
        try:
            parts = Path(path).relative_to(self.run_dir).parts
        except ValueError:
            return None
        return parts[0] if len(parts) >= 3 else None


def chart_folder(folder: str | Path) -> Path:
    """Where charts of the notebook writing to ``folder`` go."""
    return Path(folder) / CHARTS_NAME


def _device_label(device: str) -> str:
    from infopt.devices import choose_device, device_kind  # torch: only for notebooks that measure

    return device_kind(choose_device(device).device)


def model_output_folder(output_dir: str, model: str, device: str) -> Path:
    """The folder a model notebook writes to, created (absolute).

    ``output_dir=""`` (a notebook opened by hand) means
    ``<results>/interactive/<device>/<model>``, shared by every notebook run by
    hand for that model (a hand re-run replaces its own files); the runner passes its own folder.
    """
    if output_dir:
        folder = Path(output_dir)
    else:
        folder = RunLayout(default_results_dir() / INTERACTIVE_RUN).model_dir(_device_label(device), model)
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def report_output_folder(output_dir: str) -> Path:
    """Where the report writes: ``output_dir`` (the run folder) or a fresh ``<results>/reports/<timestamp>``."""
    folder = Path(output_dir) if output_dir else default_results_dir() / REPORTS_NAME / timestamp()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


__all__ = ["CHARTS_NAME", "entry_host", "INTERACTIVE_RUN", "LOCK_NAME", "MANIFEST_NAME", "MAX_RUN_NAME", "PEAKS_NAME",
           "REPORTS_NAME", "RESULTS_ENV", "RunLayout", "default_results_dir", "TIMESTAMP_FORMAT", "chart_folder", "check_run_name", "model_folder_name",
           "model_output_folder", "report_output_folder", "timestamp"]


def entry_host(entry: dict) -> str | None:
    """The host that ran a manifest notebook entry: its ``host``, else its Ray ``placement``'s."""
    return entry.get("host") or (entry.get("placement") or {}).get("host")
