"""The up-front time estimate: this machine's own earlier run of the same job beats the static table."""

from __future__ import annotations

import json
import socket

from infopt.run import estimate
from infopt.run import plan as plan_module
from infopt.run import cli


def plan_for(tmp_path, name):
    args = cli.build_parser().parse_args(["--device", "cpu", "--quick", "--output", str(tmp_path),
                                             "--run-name", name, "--models", "distilbert"])
    return plan_module.build_plan(args)


def test_estimate_uses_this_hosts_earlier_run_of_the_same_jobs(tmp_path):
    earlier = plan_for(tmp_path, "earlier")
    static = estimate.estimate_seconds(earlier, {})
    entries = [{"notebook": job.notebook, "model": job.model, "status": "succeeded", "duration_s": 100.0,
                "parameters": job.parameters} for job in earlier.jobs]
    earlier.run_dir.mkdir(parents=True)
    (earlier.run_dir / "run.json").write_text(json.dumps({
        "device_label": "cpu", "environment": {"hostname": socket.gethostname()}, "notebooks": entries}))
    plan = plan_for(tmp_path, "now")
    assert estimate.estimate_seconds(plan) == 100.0 * len(plan.jobs) != static
    # another machine's run, or other parameters, fall back to the table
    (earlier.run_dir / "run.json").write_text(json.dumps({
        "device_label": "cpu", "environment": {"hostname": "elsewhere"}, "notebooks": entries}))
    assert estimate.estimate_seconds(plan) == static


def test_estimate_counts_every_target_and_matches_earlier_runs_per_target(tmp_path):
    """Two targets (cpu, and cpu on a labelled Ray node) hold twice the jobs; an earlier run on `cpu` only
    calibrates that target's jobs, never the other target's (its folder label differs)."""
    earlier = plan_for(tmp_path, "earlier")
    entries = [{"notebook": job.notebook, "model": job.model, "device": "cpu", "status": "succeeded",
                "duration_s": 100.0, "parameters": job.parameters} for job in earlier.jobs if job.model]
    earlier.run_dir.mkdir(parents=True)
    (earlier.run_dir / "run.json").write_text(json.dumps({
        "device_label": "cpu", "environment": {"hostname": socket.gethostname()}, "notebooks": entries}))
    args = cli.build_parser().parse_args(["--device", "cpu", "cpu@zone=a", "--executor", "ray", "--quick",
                                             "--output", str(tmp_path), "--run-name", "two", "--models",
                                             "distilbert"])
    plan = plan_module.build_plan(args)
    assert [t.label for t in plan.targets] == ["cpu", "cpu-zone-a"]
    static = estimate.estimate_seconds(plan, {})
    per_target = [job for job in plan.jobs if job.model and job.target.label == "cpu"]
    table = {job.key: estimate.estimate_seconds(
        plan_module.Plan(plan.run_dir, plan.targets, plan.settings, [job]), {}) for job in per_target}
    assert estimate.estimate_seconds(plan) == static - sum(table.values()) + 100.0 * len(per_target)
