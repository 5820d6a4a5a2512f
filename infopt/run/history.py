"""``run_notebooks.py --mlflow [URI]``: a run's history in MLflow, a tool teams already use.

One MLflow run per lab run, in the experiment ``infopt``: parameters (models, notebooks, device, preset,
torch version, git commit), the headline metrics per target and model (median latency of the eager
baseline per batch size, the paired speedup of each variant, an A/B run's time ratio, the reference
workload's times), and ``run.json``, the report and every result file as artifacts. The default tracking
store is a local SQLite file under the results folder (``<output>/mlflow.db``, artifacts in
``<output>/mlartifacts``; MLflow 3 retired the plain-folder store), so it works with nothing running;
``mlflow ui --backend-store-uri sqlite:///<output>/mlflow.db`` shows it. MLflow is the optional ``history`` extra.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from infopt.errors import InvalidInputError
from infopt.measure.drift import moment_times
from infopt.names import safe_name

EXPERIMENT = "infopt"
STORE_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
#: Result files sent as artifacts (raw samples included: the JSON is what a later comparison needs).
ARTIFACT_SUFFIXES = (".json", ".csv", ".html")


def check_available() -> None:
    """Fail in one sentence, before any run, when ``--mlflow`` is asked for without MLflow installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise InvalidInputError("--mlflow needs MLflow: pip install -e '.[history]'.") from None


def tracking_uri(uri: str | None, output: str | Path) -> str:
    """``uri`` as given, or the local SQLite store ``<output>/mlflow.db`` when it is empty or None."""
    return uri if uri else f"sqlite:///{Path(output).resolve() / STORE_NAME}"


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _key(*parts) -> str:
    return ".".join(safe_name(str(p)) for p in parts if p is not None and str(p) != "")


def headline_metrics(run_dir: str | Path) -> dict[str, float]:
    """The metrics logged for a run: baseline medians, paired speedups, A/B ratios, reference times."""
    import warnings

    from infopt.results import load_results

    run_dir = Path(run_dir)
    metrics: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frame = load_results(run_dir)
        except Exception:  # noqa: BLE001 - a run without results still logs its parameters and files
            frame = None
    if frame is not None:
        for _, row in frame.iterrows():
            if str(row.get("status", "ok")) != "ok":
                continue
            source = Path(str(row.get("source_file", "")))
            source = source.relative_to(run_dir) if source.is_absolute() and source.is_relative_to(run_dir) else source
            target = source.parts[0] if len(source.parts) >= 3 else row.get("device")
            kind, batch = row.get("kind"), row.get("batch_size")
            batch = f"bs{int(batch)}" if _number(batch) is not None else None
            if kind == "results" and _number(row.get("latency_p50_ms")) is not None:
                metrics[_key(target, row.get("model"), batch, "p50_ms")] = _number(row["latency_p50_ms"])
            elif kind == "variants" and _number(row.get("paired_speedup")) is not None:
                metrics[_key(target, row.get("model"), row.get("variant"), batch, "paired_speedup")] = \
                    _number(row["paired_speedup"])
            elif kind == "ab" and _number(row.get("time_ratio")) is not None:
                metrics[_key(target, "ab", batch, "time_ratio")] = _number(row["time_ratio"])
    manifest_path = run_dir / "run.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    reference = manifest.get("reference_workload") or {}
    for moment in ("start", "end"):
        for kernel, value in moment_times(reference.get(moment)).items():
            metrics[_key("reference", moment, kernel, "ms")] = value
    return metrics


def run_parameters(manifest: dict) -> dict[str, str]:
    settings = manifest.get("settings") or {}
    environment = manifest.get("environment") or {}
    params = {"run_name": manifest.get("run_name"), "mode": manifest.get("mode", "notebooks"),
              "device": settings.get("device"), "models": settings.get("models") or settings.get("ab"),
              "notebooks": settings.get("notebooks"), "quick": settings.get("quick"), "preset": settings.get("preset"),
              "batch_sizes": settings.get("batch_sizes"), "torch_version": environment.get("torch_version"),
              "threads": environment.get("torch_num_threads"), "cpu_model": environment.get("cpu_model"),
              "git_commit": manifest.get("git_commit"),
              "hostname": environment.get("hostname"), "status": manifest.get("status")}
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:500] for k, v in params.items()
            if v is not None}


def log_run(run_dir: str | Path, uri: str | None = None) -> str:
    """Log one run folder to MLflow; returns the MLflow run id."""
    check_available()
    import mlflow

    run_dir = Path(run_dir).resolve()
    manifest_path = run_dir / "run.json"
    if not manifest_path.is_file():
        raise InvalidInputError(f"{run_dir} is not a run folder (it has no run.json).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    client_uri = tracking_uri(uri, run_dir.parent)
    mlflow.set_tracking_uri(client_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:  # artifacts next to the store, not in the cwd
        artifacts = Path(client_uri[len("sqlite:///"):]).parent if client_uri.startswith("sqlite:///") else None
        mlflow.create_experiment(EXPERIMENT, artifact_location=(artifacts / ARTIFACTS_NAME).as_uri()
                                 if artifacts else None)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run_dir.name) as active:
        mlflow.log_params(run_parameters(manifest))
        metrics = headline_metrics(run_dir)
        if metrics:
            mlflow.log_metrics(metrics)
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.name != "trace.json" \
                    and not any(part.startswith(".") for part in path.relative_to(run_dir).parts):
                folder = str(path.parent.relative_to(run_dir))
                mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)
        return active.info.run_id


def log_history(run_dir: Path, args) -> None:
    """``--mlflow``: log the finished run (:mod:`infopt.run.history`); a failure is reported, not fatal."""
    if getattr(args, "mlflow", None) is None:
        return
    uri = tracking_uri(args.mlflow, run_dir.parent)
    try:
        run_id = log_run(run_dir, uri)
        print(f"MLflow: run {run_id} logged to {uri}")
    except Exception as error:  # noqa: BLE001 - the measurements are on disk whatever MLflow says
        print(f"MLflow: logging failed ({type(error).__name__}: {str(error)[:200]}); the run's files are intact.",
              file=sys.stderr)


__all__ = ["ARTIFACTS_NAME", "EXPERIMENT", "STORE_NAME", "check_available", "headline_metrics", "log_history",
           "log_run", "run_parameters", "tracking_uri"]
