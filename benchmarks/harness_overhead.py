"""Cost of the timing loop itself, measured on a function that does nothing.

Prints, for the chosen device's timer:
  * loop_cost_us_per_call: wall time of ``timer.run_block(noop, N)`` divided by N
    (clock reads or event records, storing the sample, the Python call), median
    of several blocks; this is what the harness adds to every timed call's
    wall-clock cost. Target on CPU: under 5 microseconds.
  * recorded_noop_us (median sample ``measure()`` reports for the no-op): the
    floor every recorded latency includes (the time between the two clock reads).
  * measure_cost_us_per_call: ``measure()``'s whole wall time (warm-up, block
    sizing and the CI stopping checks included) divided by the calls it made.

Run:  python benchmarks/harness_overhead.py [--device cpu|cuda|mps] [--calls 200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infopt.devices import resolve_device  # noqa: E402
from infopt.measure.timing import TimingConfig, make_timer, measure  # noqa: E402


def noop() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=200_000, help="calls per block for the loop-cost figure")
    parser.add_argument("--blocks", type=int, default=7)
    args = parser.parse_args()

    device = resolve_device(args.device)
    timer = make_timer(device)
    calls = args.calls if device.type == "cpu" else min(args.calls, 20_000)
    per_call = []
    for _ in range(args.blocks):
        started = time.perf_counter_ns()
        timer.run_block(noop, calls)
        per_call.append((time.perf_counter_ns() - started) / calls / 1e3)
    result = measure(noop, device, TimingConfig(min_samples=1000, min_time_s=1.0, max_time_s=3.0))
    report = {
        "device": str(device),
        "timer": timer.name,
        "loop_cost_us_per_call": statistics.median(per_call),
        "loop_cost_us_per_call_min": min(per_call),
        "loop_cost_us_per_call_max": max(per_call),
        "blocks": args.blocks,
        "calls_per_block": calls,
        "recorded_noop_us": result.median_ms * 1e3,
        "recorded_noop_us_ci95": [result.ci_low_ms * 1e3, result.ci_high_ms * 1e3],
        "measure_calls": result.n + result.warmup_calls,
        "measure_cost_us_per_call": result.wall_s / (result.n + result.warmup_calls) * 1e6,
        "target": "loop_cost_us_per_call < 5 on CPU",
    }
    print(json.dumps(report, indent=2))
    if device.type == "cpu":
        verdict = "MET" if report["loop_cost_us_per_call"] < 5 else "NOT MET"
        print(f"harness loop cost {report['loop_cost_us_per_call']:.3f} us/call on CPU: target (<5 us) {verdict}")


if __name__ == "__main__":
    main()
