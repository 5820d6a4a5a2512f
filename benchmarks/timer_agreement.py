"""Does infopt's timer agree with torch.utils.benchmark? (full-size resnet50, CPU by default)

For each batch size, after one discarded priming round, rounds alternate
between ``infopt.measure.timing.measure`` and ``torch.utils.benchmark.Timer.blocked_autorange``
(swapping which goes first) on the same model, inputs and thread count, so
background load drifts affect both alike; the script
prints each round's medians and the median of the per-round ratios
``infopt median / torch median``. Target: within 5% of 1.0.

Both time ``model.forward(inputs)`` under ``torch.inference_mode()``. torch's
Timer reports the median of per-block means (blocks of ``number_per_run``
calls); infopt reports the median of per-call samples. On a machine shared
with other work the ratio is noisier than on an idle one.

Run:  python benchmarks/timer_agreement.py [--device cpu|cuda] [--threads N] [--batch-sizes 1 8] [--rounds 3]
      [--output timer_agreement.json]   (the JSON summary, written atomically; benchmarks/gpu_check.sh uses it)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.utils import benchmark as torch_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import infopt  # noqa: E402
from infopt.devices import synchronize  # noqa: E402
from infopt.measure.timing import TimingConfig, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="full", choices=("full", "tiny"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="thread count for both timers (default: torch's default here)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None, help="also write the JSON summary to this file")
    parser.add_argument("--min-run-time", type=float, default=2.0,
                        help="seconds per round for each timer (torch min_run_time; infopt min_time_s)")
    args = parser.parse_args()

    model = infopt.load_model("resnet50", device=args.device, size=args.size)
    config = TimingConfig(min_samples=10, min_time_s=args.min_run_time, max_time_s=4 * args.min_run_time,
                          target_rel_ci=0.01, num_threads=args.threads)
    summary = []
    for batch_size in args.batch_sizes:
        inputs = model.prepare_input(batch_size)

        def forward():
            with torch.inference_mode():
                model.forward(inputs)
            if model.device.type != "cpu":
                synchronize(model.device)  # torch's Timer syncs on its own only for CUDA; keep both honest

        timer = torch_benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=args.threads)
        # One discarded round first: the process's first calls at a new shape (allocator growth,
        # oneDNN/cuDNN kernel selection) would otherwise penalize whichever timer went first.
        measure(lambda: model.forward(inputs), model.device, config)
        timer.blocked_autorange(min_run_time=args.min_run_time)
        rounds = []
        for index in range(args.rounds):
            if index % 2 == 0:  # alternate which timer goes first, so slow drift cancels
                ours = measure(lambda: model.forward(inputs), model.device, config)
                theirs = timer.blocked_autorange(min_run_time=args.min_run_time)
            else:
                theirs = timer.blocked_autorange(min_run_time=args.min_run_time)
                ours = measure(lambda: model.forward(inputs), model.device, config)
            rounds.append({"infopt_median_ms": ours.median_ms, "infopt_ci95_ms": [ours.ci_low_ms, ours.ci_high_ms],
                           "infopt_n": ours.n, "infopt_converged": ours.converged,
                           "torch_median_ms": theirs.median * 1e3, "torch_blocks": len(theirs.times),
                           "torch_number_per_run": theirs.number_per_run,
                           "ratio": ours.median_ms / (theirs.median * 1e3)})
            print(f"batch {batch_size} round {index + 1}: infopt {ours.median_ms:.2f} ms "
                  f"[{ours.ci_low_ms:.2f}, {ours.ci_high_ms:.2f}] (n={ours.n}) vs torch {theirs.median * 1e3:.2f} ms "
                  f"({len(theirs.times)} blocks x {theirs.number_per_run}) ratio {rounds[-1]['ratio']:.3f}", flush=True)
        ratio = statistics.median(r["ratio"] for r in rounds)
        summary.append({"batch_size": batch_size, "median_ratio": ratio, "within_5pct": abs(ratio - 1) <= 0.05,
                        "rounds": rounds})
    record = {"model": "resnet50", "size": args.size, "device": str(model.device), "threads": args.threads,
              "results": summary}
    print(json.dumps(record, indent=2))
    if args.output:
        from infopt.results import save_json

        save_json(record, Path(args.output), overwrite=True)
    for item in summary:
        print(f"resnet50 ({args.size}) batch {item['batch_size']}: median ratio infopt/torch = "
              f"{item['median_ratio']:.3f} (target 1.00 +/- 0.05: {'MET' if item['within_5pct'] else 'NOT MET'})")


if __name__ == "__main__":
    main()
