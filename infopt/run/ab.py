"""``run_notebooks.py --ab BASELINE_SPEC CANDIDATE_SPEC``: two models timed against each other in one process.

The trustworthy verdict for "is the candidate slower?": per batch size, both models run in alternating
blocks (:func:`infopt.optimize.paired.paired_speedup`: A B, B A, ...), so the machine's drift hits both
alike, and the **time ratio** candidate / baseline (above 1: slower) gets the 95% order-statistic interval
of the per-round ratios' median. Verdict: ``slower`` when the interval lies above 1, ``faster`` below,
else ``no significant difference``. The accuracy guard compares the candidate's outputs with the
baseline's on the same seeded inputs (fp32 tolerance: two versions of one model should agree; a model
that changed on purpose fails it, and the table says so).

It runs in-process (no notebook): a run folder with ``run.json`` (``"mode": "ab"``, the settings, the
environment, the reference workload before and after, and the table) and
``<target>/ab/ab_<device>_ab.json|csv`` written atomically.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pandas as pd

from infopt.errors import InfoptError, InvalidInputError

#: Alternating rounds per batch size: more than the variant sweep's 10, since this verdict is the point.
AB_ROUNDS = 20
QUICK_AB_ROUNDS = 10
VERDICT_COLUMNS = ["batch_size", "baseline_median_ms", "candidate_median_ms", "time_ratio", "time_ratio_ci_low",
                   "time_ratio_ci_high", "paired_rounds", "verdict", "accuracy_ok", "rel_error",
                   "cosine_similarity", "interference"]


def ab_verdict(low: float, high: float) -> str:
    if low > 1:
        return "slower"
    if high < 1:
        return "faster"
    return "no significant difference"


def ab_compare(baseline, candidate, batch_sizes, *, seq_len: int | None = None, rounds: int = AB_ROUNDS,
               timing=None) -> pd.DataFrame:
    """One row per batch size: paired time ratio candidate / baseline, its interval, verdict, accuracy."""
    import torch

    from infopt.measure.timing import TimingConfig, measure
    from infopt.optimize.accuracy import compare_outputs, tolerance_for
    from infopt.optimize.paired import paired_speedup

    timing = timing or TimingConfig()
    rows = []
    for batch_size in batch_sizes:
        inputs = baseline.prepare_input(batch_size, seq_len)
        row = {"batch_size": batch_size}
        with torch.inference_mode():
            reference, output = baseline.forward(inputs), candidate.forward(candidate.prepare_input(batch_size,
                                                                                                    seq_len))
        try:
            row.update(compare_outputs(reference.float(), output.float(), getattr(baseline, "task", None),
                                       tolerance_for(baseline.device, False)))
        except InvalidInputError as error:  # different output shapes: not the same model, say so
            row.update({"accuracy_ok": False, "notes": str(error)})
        quick = TimingConfig(**{**timing.to_dict(), "max_time_s": min(timing.max_time_s, 2.0),
                                "min_time_s": min(timing.min_time_s, 0.2)})
        row["baseline_median_ms"] = measure(lambda: baseline.forward(inputs), baseline.device, quick).median_ms
        candidate_inputs = candidate.prepare_input(batch_size, seq_len)
        row["candidate_median_ms"] = measure(lambda: candidate.forward(candidate_inputs), candidate.device,
                                             quick).median_ms
        paired = paired_speedup(baseline, candidate, batch_size, seq_len, rounds=rounds, timing=timing)
        speedup, low, high = paired["paired_speedup"], paired["paired_speedup_ci_low"], paired["paired_speedup_ci_high"]
        row.update({"time_ratio": 1 / speedup, "time_ratio_ci_low": 1 / high if high > 0 else float("nan"),
                    "time_ratio_ci_high": 1 / low if low > 0 else float("nan"),
                    "paired_rounds": paired["paired_rounds"],
                    "interference": paired.get("interference", False)})
        row["verdict"] = ab_verdict(row["time_ratio_ci_low"], row["time_ratio_ci_high"]) \
            if row["time_ratio_ci_low"] == row["time_ratio_ci_low"] else "too few rounds for an interval"
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame[[c for c in VERDICT_COLUMNS if c in frame.columns] +
                 [c for c in frame.columns if c not in VERDICT_COLUMNS]]


def run_ab(args, argv: list[str]) -> int:
    """The ``--ab`` run: validate, time, write, print; returns the exit code (2 on bad input)."""
    from infopt import env, layout
    from infopt.devices import resolve_device
    from infopt.measure.drift import record_reference
    from infopt.measure.timing import TimingConfig, pin_threads
    from infopt.models import load_model, validate_spec
    from infopt.presets import DEFAULT_MAX_TIME_S
    from infopt.results import save_json, save_results
    from infopt.run.clock import utc_now
    from infopt.run.plan import default_run_name

    try:
        specs = [validate_spec(spec) for spec in args.ab]
        if args.models or args.resume or args.executor != "local":
            raise InvalidInputError("--ab names its two models itself and runs here: leave out --models, --resume "
                                    "and --executor.")
        devices = args.device or ["auto"]
        if len(devices) != 1:
            raise InvalidInputError("--ab times both models on one device; give one --device.")
        device = str(resolve_device(str(devices[0]).split("@")[0]))
        quick = bool(args.quick)
        batch_sizes = list(args.batch_sizes or ([1, 4] if quick else [1, 8, 32]))
        run = layout.RunLayout.at(Path(args.output).resolve(), args.run_name or default_run_name())
        if run.run_dir.exists():
            raise InvalidInputError(f"Run folder {run.run_dir} already exists; choose another --run-name.")
        size = "tiny" if quick else "full"
        pin_threads(args.threads)  # before the models exist: ONNX Runtime sessions take torch's count
        baseline, candidate = (load_model(spec, device=device, size=size) for spec in specs)
    except InfoptError as error:
        print(f"run_notebooks.py: error: {error}", file=sys.stderr)
        return 2
    run.run_dir.mkdir(parents=True)
    kind = device.split(":")[0]
    timing = TimingConfig.quick(max_time_s=2.0) if quick else TimingConfig(max_time_s=DEFAULT_MAX_TIME_S)
    manifest = {"schema_version": 1, "run_name": run.run_dir.name, "mode": "ab", "status": "running",
                "command": argv, "command_line": " ".join(shlex.quote(a) for a in argv), "started_utc": utc_now(),
                "settings": {"ab": specs, "device": device, "batch_sizes": batch_sizes, "quick": quick,
                             "size": size, "threads": args.threads, "rounds": QUICK_AB_ROUNDS if quick else AB_ROUNDS,
                             "timing": timing.to_dict()},
                "environment": env.collect(), "notebooks": []}
    manifest["git_commit"] = manifest["environment"].get("git_commit")
    manifest_path = run.run_dir / layout.MANIFEST_NAME
    manifest["reference_workload"] = record_reference(None, "start", device, quick)
    save_json(manifest, manifest_path, overwrite=True)
    table = ab_compare(baseline, candidate, batch_sizes, rounds=manifest["settings"]["rounds"], timing=timing)
    manifest["reference_workload"] = record_reference(manifest["reference_workload"], "end", device, quick)
    out_dir = run.run_dir / kind / "ab"
    table.insert(0, "baseline", specs[0])
    table.insert(1, "candidate", specs[1])
    paths = save_results(table.assign(model="ab", device=kind), out_dir, "ab", kind, kind="ab",
                         config=manifest["settings"])
    manifest.update({"status": "succeeded", "finished_utc": utc_now(),
                     "ab": {"results": str(paths["json"].relative_to(run.run_dir)),
                            "rows": table.to_dict(orient="records")}})
    save_json(manifest, manifest_path, overwrite=True)
    print(f"A/B on {device}: baseline {specs[0]}  vs  candidate {specs[1]}  (time ratio candidate/baseline, "
          f"95% CI of the median of {manifest['settings']['rounds']} alternating rounds)")
    shown = table[["batch_size", "baseline_median_ms", "candidate_median_ms", "time_ratio", "time_ratio_ci_low",
                   "time_ratio_ci_high", "verdict", "accuracy_ok"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"Results: {paths['json']}")
    from infopt.run.history import log_history

    log_history(run.run_dir, args)
    return 0


__all__ = ["AB_ROUNDS", "ab_compare", "ab_verdict", "run_ab"]
