"""Gathering results for the notebooks and the cross-run report.

A results folder holds runs laid out as ``<run>/<target>/<model>/{model}_{device}_{kind}.json``
(``run_notebooks.py`` adds ``<run>/run.json``). Runs copied from other
machines can sit side by side; every gathered row is labelled with its ``run``
(the run folder relative to the results folder), the ``host`` that ran the job
(a Ray worker's, not the driver's) and its device ``target`` (the folder label).
Where a target says more than the device (``cuda-H100``, ``cpu-zone-a``: a run
with several targets or a Ray selector), ``device`` shows the target, so every
table grouped by device keeps targets apart.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from infopt.errors import InvalidInputError
from infopt.layout import MANIFEST_NAME, RunLayout, entry_host


# -- discovery -------------------------------------------------------------------

def _manifests(results_dir: Path) -> dict[Path, dict]:
    found = {}
    for path in sorted(results_dir.rglob(MANIFEST_NAME)):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            warnings.warn(f"Skipping unreadable manifest {path}: {error}", stacklevel=3)
            continue
        if not isinstance(manifest, dict):
            warnings.warn(f"Skipping manifest {path}: it is not a JSON object.", stacklevel=3)
            continue
        found[path.parent] = manifest
    return found


def _run_dir(source: Path, manifests: dict[Path, dict]) -> Path:
    """The run a results file belongs to: the nearest folder with run.json, else ``<run>/<device>/<model>/file``."""
    return RunLayout.of_file(source, manifests).run_dir


def _host_of_file(source: Path) -> str | None:
    """The host in a result file's own environment (captured where the notebook ran)."""
    try:
        with open(source, encoding="utf-8") as stream:
            return (json.load(stream).get("env") or {}).get("hostname")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _folder_hosts(run_dir: Path, manifest: dict | None) -> dict[Path, str]:
    """Model folder -> the host its notebooks ran on, from the manifest's entries (a finished one wins)."""
    hosts = {}
    entries = [e for e in (manifest or {}).get("notebooks", []) if isinstance(e, dict) and e.get("model")]
    for entry in sorted(entries, key=lambda e: e.get("status") in ("succeeded", "skipped")):
        if entry.get("path") and entry_host(entry):
            hosts[(run_dir / entry["path"]).parent] = entry_host(entry)
    return hosts


def with_targets(frame: pd.DataFrame, target_of) -> pd.DataFrame:
    """``frame`` with a ``target`` column (``target_of(source_file)``, else the device kind) and ``device`` set to
    the target where the target's folder label says more than the device kind (``cuda-H100``, ``cpu-zone-a``)."""
    if frame is None or frame.empty or "device" not in frame or "source_file" not in frame:
        return frame
    kind = frame["device"].astype(str).str.split(":").str[0]
    target = frame["source_file"].map({s: target_of(s) for s in frame["source_file"].unique()}).fillna(kind)
    frame = frame.assign(device=frame["device"].where(target == kind, target))
    if "target" in frame:
        frame = frame.drop(columns="target")
    frame.insert(min(2, len(frame.columns)), "target", target)
    return frame


def gather(results_dir: str | Path, kind: str = "results") -> pd.DataFrame:
    """Every ``*_{kind}`` result under ``results_dir`` in one frame, with ``run`` and ``host`` columns."""
    from infopt.results import load_results

    root = Path(results_dir).resolve()
    if not root.is_dir():
        raise InvalidInputError(f"Results folder {root} does not exist.")
    frame = load_results(root, kind=kind)
    if frame.empty:
        return frame
    manifests = _manifests(root)
    sources = {s: Path(s) for s in frame["source_file"].unique()}
    runs, hosts, targets, folder_hosts = {}, {}, {}, {}
    for text, source in sources.items():
        run_dir = _run_dir(source, manifests)
        runs[text] = str(run_dir.relative_to(root)) if run_dir != root and root in run_dir.parents else run_dir.name
        manifest = manifests.get(run_dir)
        if run_dir not in folder_hosts:
            folder_hosts[run_dir] = _folder_hosts(run_dir, manifest)
        # the host that ran the job (the manifest's entry, else the file's own environment), not the driver's
        hosts[text] = folder_hosts[run_dir].get(source.parent) or _host_of_file(source) \
            or ((manifest or {}).get("environment") or {}).get("hostname")
        targets[text] = RunLayout(run_dir).target_of(source)
    frame.insert(0, "run", frame["source_file"].map(runs))
    frame.insert(1, "host", frame["source_file"].map(hosts))
    return with_targets(frame, targets.get)


def runs(results_dir: str | Path) -> pd.DataFrame:
    """One row per run (from its run.json): when, where, what, and how it ended."""
    root = Path(results_dir).resolve()
    rows = []
    for run_dir, manifest in _manifests(root).items():
        notebooks = manifest.get("notebooks", [])
        env = manifest.get("environment") or {}
        targets = [t for t in manifest.get("targets") or [] if isinstance(t, dict)]
        rows.append({
            "run": str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
            "status": manifest.get("status"),
            "started_utc": manifest.get("started_utc"),
            "duration_s": manifest.get("duration_s"),
            "device": (manifest.get("device") or {}).get("device") if len(targets) < 2 else
            ", ".join(str(t.get("label")) for t in targets),
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
                         "notebook": entry.get("notebook"), "host": entry_host(entry), "status": entry.get("status"),
                         "duration_s": entry.get("duration_s"), "html": entry.get("html"),
                         "error": entry.get("error")})
    return pd.DataFrame(rows)


#: Columns of :func:`placements`.
PLACEMENT_COLUMNS = ("run", "target", "folder", "device", "host", "ray_node", "jobs", "statuses")


def placements(results_dir: str | Path) -> pd.DataFrame:
    """Where each run's model notebooks ran: one row per run, device target and host (and Ray node).

    ``target`` is the ``--device`` target as written, ``folder`` its ``<target>/`` folder, ``device`` the hardware
    (CPU model or GPU name, from the environment captured where the job ran), ``ray_node`` the start of the Ray
    node id when Ray ran it, ``jobs`` how many notebooks and ``statuses`` how they ended. Jobs that never started
    have no host.
    """
    from collections import Counter

    from infopt.devices import device_name

    root = Path(results_dir).resolve()
    rows = []
    for run_dir, manifest in _manifests(root).items():
        env = manifest.get("environment") or {}
        host_envs = (manifest.get("executor") or {}).get("hosts") or {}
        targets = {t.get("label"): t for t in manifest.get("targets") or [] if isinstance(t, dict)}
        groups: dict[tuple, Counter] = {}
        for entry in manifest.get("notebooks", []):
            if not isinstance(entry, dict) or not entry.get("model"):
                continue
            placement = entry.get("placement") or {}
            label = entry.get("device")
            host = entry_host(entry)
            if host is None and not manifest.get("executor") and entry.get("status") not in ("pending", "not run"):
                host = env.get("hostname")  # a local run from before entries named their host
            name = entry.get("device_name") or placement.get("device_name")
            if name is None and host is not None:
                name = device_name(host_envs.get(host) or env, (entry.get("parameters") or {}).get("device", "cpu"))
            key = (entry.get("target") or (targets.get(label) or {}).get("target") or label, label, name, host,
                   (placement.get("node_id") or "")[:16] or None)
            groups.setdefault(key, Counter())[entry.get("status")] += 1
        run = str(run_dir.relative_to(root)) if run_dir != root else run_dir.name
        for (target, label, name, host, node), statuses in groups.items():
            rows.append({"run": run, "target": target, "folder": label, "device": name, "host": host,
                         "ray_node": node, "jobs": sum(statuses.values()),
                         "statuses": ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=str))})
    return pd.DataFrame(rows, columns=list(PLACEMENT_COLUMNS))


def recommendations(variants: pd.DataFrame) -> pd.DataFrame:
    """``infopt.optimize.recommend.recommend`` applied to each run separately (so runs never mix)."""
    from infopt.optimize.recommend import recommend

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



# -- scope: which runs a report covers ------------------------------------------------

QUICK_MARK = " (quick)"


def _is_quick(manifest: dict | None, rows: pd.DataFrame | None = None) -> bool:
    """A smoke run: ``settings.quick`` in its run.json, else tiny model sizes in its result rows."""
    if manifest and "quick" in (manifest.get("settings") or {}):
        return bool(manifest["settings"]["quick"])
    if rows is not None and "size" in rows and len(rows):
        return bool((rows["size"].astype(str) == "tiny").all())
    return False


class ReportScope:
    """The runs one report covers: its own run by default, others only when listed.

    Smoke (quick) runs are never mixed with full-size runs unless
    ``include_quick`` is set; when they are shown their run label carries
    :data:`QUICK_MARK`. Every table and frame the report shows goes through
    :meth:`keep`, so nothing outside the scope leaks in.
    """

    def __init__(self, results_dir: str | Path, run_name: str = "", compare_runs=(), include_quick: bool = False):
        self.results_dir = Path(results_dir).resolve()
        if not self.results_dir.is_dir():
            raise InvalidInputError(f"Results folder {self.results_dir} does not exist.")
        manifests = {(str(d.relative_to(self.results_dir)) if d != self.results_dir else d.name): m
                     for d, m in _manifests(self.results_dir).items()}
        results = gather(self.results_dir, kind="results")
        available = sorted(set(manifests) | (set(results["run"].dropna()) if len(results) else set()))
        quick = {run: _is_quick(manifests.get(run), results[results["run"] == run] if len(results) else None)
                 for run in available}
        compare_runs = [str(r) for r in (compare_runs or [])]
        if compare_runs == ["all"]:
            compare_runs = [r for r in available if r != run_name]
        for run in ([run_name] if run_name else []) + compare_runs:
            if run not in available:
                raise InvalidInputError(f"No run named {run!r} under {self.results_dir} "
                                        f"(runs there: {', '.join(available) or 'none'}).")
        wanted = ([run_name] + [r for r in compare_runs if r != run_name]) if run_name else available
        # the kind of run the report is about: its own run's, else full-size unless the folder holds only smoke runs
        reference = quick.get(run_name, False) if run_name else bool(wanted) and all(quick.get(r) for r in wanted)
        self.notes = []
        if not include_quick:
            left_out = [r for r in wanted if quick.get(r, False) != reference and r != run_name]
            if left_out:
                self.notes.append(f"Left out {', '.join(left_out)}: {'full-size' if reference else 'quick (smoke)'} "
                                  "runs are not mixed with this one's; include_quick=True compares them.")
            wanted = [r for r in wanted if r not in left_out]
        self.run_name, self.runs = run_name, tuple(wanted)
        self.quick = {r: quick.get(r, False) for r in wanted}
        if any(self.quick.values()):
            self.notes.append("Runs marked (quick) are smoke runs of tiny models: their numbers are not for reporting.")

    def label(self, run: str) -> str:
        return run + QUICK_MARK if self.quick.get(run) else run

    def keep(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (with a ``run`` column) inside the scope, quick runs labelled."""
        if frame is None or frame.empty or "run" not in frame:
            return frame
        kept = frame[frame["run"].isin(self.runs)].copy()
        kept["run"] = kept["run"].map(self.label)
        return kept.reset_index(drop=True)

    def gather(self, kind: str = "results") -> pd.DataFrame:
        return self.keep(gather(self.results_dir, kind=kind))

    def runs_table(self) -> pd.DataFrame:
        return self.keep(runs(self.results_dir))

    def environments(self) -> pd.DataFrame:
        return self.keep(environments(self.results_dir))

    def notebook_status(self) -> pd.DataFrame:
        return self.keep(notebook_status(self.results_dir))

    def placements(self) -> pd.DataFrame:
        return self.keep(placements(self.results_dir))

    def __repr__(self) -> str:
        return f"ReportScope({self.results_dir}, runs={list(self.runs)})"
