"""Run a plan's model notebooks as Ray tasks (``run_notebooks.py --executor ray``): the one owner of Ray.

One task = one notebook for one model on one device target. A task holds its
device alone, so measurements never share it: a GPU task asks Ray for one whole
GPU (Ray sets ``CUDA_VISIBLE_DEVICES``); a CPU task asks for every CPU of the node
it is pinned to, so two CPU timing tasks never overlap on a node. A target's
selector (``cuda@accelerator_type:H100``, ``cpu@zone=a``) becomes Ray's
``accelerator_type`` and ``label_selector`` task options (GPU tasks), or picks the
nodes a CPU task may be pinned to (their labels); a target no node of the
cluster can run is refused before anything runs. The notebooks of one model on
one target run in order (a later one reads an earlier one's files); different
models and targets run side by side where resources allow.

Files travel with the task, so a worker needs no shared file system: the driver
sends the model folder (and the device peaks file), the worker executes the
notebook in a temporary copy and returns every file, and the driver writes each
one into its run folder atomically. Each task returns the environment of the
host that ran it; ``run.json`` records, per notebook, the node and host that ran
it with start and end times (``placement``) and, per host, its environment
(``executor.hosts``). A task whose worker dies is recorded as failed with the
reason and the run goes on (``--resume`` reruns it); Ctrl-C cancels what is
still running. The report runs on the driver, after every model notebook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from infopt.errors import InfoptError
from infopt.names import safe_name

INSTALL_HINT = 'pip install -e ".[ray]"'


class RayExecutorError(InfoptError):
    """Ray is missing, the cluster cannot be reached, or an option does not fit the Ray executor."""


def require_ray():
    """The ``ray`` module, or one sentence saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayExecutorError(f"--executor ray needs Ray, which is not installed; install it with: {INSTALL_HINT}") \
            from None
    return ray


def check_options(args) -> None:
    """Options that make no sense for the chosen executor are refused before anything runs.

    ``--device cuda:N`` is refused with Ray, which picks the GPU itself; the plan's ``cuda:0`` is then the
    GPU Ray handed the task (``CUDA_VISIBLE_DEVICES``).
    """
    device = getattr(args, "device", None) or []
    executor = getattr(args, "executor", "local")
    if executor != "ray":
        if getattr(args, "ray_address", None):
            raise RayExecutorError("--ray-address only applies to --executor ray.")
        return
    if getattr(args, "threads", None) is not None:
        raise RayExecutorError("--threads applies to the local executor: Ray's workers keep their own thread "
                               "settings.")
    for text in [device] if isinstance(device, str) else device:
        if str(text).startswith("cuda:"):
            raise RayExecutorError(f"--device {text}: with --executor ray, Ray assigns each job a whole GPU; "
                                   f"pass --device cuda.")


def connect(address: str | None):
    """Join the cluster at ``address``, or start a local Ray instance without one; one sentence if it fails.

    An already initialised Ray (a test, an interactive session) is used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    import logging

    if address:
        probe_address(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError: all mean "cannot run"
        text = str(exc).strip().splitlines()
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RayExecutorError(f"Cannot reach {where}: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
                               + ".") from None
    return ray


#: Seconds the cluster's head may take to accept a connection before the run is refused (Ray itself waits minutes).
PROBE_TIMEOUT_S = 5.0


def probe_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, in one sentence, a ``host:port`` (or ``ray://host:port``) nothing listens on.

    Ray retries an unreachable head for minutes; a run should stop at once instead. ``auto`` (the cluster
    this machine belongs to) is left to Ray, which answers quickly when there is none.
    """
    import socket

    if address == "auto":
        return
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise RayExecutorError(f"--ray-address {address}: expected HOST:PORT, ray://HOST:PORT or auto.")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        reason = (error.strerror or str(error) or type(error).__name__).strip()
        raise RayExecutorError(f"Cannot reach the Ray cluster at {address}: {reason}; nothing was run.") from None


# -- files that travel with a task ----------------------------------------------

def pack(folder: Path) -> dict[str, bytes]:
    """Every plain file under ``folder`` (relative path -> bytes), partial notebooks and kernel logs left out."""
    files = {}
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and ".partial" not in path.name and path.name != ".kernels.log":
                files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def unpack(files: dict[str, bytes], folder: Path) -> None:
    for name, data in files.items():
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:
            raise RayExecutorError(f"A job returned a file outside its model folder: {name!r}.")
        write_atomic(target, data)


# -- the task ----------------------------------------------------------------------

def _peaks_device(data: bytes) -> str | None:
    try:
        return json.loads(data).get("device_name")
    except (ValueError, AttributeError):
        return None


def peaks_variant_path(peaks_path: Path, device_name: str) -> Path:
    """Where the driver keeps the peaks of one hardware model: ``device_peaks.<GPU or CPU model>.json``."""
    return peaks_path.with_name(f"{peaks_path.stem}.{safe_name(device_name)}{peaks_path.suffix}")


def stored_peaks(peaks_path: Path) -> dict[str, bytes]:
    """Every peaks file of a target's folder, by hardware model (one target label may span GPU models)."""
    found: dict[str, bytes] = {}
    for path in sorted(peaks_path.parent.glob(f"{peaks_path.stem}*{peaks_path.suffix}")):
        data = path.read_bytes()
        name = _peaks_device(data)
        if name and (path == peaks_variant_path(peaks_path, name) or name not in found):
            found[name] = data
    return found


def store_peaks(peaks_path: Path, data: bytes) -> None:
    """The peaks a job measured, under its hardware model (and as the target's file when that is free or the
    same model's)."""
    name = _peaks_device(data)
    if name:
        write_atomic(peaks_variant_path(peaks_path, name), data)
    if not peaks_path.is_file() or _peaks_device(peaks_path.read_bytes()) == name:
        write_atomic(peaks_path, data)


def local_device_name(device: str) -> str | None:
    """The hardware this worker will run ``device`` on, without creating a CUDA context (NVML for GPUs)."""
    from infopt import env
    from infopt.measure.nvml_watch import load_nvml

    if not str(device).startswith("cuda"):
        return env.cpu_model()
    nvml, _ = load_nvml()
    ids = _gpu_ids()
    if nvml is None or not ids:
        return None
    try:
        handle = (nvml.nvmlDeviceGetHandleByIndex(int(ids[0])) if str(ids[0]).isdigit()
                  else nvml.nvmlDeviceGetHandleByUUID(str(ids[0])))
        name = nvml.nvmlDeviceGetName(handle)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - unknown hardware: no peaks are reused, the notebook measures them
        return None


def choose_peaks(peaks: dict[str, bytes] | None, hardware: str | None) -> bytes | None:
    """The stored peaks of exactly this hardware model, else none (never another GPU model's)."""
    if not peaks or not hardware:
        return None
    return peaks.get(hardware)


def run_job(job, model_files: dict[str, bytes], peaks: dict[str, bytes] | None, manifest: bytes,
            timeout: int | None) -> dict:
    """Execute one notebook on this host in a temporary copy of its model folder; returns files and placement.

    The copy of ``run.json`` marks the temporary run root, where the charts' shared ``plotly.min.js`` goes
    (:func:`infopt.report.plots.shared_plotly_js`), returned too. A failing notebook is a result (``status`` failed,
    with the error), as in the sequential runner; only a dying worker or a cancellation reaches the driver as
    a Ray error. The executed notebook shows the temporary folder as its ``output_dir``.
    """
    import socket

    from infopt import env
    from infopt.devices import device_name
    from infopt.report.plots import PLOTLY_JS
    from infopt.run.execute import error_text, execute, kernel_manager_class

    with tempfile.TemporaryDirectory(prefix="infopt-ray-") as tmp:
        root = Path(tmp)
        model_dir = root / "run" / job.output.parent.parent.name / job.output.parent.name
        peaks_path = model_dir.parent / Path(job.parameters.get("peaks_path", "device_peaks.json")).name
        model_dir.mkdir(parents=True)
        run_root = model_dir.parent.parent
        write_atomic(run_root / "run.json", manifest)
        unpack(model_files, model_dir)
        device = job.parameters["device"]
        if str(device).startswith("cuda"):
            pin_cpu_share(_gpu_ids(), _node_gpus())  # the kernel inherits it; its window counts only these CPUs
        mine = choose_peaks(peaks, local_device_name(device))
        if mine is not None:
            write_atomic(peaks_path, mine)
        params = dict(job.parameters, output_dir=str(model_dir))
        if "peaks_path" in params:
            params["peaks_path"] = str(peaks_path)
        local = dataclasses.replace(job, output=model_dir / job.output.name, parameters=params)
        status, error = "succeeded", None
        started = time.time()
        try:
            execute(local, timeout=timeout, cwd=model_dir, kernel_manager_class=kernel_manager_class(root / ".log"))
        except Exception as exc:  # noqa: BLE001 - the notebook failed: kept and recorded, like the local runner
            status, error = "failed", error_text(exc, timeout=timeout, notebook=job.output.name)
        ended = time.time()
        environment = env.collect()
        return {
            "status": status, "error": error, "files": pack(model_dir),
            "run_files": {name: (run_root / name).read_bytes() for name in (PLOTLY_JS,)
                          if (run_root / name).is_file()},
            "peaks": peaks_path.read_bytes() if "peaks_path" in params and peaks_path.is_file() else None,
            "placement": {"node_id": _node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                          "gpu_ids": _gpu_ids(), "device_name": device_name(environment, job.parameters["device"]),
                          "started_unix": round(started, 3), "ended_unix": round(ended, 3)},
            "environment": environment,
        }


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id()


def _node_gpus() -> int:
    import ray

    node = ray.get_runtime_context().get_node_id()
    return int(next((n["Resources"].get("GPU", 0) for n in ray.nodes() if n.get("NodeID") == node), 0))


def _gpu_ids() -> list:
    import ray

    return [str(g) for g in ray.get_gpu_ids()]


# -- the driver -----------------------------------------------------------------

def _kind(target) -> str:
    """``cuda`` or ``cpu`` (mps runs like a CPU job) for a DeviceTarget, or an older caller's folder label."""
    kind = getattr(target, "kind", None) or str(target).split("-")[0]
    return "cuda" if kind == "cuda" else "cpu"


def matching_nodes(nodes: list[dict], target) -> list[dict]:
    """The alive nodes a target may run on: a GPU (of its accelerator type) or CPUs, and every label it names."""
    spec = getattr(target, "spec", None)
    wanted = dict(spec.node_labels) if spec else {}
    accelerator = spec.accelerator_type if spec else None
    found = []
    for node in nodes:
        resources, labels = node.get("Resources") or {}, node.get("Labels") or {}
        if not node.get("Alive") or any(labels.get(k) != v for k, v in wanted.items()):
            continue
        if _kind(target) == "cuda":
            if resources.get("GPU", 0) < 1 or (accelerator and f"accelerator_type:{accelerator}" not in resources):
                continue
        elif not resources.get("CPU"):
            continue
        found.append(node)
    return found


def check_targets(ray, targets) -> None:
    """Refuse, in one sentence and before anything runs, a target no node of the cluster can run (Ray would wait
    for such a node forever)."""
    nodes = ray.nodes()
    for target in targets:
        if not matching_nodes(nodes, target):
            spec = target.spec
            what = ("a GPU" + (f" of accelerator type {spec.accelerator_type}" if spec.accelerator_type else "")
                    if _kind(target) == "cuda" else "CPUs")
            labels = (f" with the label{'s' if len(spec.node_labels) > 1 else ''} "
                      + ", ".join(f"{k}={v}" for k, v in spec.node_labels)) if spec.node_labels else ""
            alive = [n for n in nodes if n.get("Alive")]
            raise RayExecutorError(f"--device {target.text}: no node of the Ray cluster ({len(alive)} alive) has "
                                   f"{what}{labels}; nothing was run.")


def gpu_cpu_share(nodes: list[dict]) -> int:
    """CPUs a GPU job asks for: its GPU's share of a node's CPUs (CPUs / GPUs, the smallest over ``nodes``).

    With one CPU each, several GPU jobs of a host would share its CPUs and each one's synchronizing thread
    would count as another process's load in the others' interference windows; with its share (and its
    CPUs pinned, :func:`pin_cpu_share`) a job's window sees only what competes with it.
    """
    shares = [int(n["Resources"]["CPU"] // n["Resources"]["GPU"]) for n in nodes
              if (n.get("Resources") or {}).get("GPU", 0) >= 1 and (n.get("Resources") or {}).get("CPU")]
    return max(1, min(shares)) if shares else 1


def pin_cpu_share(gpu_ids: list, node_gpus: int) -> list[int] | None:
    """Pin this process (and the notebook kernel it starts) to its GPU's slice of the CPUs it may use.

    Slice ``k`` of ``node_gpus`` for the task's first GPU id ``k``; ``None`` (nothing pinned) where the OS
    has no affinity call or the ids are not indices.
    """
    if not gpu_ids or node_gpus < 1 or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        index = int(gpu_ids[0]) % node_gpus
    except (TypeError, ValueError):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    per = max(1, len(cpus) // node_gpus)
    mine = cpus[index * per:(index + 1) * per] or cpus[-per:]
    os.sched_setaffinity(0, mine)
    return mine


def task_options(ray, target, node: dict | None, gpu_nodes: list[dict] | None = None) -> dict:
    """Ray resources of one job: a whole GPU (of the target's accelerator type, on a node with its labels) and
    its share of that node's CPUs (:func:`gpu_cpu_share` over ``gpu_nodes``, or ``node``), or every CPU of the
    node it is pinned to (never shared)."""
    options = {"max_retries": 0}  # a retried job would hide the failure and measure twice
    if _kind(target) == "cuda":
        spec = getattr(target, "spec", None)
        if spec is not None and spec.accelerator_type:
            options["accelerator_type"] = spec.accelerator_type
        if spec is not None and spec.node_labels:
            options["label_selector"] = dict(spec.node_labels)
        return {**options, "num_gpus": 1, "num_cpus": gpu_cpu_share(gpu_nodes or ([node] if node else []))}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {**options, "num_cpus": node["Resources"]["CPU"],
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)}


def _failure_text(exc: BaseException) -> str:
    import ray

    text = str(exc).strip().splitlines()
    first = next((line.strip() for line in text if line.strip()), "")
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return f"the Ray worker running it died: {type(exc).__name__}"
    return f"{type(exc).__name__}: {first}"[:300]


def run_model_jobs(jobs: list, context, *, address: str | None = None) -> None:
    """Execute ``jobs`` (model notebooks) as Ray tasks, recording each result on its job
    (:class:`infopt.run.executors.RayExecutor`).

    Ctrl-C (KeyboardInterrupt) cancels the tasks still running, marks them interrupted and is re-raised for
    the runner to close the run.
    """
    from infopt.run.clock import utc_now
    from infopt.run.execute import export_job_html

    plan, manifest, progress = context.plan, context.manifest, context.progress
    ray = connect(address)
    record = manifest.data.setdefault("executor", {})
    record.update({"name": "ray", "address": address or "local",
                   "ray_version": ray.__version__})
    record.setdefault("hosts", {})
    earlier = (plan.previous or {}).get("executor") or {}
    for host, environment in (earlier.get("hosts") or {}).items():  # a resumed run keeps where its jobs ran
        record["hosts"].setdefault(host, environment)
    for job in plan.jobs:
        if job.status == "skipped" and job.placement is None:
            job.placement = (manifest.previous_jobs.get(job.key) or {}).get("placement")
    nodes = ray.nodes()  # main() has checked that each target has a node (check_targets)
    remote = ray.remote(run_job)
    chains: dict[tuple, list] = {}  # (target label, model): its notebooks, in order
    for job in jobs:
        chains.setdefault((job.target.label, job.model), []).append(job)
    # CPU jobs are pinned to a node of their target (round robin over the models), GPU jobs go where Ray puts them
    node_of, turn = {}, {}
    for label, model in chains:
        target = next(t for t in plan.targets if t.label == label)
        candidates = matching_nodes(nodes, target) if _kind(target) == "cpu" else []
        turn[label] = turn.get(label, -1) + 1
        node_of[(label, model)] = candidates[turn[label] % len(candidates)] if candidates else None
    in_flight: dict = {}

    def submit(chain: tuple) -> None:
        if not chains[chain]:
            return
        job = chains[chain].pop(0)
        model_dir = job.output.parent
        peaks_file = Path(job.parameters["peaks_path"]) if "peaks_path" in job.parameters else None
        peaks = stored_peaks(peaks_file) if peaks_file is not None else None
        gpu_nodes = matching_nodes(nodes, job.target) if _kind(job.target) == "cuda" else None
        ref = remote.options(**task_options(ray, job.target, node_of[chain], gpu_nodes)).remote(
            job, pack(model_dir), peaks, manifest.path.read_bytes(), context.timeout)
        job.status, job.started_utc, job.error = "running", utc_now(), None
        in_flight[ref] = (job, time.perf_counter())

    try:
        for chain in chains:
            submit(chain)
        manifest.save()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            job, start = in_flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                job.status, job.error = "failed", _failure_text(exc)
            else:
                unpack(result["files"], job.output.parent)
                unpack({k: v for k, v in result["run_files"].items() if not (plan.run_dir / k).is_file()},
                       plan.run_dir)
                if result["peaks"] is not None:
                    store_peaks(Path(job.parameters["peaks_path"]), result["peaks"])
                job.status, job.error = result["status"], result["error"]
                job.placement = result["placement"]
                record["hosts"][result["placement"]["host"]] = result["environment"]
            # time on its host, not the wait for resources; a job lost with its worker: since its submission
            job.duration_s = round(job.placement["ended_unix"] - job.placement["started_unix"], 2) \
                if job.placement else round(time.perf_counter() - start, 2)
            if job.error:
                print(f"FAILED {job.key}: {job.error}", file=sys.stderr)
            if context.html:
                export_job_html(job, plan.run_dir)
            submit((job.target.label, job.model))
            manifest.save()
            if progress is not None:
                progress.update(1)
    except BaseException as stop:  # Ctrl-C, SIGTERM, or the driver's own writes failing: nothing keeps running
        interrupted = isinstance(stop, KeyboardInterrupt)
        for ref, (job, _) in in_flight.items():
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            job.status = "interrupted" if interrupted else "failed"
            job.error = "cancelled: the run was interrupted" if interrupted else "cancelled: the run stopped"
        raise


__all__ = ["INSTALL_HINT", "RayExecutorError", "check_options", "check_targets", "choose_peaks", "connect",
           "gpu_cpu_share", "local_device_name", "matching_nodes", "pack", "peaks_variant_path", "pin_cpu_share",
           "probe_address", "require_ray", "store_peaks", "stored_peaks",
           "run_job", "run_model_jobs", "task_options", "unpack", "write_atomic"]
