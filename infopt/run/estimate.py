"""The up-front estimate of a run: this host's earlier runs of the same notebooks, else a table measured once."""

from __future__ import annotations

import json

from infopt import layout
from infopt.run.clock import hostname
from infopt.run.plan import Job, Plan


#: Rough seconds per notebook on an otherwise idle 2-core CPU (kernel start and imports included), used only
#: for the up-front estimate when this host has no earlier run of the same notebook, measured alone on a 2-core
#: AMD EPYC (AVX-512) on 2026-12-07. Tiny: the largest of the three models' durations in
#: ``benchmarks/full_run.py --quick`` (87 s). Full size: the default run (``benchmarks/full_run.py``, preset
#: full-cpu, racing search with compiled paths in 60 s, serve with screened searches: 1367 s). GPUs are faster.
ESTIMATE_S = {
    "tiny": {"benchmark": 2, "profile": 3, "memory": 2, "optimize": 10, "serve": 9, "report": 3},
    "full": {
        "benchmark": {"resnet50": 34, "gpt2": 80, "distilbert": 33},
        "profile": {"resnet50": 13, "gpt2": 26, "distilbert": 20},
        "memory": {"resnet50": 7, "gpt2": 32, "distilbert": 7},
        "optimize": {"resnet50": 194, "gpt2": 321, "distilbert": 189},
        "serve": {"resnet50": 122, "gpt2": 116, "distilbert": 143},
        "report": 3,
    },
}

#: The racing search (the default): the optimize notebook takes its race budget (``optimize_budget_s``) plus
#: the seconds below for what the budget leaves out (loading, accuracy checks, compilation, confirming the
#: finalists, gpt2's generation variants): the same runs' optimize durations less their budget (60 s; quick
#: 1.5 s); a host's own earlier runs take precedence anyway.
RACE_ALLOWANCE_S = {"tiny": 9, "full": {"resnet50": 134, "gpt2": 261, "distilbert": 129}}


def notebook_estimate(job: Job, quick: bool) -> float:
    """Seconds from the tables above for one job (60 s for a notebook or model they do not list)."""
    size = "tiny" if quick else "full"
    if job.notebook == "optimize" and job.parameters.get("search", "racing") == "racing":
        entry = RACE_ALLOWANCE_S[size]
        allowance = entry.get(job.model, 120) if isinstance(entry, dict) else entry
        return allowance + float(job.parameters.get("optimize_budget_s") or 0)
    entry = ESTIMATE_S[size].get(job.notebook, 60)
    return entry.get(job.model, 60) if isinstance(entry, dict) else entry


def search_line(plan: Plan) -> str | None:
    """How the optimize notebooks search, for the up-front message (None when none runs)."""
    jobs = [job for job in plan.jobs if job.notebook == "optimize" and job.status != "skipped"]
    if not jobs:
        return None
    parts = []
    for job in jobs:
        params = job.parameters
        label = job.target.label if job.target else "?"
        compiled = "compiled paths included" if params.get("include_compile") else "compiled paths left out"
        how = (f"racing search, budget {float(params.get('optimize_budget_s') or 0):.0f} s per model"
               if params.get("search", "racing") == "racing" else "exhaustive search (every variant timed in full)")
        line = f"{label}: {how}, {compiled}"
        if line not in parts:
            parts.append(line)
    return "Optimize: " + "; ".join(parts) + "."


def recorded_durations(plan: Plan) -> dict[tuple, float]:
    """Seconds this host took for the same notebook, model, target and parameters in earlier runs (newest wins).

    Read from the run.json files next to this run, so the estimate of a repeated run is this machine's own
    measurement, not a table from another machine.
    """
    this_host = hostname()
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


def recorded_key(job: Job) -> tuple:
    params = {k: v for k, v in job.comparable_parameters().items() if k not in ("run_name", "peaks_path")}
    return job.target.label if job.target else None, job.notebook, job.model, json.dumps(params, sort_keys=True)


def estimate_seconds(plan: Plan, recorded: dict | None = None) -> float:
    """Duration of the notebooks still to run: this host's earlier run of the same job, else :data:`ESTIMATE_S`."""
    recorded = recorded_durations(plan) if recorded is None else recorded
    total = 0.0
    for job in plan.jobs:
        if job.status != "skipped":
            seen = recorded.get(recorded_key(job))
            if seen is not None:
                total += seen
                continue
            total += notebook_estimate(job, plan.settings["quick"])
    return total


__all__ = ["ESTIMATE_S", "RACE_ALLOWANCE_S", "estimate_seconds", "notebook_estimate", "recorded_durations",
           "recorded_key", "search_line"]
