"""Numbers that stay true on a busy machine: distilbert bf16 vs eager-fp32, quiet and under a load that comes and goes.

Runs :func:`infopt.optimize.sweep.run_variant_sweep` (baseline and ``bf16``) twice:
once on a quiet machine, once while child processes spin on the CPU and
pause / resume every ``--period`` seconds (:class:`infopt.measure.interference.BackgroundLoad`).
For each run it prints the unpaired speedup (ratio of medians, timed at
different moments) and the paired speedup (alternating baseline / variant
rounds), each with its 95% CI, its verdict and the interference flags of the
rows. What to expect: the paired speedup under load stays close to the quiet
one while the unpaired ratio moves, and the loaded rows are flagged (so
``recommend()`` refuses them: "machine busy during measurement").

    python benchmarks/busy_machine.py             # full-size distilbert (minutes on a CPU; run it alone)
    python benchmarks/busy_machine.py --quick     # tiny distilbert, short timing: proves the script works

The quiet run is only quiet if nothing else runs: the script prints the
machine check first, and says so when the machine was already busy.
``--quick`` proves the script works; its figures mean little: tiny-model
calls last about a millisecond, shorter than the scheduler's time slice, so
a load preempts the longer of the two calls more often and even the paired
ratio moves. Full-size calls last tens of milliseconds or more, where the
load slows both sides of a round alike.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import infopt  # noqa: E402
from infopt.measure.interference import BackgroundLoad, check_machine  # noqa: E402
from infopt.measure.timing import TimingConfig  # noqa: E402
from infopt.optimize import BASELINE, recommend, run_variant_sweep  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny distilbert and short timing (a smoke run)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=None, help="default: 128 (32 with --quick)")
    parser.add_argument("--max-time", type=float, default=None,
                        help="cap per timed point, seconds (default 8; 1 with --quick)")
    parser.add_argument("--rounds", type=int, default=10, help="paired rounds (default 10)")
    parser.add_argument("--load", type=int, default=3, help="spinning processes (default 3)")
    parser.add_argument("--period", type=float, default=1.0, help="seconds the load stays on, then off (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 with --quick, the least disturbed by a busy machine)")
    return parser.parse_args(argv)


def sweep(model, args, timing: TimingConfig):
    df = run_variant_sweep(model, ["bf16"], [args.batch_size], args.seq_len, timing=timing, measure_memory=False,
                           paired_rounds=args.rounds)
    return df.set_index("variant")


def describe(label: str, df, seconds: float) -> None:
    row, base = df.loc["bf16"], df.loc[BASELINE]
    print(f"\n{label} ({seconds:.0f} s)")
    print(f"  baseline median {base['latency_p50_ms']:.4g} ms, bf16 median {row['latency_p50_ms']:.4g} ms")
    print(f"  unpaired speedup {row['speedup_vs_baseline']:.2f}x  95% CI "
          f"[{row['speedup_ci_low']:.2f}, {row['speedup_ci_high']:.2f}]")
    print(f"  paired speedup   {row['paired_speedup']:.2f}x  95% CI "
          f"[{row['paired_speedup_ci_low']:.2f}, {row['paired_speedup_ci_high']:.2f}]  "
          f"verdict: {row['speedup_verdict']}")
    print(f"  interference: baseline {bool(base['interference'])} ({base['interference_detail']})")
    print(f"                bf16     {bool(row['interference'])} ({row['interference_detail']})")
    print("  " + recommend(df.reset_index())["recommendation"].iloc[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    size = "tiny" if args.quick else "full"
    args.threads = args.threads or (1 if args.quick else None)
    args.seq_len = args.seq_len or (32 if args.quick else None)
    cap = args.max_time or (1.0 if args.quick else 8.0)
    base = TimingConfig.quick(num_threads=args.threads) if args.quick else TimingConfig(num_threads=args.threads)
    timing = TimingConfig(**{**base.to_dict(), "max_time_s": cap, "min_time_s": min(base.min_time_s, cap)})
    print(check_machine(2.0).line)
    model = infopt.load_model("distilbert", "cpu", size=size)
    print(f"distilbert ({size}), batch {args.batch_size}, {args.rounds} paired rounds, cap {cap:g} s per point; "
          f"load: {args.load} spinning processes, on/off every {args.period:g} s")

    started = time.perf_counter()
    quiet = sweep(model, args, timing)
    describe("Quiet", quiet, time.perf_counter() - started)

    started = time.perf_counter()
    stop = threading.Event()
    with BackgroundLoad(args.load, max_seconds=600) as load:
        def toggle():
            on = True
            while not stop.wait(args.period):
                load.pause() if on else load.resume()
                on = not on
        switcher = threading.Thread(target=toggle, daemon=True)
        switcher.start()
        try:
            loaded = sweep(model, args, timing)
        finally:
            stop.set()
            switcher.join()
    describe("Under a load that comes and goes", loaded, time.perf_counter() - started)

    paired = loaded.loc["bf16", "paired_speedup"] / quiet.loc["bf16", "paired_speedup"]
    unpaired = loaded.loc["bf16", "speedup_vs_baseline"] / quiet.loc["bf16", "speedup_vs_baseline"]
    print(f"\nloaded / quiet: paired {paired:.2f}, unpaired {unpaired:.2f} (1.00 = unaffected by the load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
