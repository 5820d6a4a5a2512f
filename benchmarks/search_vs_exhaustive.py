"""Does the racing search give the exhaustive sweep's answer, in less time? (issue #23)

For each model (full-size resnet50, gpt2, distilbert by default, random weights) at batch 8, the optimize
notebook's two searches over the same default variant list (compiled paths included): the race
(:func:`infopt.optimize.race.run_variant_race`, budget ``--budget`` seconds) and the exhaustive sweep
(:func:`infopt.optimize.run_variant_sweep`, every variant timed in full). Printed per model: each search's winner
(the fastest accuracy-safe variant by paired speedup, as the recommendation ranks them), both paired speedups
with their 95% intervals, and the wall time each search took.

Exit status 1 when, for some model, the race's winner is neither the exhaustive winner nor inside the exhaustive
winner's interval (the race winner's paired speedup in the exhaustive table lies within the exhaustive winner's
95% CI); 0 otherwise. Run it alone on the machine: every figure is a timing.

    python benchmarks/search_vs_exhaustive.py                  # full size, budget 60 s (the CPU default)
    python benchmarks/search_vs_exhaustive.py --budget 120     # a longer race
    python benchmarks/search_vs_exhaustive.py --quick          # tiny models, few variants: proves the script runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import infopt  # noqa: E402
from infopt.env import cpu_model  # noqa: E402
from infopt.measure.timing import TimingConfig  # noqa: E402
from infopt.optimize import BASELINE, run_variant_sweep  # noqa: E402
from infopt.optimize.race import run_variant_race  # noqa: E402
from infopt.presets import CPU_OPTIMIZE_BUDGET_S, CPU_VARIANT_MAX_TIME_S  # noqa: E402

QUICK_VARIANTS = ["channels-last", "bf16", "int8-dynamic", "bf16-weights"]


def winner(table: pd.DataFrame, batch_size: int) -> pd.Series | None:
    """The fastest accuracy-safe, measured variant row at ``batch_size`` (by paired speedup)."""
    rows = table[(table["batch_size"] == batch_size) & (table["status"] == "ok") & (table["variant"] != BASELINE)
                 & (table["accuracy_ok"] == True)]  # noqa: E712 - a column of objects
    rows = rows[pd.to_numeric(rows["paired_speedup"], errors="coerce").notna()]
    if rows.empty:
        return None
    return rows.loc[pd.to_numeric(rows["paired_speedup"]).idxmax()]


def describe(row: pd.Series | None) -> str:
    if row is None:
        return "none (no safe variant measured)"
    return (f"{row['variant']} {row['paired_speedup']:.2f}x "
            f"[{row['paired_speedup_ci_low']:.2f}, {row['paired_speedup_ci_high']:.2f}]")


def compare(model_name: str, size: str, variants, budget_s: float, timing: TimingConfig, batch: int) -> dict:
    model = infopt.load_model(model_name, size=size)
    seq_len = 128 if model.is_text else None
    started = time.perf_counter()
    raced, race = run_variant_race(model, variants, (batch,), seq_len, budget_s=budget_s, timing=timing,
                                   measure_memory=False)
    race_s = time.perf_counter() - started
    started = time.perf_counter()
    full = run_variant_sweep(model, variants, (batch,), seq_len, timing=timing, measure_memory=False)
    full_s = time.perf_counter() - started
    race_best, full_best = winner(raced, batch), winner(full, batch)
    agrees = race_best is None and full_best is None
    if race_best is not None and full_best is not None:
        same = race_best["variant"] == full_best["variant"]
        in_full = full[(full["variant"] == race_best["variant"]) & (full["batch_size"] == batch)]
        speed = pd.to_numeric(in_full["paired_speedup"], errors="coerce").dropna()
        inside = bool(len(speed)) and full_best["paired_speedup_ci_low"] <= speed.iloc[0] <= \
            full_best["paired_speedup_ci_high"]
        agrees = same or inside
    return {"model": model_name, "race winner": describe(race_best), "exhaustive winner": describe(full_best),
            "race s": round(race_s, 1), "exhaustive s": round(full_s, 1), "agrees": agrees,
            "race": race.line(variants=raced["variant"].nunique() - 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "gpt2", "distilbert"])
    parser.add_argument("--budget", type=float, default=CPU_OPTIMIZE_BUDGET_S, help="race budget in seconds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny models, four variants, short timing")
    args = parser.parse_args(argv)
    size = "tiny" if args.quick else "full"
    variants = QUICK_VARIANTS if args.quick else None  # None: the default list, compiled paths included
    timing = TimingConfig.quick() if args.quick else TimingConfig(max_time_s=CPU_VARIANT_MAX_TIME_S)
    budget = min(args.budget, 3.0) if args.quick else args.budget
    rows = [compare(name, size, variants, budget, timing, args.batch) for name in args.models]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        print(table.drop(columns=["race"]).to_string(index=False))
    for row in rows:
        print(f"{row['model']}: {row['race']}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}")
    return 0 if table["agrees"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
