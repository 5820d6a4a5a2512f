"""Full-size variant sweep: the fastest variant that passes the accuracy guard, per model.

Runs :func:`infopt.optimize.sweep.run_variant_sweep` on full-size resnet50, gpt2 and
distilbert (random weights) at batch 1 and 8, prints every variant's median
latency, speedup (ratio of medians, 95% interval) and accuracy, then one
recommendation per model and batch size, and checks the target: at least 2x
over eager fp32 at batch 8 for every model, with the accuracy guard passing.

    python benchmarks/variant_sweep.py                       # all models, no torch.compile (slow on CPU)
    python benchmarks/variant_sweep.py --compile             # also the compiled variants
    python benchmarks/variant_sweep.py --models resnet50 --quick
    python benchmarks/variant_sweep.py --out results/        # also save {model}_{device}_variants.csv/json

Exit status 0 when the target is met for every model run, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import infopt  # noqa: E402
from infopt.env import collect  # noqa: E402
from infopt.errors import InfoptError  # noqa: E402
from infopt.results import save_results  # noqa: E402
from infopt.measure.timing import TimingConfig  # noqa: E402
from infopt.measure.benchmark import benchmark_point  # noqa: E402
from infopt.optimize import BASELINE, SPEEDUP_DEFINITION, default_variants, recommend, run_variant_sweep  # noqa: E402

TARGET_SPEEDUP = 2.0
TARGET_BATCH = 8
SHOWN = ["variant", "batch_size", "status", "latency_p50_ms", "speedup_vs_baseline", "speedup_ci_low",
         "speedup_ci_high", "paired_speedup", "paired_speedup_ci_low", "paired_speedup_ci_high", "rel_error",
         "cosine_similarity", "accuracy_ok", "converged", "compile_time_s"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "gpt2", "distilbert"], choices=infopt.list_models())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, TARGET_BATCH])
    parser.add_argument("--seq-len", type=int, default=None, help="text models (default 128)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="specs to run (default: every single variant plus the applicable combinations)")
    parser.add_argument("--compile", action="store_true", help="include torch.compile variants (minutes per model on CPU)")
    parser.add_argument("--quick", action="store_true", help="few timing samples: a smoke run, not figures to report")
    parser.add_argument("--paired", type=int, default=6, metavar="ROUNDS",
                        help="interleaved baseline/variant rounds per point for the drift-robust paired_speedup "
                             "(default 6; 0 to skip)")
    parser.add_argument("--no-memory", action="store_true", help="skip the separate memory pass (faster)")
    parser.add_argument("--max-time", type=float, default=None, help="cap on timing seconds per point (default: TimingConfig's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    parser.add_argument("--out", type=Path, default=None, help="save {model}_{device}_variants.csv/json here")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def check_drift(model, df: pd.DataFrame, batch_sizes, seq_len, timing: TimingConfig) -> None:
    """Re-time the baseline after all variants: a machine that got busier (or quieter) meanwhile shows here."""
    first = df[(df["variant"] == BASELINE) & (df["status"] == "ok")].set_index("batch_size")["latency_p50_ms"]
    for size in batch_sizes:
        again = benchmark_point(model, size, seq_len, timing=timing, measure_memory=False)
        if size in first.index and again["status"] == "ok":
            print(f"  baseline drift, batch {size}: median {first[size]:.4g} ms at the start, "
                  f"{again['latency_p50_ms']:.4g} ms at the end ({again['latency_p50_ms'] / first[size] - 1:+.1%})")


def main(argv=None) -> int:
    args = parse_args(argv)
    timing = TimingConfig.quick(num_threads=args.threads) if args.quick else TimingConfig(num_threads=args.threads)
    if args.max_time is not None:
        timing = TimingConfig(**{**timing.to_dict(), "max_time_s": args.max_time,
                                 "min_time_s": min(timing.min_time_s, args.max_time)})
    env = collect()
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads() if args.threads is None else args.threads} threads, device {args.device}, "
          f"size {args.size}{', QUICK timing (not for reporting)' if args.quick else ''}")
    print(f"Definition: {SPEEDUP_DEFINITION}.")
    if args.paired:
        print(f"paired_speedup: median over {args.paired} interleaved baseline/variant rounds (A B, B A, ...) of "
              "the per-round ratio of medians, 95% order-statistic CI; recommendations use it.")
    summaries = []
    for name in args.models:
        started = time.perf_counter()
        model = infopt.load_model(name, args.device, size=args.size)
        variants = args.variants or default_variants(model, include_compile=args.compile)
        df = run_variant_sweep(model, variants, args.batch_sizes, args.seq_len, timing=timing,
                               measure_memory=not args.no_memory, paired_rounds=args.paired)
        print(f"\n=== {name} ({time.perf_counter() - started:.0f} s) ===")
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.4g}".format):
            print(df[SHOWN].to_string(index=False))
        for _, row in df[df["status"].isin(["n/a", "error", "oom"])].drop_duplicates("variant").iterrows():
            print(f"  {row['variant']}: {row['status']} - {row['error']}")
        check_drift(model, df, args.batch_sizes, args.seq_len, timing)
        best = recommend(df)
        for text in best["recommendation"]:
            print(f"  -> {text}")
        at_target = best[best["batch_size"] == TARGET_BATCH]
        if not at_target.empty:
            summaries.append(at_target.iloc[0])
        if args.out is not None:
            paths = save_results(df, args.out, name, str(model.device), kind="variants", env=env,
                                 config={"batch_sizes": args.batch_sizes, "seq_len": args.seq_len, "size": args.size,
                                         "variants": variants, "timing": timing.to_dict(),
                                         "paired_rounds": args.paired},
                                 overwrite=args.overwrite)
            print(f"  saved {paths['csv']} and {paths['json']}")
        del model, df
    print(f"\nTarget: >= {TARGET_SPEEDUP:g}x over eager-fp32 at batch {TARGET_BATCH}, accuracy guard passing")
    met_all = bool(summaries) and len(summaries) == len(args.models)
    for row in summaries:
        met = row["variant"] is not None and row["speedup"] >= TARGET_SPEEDUP
        met_all &= met
        print(f"  {row['model']:<11} {str(row['variant']):<28} {row['speedup']:.2f}x "
              f"(95% CI {row['speedup_ci_low']:.2f}-{row['speedup_ci_high']:.2f}x, {row['speedup_measure']})  "
              f"{'MET' if met else 'NOT MET'}")
    return 0 if met_all else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InfoptError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
