"""Gathering results for the notebooks and the cross-run report.

A results folder holds runs laid out as ``<run>/<device>/<model>/{model}_{device}_{kind}.json``
(``run_notebooks.py`` adds ``<run>/run.json``). Runs copied from other
machines can sit side by side; every gathered row is labelled with its ``run``
(the run folder relative to the results folder) and ``host``.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from pathlib import Path

import pandas as pd

from .errors import InvalidInputError

MANIFEST = "run.json"
INTERACTIVE_ROOT = Path("..") / "results" / "interactive"


def timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def device_label(device: str) -> str:
    """Folder/file label for a device name: ``cpu``, ``cuda`` or ``mps`` (``auto`` resolved, never replaced)."""
    from .devices import choose_device, device_kind  # torch: only for notebooks that measure

    return device_kind(choose_device(device).device)


def output_folder(output_dir: str, model: str, device: str) -> Path:
    """The folder a model notebook writes to, created empty.

    ``output_dir=""`` (a notebook opened by hand) means a fresh
    ``../results/interactive/<UTC timestamp>/<device>/<model>``, so re-running a
    notebook never overwrites an earlier result; the runner passes its own folder.
    """
    folder = Path(output_dir) if output_dir else INTERACTIVE_ROOT / timestamp() / device_label(device) / model
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def report_folder(output_dir: str) -> Path:
    """Where the report writes its charts: ``output_dir`` or a fresh ``../results/reports/<timestamp>``."""
    folder = Path(output_dir) if output_dir else INTERACTIVE_ROOT.parent / "reports" / timestamp()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def device_peaks_once(device, peaks_path: str = "", *, quick: bool = False) -> dict:
    """Device peaks, measured at most once per run: read ``peaks_path`` if it exists, else measure and save it.

    The peaks belong to the device, not the model, so the runner hands every
    profile notebook of a run the same path. A file measured on another
    device, or in the other (quick/full) mode, is refused rather than reused.
    """
    from .peaks import device_peaks
    from .results import save_json

    path = Path(peaks_path) if peaks_path else None
    if path is not None and path.is_file():
        peaks = json.loads(path.read_text())
        if peaks.get("device") != str(device) or bool(peaks.get("quick")) != bool(quick):
            raise InvalidInputError(f"{path} holds peaks of {peaks.get('device')} (quick={peaks.get('quick')}), "
                                    f"not of {device} (quick={quick}).")
        return peaks
    peaks = device_peaks(device, quick=quick)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(peaks, path)
    return peaks


# -- discovery -------------------------------------------------------------------

def _manifests(results_dir: Path) -> dict[Path, dict]:
    found = {}
    for path in sorted(results_dir.rglob(MANIFEST)):
        try:
            found[path.parent] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"Skipping unreadable manifest {path}: {error}", stacklevel=3)
    return found


def _run_dir(source: Path, manifests: dict[Path, dict]) -> Path:
    """The run a results file belongs to: the nearest folder with run.json, else ``<run>/<device>/<model>/file``."""
    for parent in source.parents:
        if parent in manifests:
            return parent
    return source.parent.parent.parent


def _host_of_file(source: Path) -> str | None:
    try:
        with open(source, encoding="utf-8") as stream:
            return (json.load(stream).get("env") or {}).get("hostname")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def gather(results_dir: str | Path, kind: str = "results") -> pd.DataFrame:
    """Every ``*_{kind}`` result under ``results_dir`` in one frame, with ``run`` and ``host`` columns."""
    from .results import load_results

    root = Path(results_dir).resolve()
    if not root.is_dir():
        raise InvalidInputError(f"Results folder {root} does not exist.")
    frame = load_results(root, kind=kind)
    if frame.empty:
        return frame
    manifests = _manifests(root)
    sources = {s: Path(s) for s in frame["source_file"].unique()}
    runs, hosts = {}, {}
    for text, source in sources.items():
        run_dir = _run_dir(source, manifests)
        runs[text] = str(run_dir.relative_to(root)) if run_dir != root and root in run_dir.parents else run_dir.name
        manifest = manifests.get(run_dir)
        hosts[text] = ((manifest or {}).get("environment") or {}).get("hostname") or _host_of_file(source)
    frame.insert(0, "run", frame["source_file"].map(runs))
    frame.insert(1, "host", frame["source_file"].map(hosts))
    return frame


def runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per run (from its run.json): when, where, what, and how it ended."""
    root = Path(results_dir).resolve()
    rows = []
    for run_dir, manifest in _manifests(root).items():
        notebooks = manifest.get("notebooks", [])
        env = manifest.get("environment") or {}
        rows.append({
            "run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
            "status": manifest.get("status"),
            "started_utc": manifest.get("started_utc"),
            "duration_s": manifest.get("duration_s"),
            "device": (manifest.get("device") or {}).get("device"),
            "host": env.get("hostname"),
            "quick": (manifest.get("settings") or {}).get("quick"),
            "notebooks_ok": sum(n.get("status") in ("succeeded", "skipped") for n in notebooks),
            "notebooks_failed": sum(n.get("status") not in ("succeeded", "skipped", "running", "pending")
                                    for n in notebooks),
            "git_commit": manifest.get("git_commit"),
            "command": manifest.get("command_line"),
        })
    return pd.DataFrame(rows)


ENV_FIELDS = ("hostname", "os", "cpu_model", "physical_cores", "logical_cores", "torch_num_threads",
              "cpu_capability", "total_ram_gb", "python", "torch_version", "cuda_version", "cuda_driver",
              "git_commit")


def environments(results_dir: str | Path) -> pd.DataFrame:
    """The environment of each run (from run.json) side by side; GPUs summarised by name."""
    root = Path(results_dir).resolve()
    rows = []
    for run_dir, manifest in _manifests(root).items():
        env = manifest.get("environment") or {}
        row = {"run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name}
        row.update({name: env.get(name) for name in ENV_FIELDS})
        row["gpus"] = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
        rows.append(row)
    return pd.DataFrame(rows)


def notebook_status(results_dir: str | Path) -> pd.DataFrame:
    """Every notebook execution recorded in the manifests, with its status, duration and error."""
    root = Path(results_dir).resolve()
    rows = []
    for run_dir, manifest in _manifests(root).items():
        for entry in manifest.get("notebooks", []):
            rows.append({"run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
                         "device": entry.get("device"), "model": entry.get("model"),
                         "notebook": entry.get("notebook"), "status": entry.get("status"),
                         "duration_s": entry.get("duration_s"), "html": entry.get("html"),
                         "error": entry.get("error")})
    return pd.DataFrame(rows)


def recommendations(variants: pd.DataFrame) -> pd.DataFrame:
    """``infopt.variants.recommend`` applied to each run separately (so runs never mix)."""
    from .variants import recommend

    if variants is None or variants.empty:
        return pd.DataFrame()
    frames = []
    for (run, host), part in variants.groupby(["run", "host"], dropna=False, sort=True):
        rec = recommend(part.drop(columns=["run", "host"]))
        if len(rec):
            rec.insert(0, "run", run)
            rec.insert(1, "host", host)
            frames.append(rec)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

