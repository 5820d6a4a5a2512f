"""Runtime and quantization paths side by side: paired speedup, CI and accuracy per path (issue #11).

For each model (full-size resnet50, gpt2, distilbert by default, random
weights) at batch 8: eager fp32, the legacy ``int8-dynamic`` (deprecated),
torchao int8 weight-only and int8 dynamic (int4 / float8 on CUDA), ONNX
Runtime (and its int8), bf16 and channels-last, each with its paired
speedup over eager fp32 (interleaved rounds, 95% CI), ratio-of-medians
speedup, accuracy against the fp32 eager reference and export/compile time.
Then, for the causal LMs, the generation variants at a 32-token prompt and 64
new tokens: TTFT, TPOT median and p99, decode tokens/s, paired TPOT/TTFT
speedups and greedy-continuation agreement.

Targets checked (exit status 0 when all are met, 1 otherwise):
the best accuracy-safe forward variant >= 2.5x eager fp32 per model; the best
safe generation variant cuts gpt2's TPOT >= 1.8x against eager fp32 with the KV cache.

    python benchmarks/faster_paths.py                       # full size, compiled forward paths included (run alone)
    python benchmarks/faster_paths.py --no-compile          # eager paths only (no Inductor compilation)
    python benchmarks/faster_paths.py --compile-generation  # also the compiled decode step on CPU (slow to compile)
    python benchmarks/faster_paths.py --quick               # tiny models, few samples: proves the script runs
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
from infopt.optimize.generation import recommend_generation, run_generation_variant_sweep  # noqa: E402
from infopt.measure.timing import TimingConfig  # noqa: E402
from infopt.optimize import BASELINE, recommend, run_variant_sweep  # noqa: E402

FORWARD_TARGET, TPOT_TARGET = 2.5, 1.8
PATHS = ["int8-dynamic", "torchao-int8-weight-only", "torchao-int8-dynamic", "torchao-int4-weight-only",
         "torchao-float8", "onnxruntime", "onnxruntime-int8", "onnxruntime-int8-static", "channels-last+onnxruntime",
         "bf16", "bf16-weights", "channels-last", "bf16+channels-last", "fp16", "fp16-weights"]
COMPILED_PATHS = ["compile", "compile-freezing", "bf16-weights+compile-freezing",
                  "bf16-weights+channels-last+compile-freezing", "torchao-int8-dynamic+compile",
                  "torchao-int8-dynamic+compile-freezing"]
GENERATION_PATHS = ["static-cache", "bf16-weights", "bf16", "int8-dynamic", "torchao-int8-weight-only",
                    "torchao-int8-dynamic", "torchao-int4-weight-only", "torchao-float8", "fp16-weights",
                    "bf16-weights+static-cache", "torchao-int8-weight-only+static-cache",
                    "torchao-int8-dynamic+static-cache"]
COMPILED_GENERATION_PATHS = ["static-cache-compile", "bf16-weights+static-cache-compile",
                             "torchao-int8-weight-only+static-cache-compile",
                             "torchao-int8-dynamic+static-cache-compile"]


def _ci(value, low, high, digits=2) -> str:
    if pd.isna(value):
        return "-"
    interval = "" if pd.isna(low) or pd.isna(high) else f" [{low:.{digits}f}-{high:.{digits}f}]"
    return f"{value:.{digits}f}x{interval}"


def _num(value, fmt=".3g") -> str:
    return "-" if value is None or pd.isna(value) else format(value, fmt)


def forward_paths(model, args, timing: TimingConfig) -> tuple[pd.DataFrame, bool]:
    paths = PATHS + ([] if args.no_compile else COMPILED_PATHS)
    seq_len = args.seq_len if model.is_text else None
    df = run_variant_sweep(model, paths, batch_sizes=[args.batch_size], seq_len=seq_len, timing=timing,
                           measure_memory=False, paired_rounds=args.paired)
    print(f"\n{model.name} forward, batch {args.batch_size}{f', seq {seq_len}' if seq_len else ''} "
          f"(paired speedup: median of {args.paired} interleaved rounds [95% CI]; medians: ratio of medians [CI])")
    print(f"  {'variant':<46}{'status':<7}{'median ms':>10}  {'paired speedup':<22}{'medians speedup':<22}"
          f"{'rel err':>9}{'cosine':>9}  ok   {'export/compile s':>8}  note")
    for _, row in df.iterrows():
        note = row["error"] if row["status"] != "ok" else (row.get("notes") or "")
        print(f"  {row['variant']:<46}{row['status']:<7}{_num(row['latency_p50_ms'], '.4g'):>10}  "
              f"{_ci(row['paired_speedup'], row['paired_speedup_ci_low'], row['paired_speedup_ci_high']):<22}"
              f"{_ci(row['speedup_vs_baseline'], row['speedup_ci_low'], row['speedup_ci_high']):<22}"
              f"{_num(row['rel_error'], '.2g'):>9}{_num(row['cosine_similarity'], '.5f'):>9}  "
              f"{'yes' if row['accuracy_ok'] == True else ('-' if row['status'] != 'ok' else 'NO'):<4} "  # noqa: E712
              f"{_num(row['compile_time_s'], '.1f'):>8}  {str(note)[:110]}")
    best = recommend(df)
    met = True
    for _, rec in best.iterrows():
        print(f"  -> {rec['recommendation']}")
        speedup = rec["speedup"]  # recommend(): the headline (paired) speedup
        met = met and not pd.isna(speedup) and speedup >= FORWARD_TARGET
    print(f"  target: best safe variant >= {FORWARD_TARGET}x eager fp32: {'met' if met else 'NOT met'}")
    return df, met


def generation_paths(model, args) -> tuple[pd.DataFrame, bool]:
    compiled = args.compile_generation or (model.device.type == "cuda" and not args.no_compile)
    paths = GENERATION_PATHS + (COMPILED_GENERATION_PATHS if compiled else [])
    df = run_generation_variant_sweep(model, paths, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                                      batch_size=args.gen_batch_size, repeats=args.gen_repeats,
                                      paired_rounds=args.paired, include_compile=compiled)
    print(f"\n{model.name} generation, batch {args.gen_batch_size}, prompt {args.prompt_len}, {args.new_tokens} new "
          f"tokens, KV cache (paired: median of {args.paired} alternating rounds [95% CI])")
    print(f"  {'variant':<46}{'status':<7}{'TTFT ms':>9}{'TPOT p50':>10}{'TPOT p99':>10}{'tok/s':>9}  "
          f"{'paired TPOT speedup':<22}{'paired TTFT speedup':<22}{'same tok':>9}{'1st div':>8}{'prefill err':>12}"
          f"  ok   compile s")
    for _, row in df.iterrows():
        if row["status"] != "ok":
            print(f"  {row['variant']:<46}{row['status']:<7}  {str(row['error'])[:140]}")
            continue
        print(f"  {row['variant']:<46}{row['status']:<7}{_num(row['ttft_ms'], '.4g'):>9}"
              f"{_num(row['tpot_p50_ms'], '.4g'):>10}{_num(row['tpot_p99_ms'], '.4g'):>10}"
              f"{_num(row['decode_tokens_per_s'], '.4g'):>9}  "
              f"{_ci(row['paired_tpot_speedup'], row['paired_tpot_speedup_ci_low'], row['paired_tpot_speedup_ci_high']):<22}"
              f"{_ci(row['paired_ttft_speedup'], row['paired_ttft_speedup_ci_low'], row['paired_ttft_speedup_ci_high']):<22}"
              f"{_num(row['identical_token_share'], '.0%'):>9}{_num(row['first_divergence'], '.0f'):>8}"
              f"{_num(row['prefill_rel_error'], '.2g'):>12}  {'yes' if row['generation_accuracy_ok'] else 'NO':<4} "
              f"{_num(row['compile_time_s'], '.1f')}")
    print(f"  tolerance: {df.loc[df['status'] == 'ok', 'generation_tolerance'].iloc[-1]}")
    best = recommend_generation(df)
    met = False
    for _, rec in best.iterrows():
        print(f"  -> {rec['recommendation']}")
        if rec["metric"] == "TPOT":
            met = not pd.isna(rec.get("speedup")) and rec["speedup"] >= TPOT_TARGET
    print(f"  target: best safe variant cuts TPOT >= {TPOT_TARGET}x vs eager fp32 with KV cache: "
          f"{'met' if met else 'NOT met'}")
    return df, met


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "gpt2", "distilbert"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128, help="text models' forward sequence length")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--gen-batch-size", type=int, default=8)
    parser.add_argument("--gen-repeats", type=int, default=3)
    parser.add_argument("--paired", type=int, default=6, metavar="ROUNDS")
    parser.add_argument("--max-time-s", type=float, default=None,
                        help="cap in seconds on each timed forward point (default: the library's)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the torch.compile forward paths (about 20-60 s of compilation each on CPU)")
    parser.add_argument("--compile-generation", action="store_true",
                        help="also the compiled decode-step paths on CPU (always on for CUDA unless --no-compile)")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, batch 2, short prompts, 2 paired rounds: a smoke run, not figures to report")
    parser.add_argument("--out", type=Path, default=None, help="save the tables as CSV here")
    args = parser.parse_args(argv)
    size = "full"
    if args.quick:
        size, args.batch_size, args.seq_len, args.prompt_len, args.new_tokens = "tiny", 2, 16, 8, 6
        args.gen_batch_size, args.gen_repeats, args.paired = 2, 1, 2
    caps = {} if args.max_time_s is None else {"max_time_s": args.max_time_s}
    timing = TimingConfig.quick(**caps) if args.quick else TimingConfig(**caps)
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {size} models"
          + (" (QUICK: smoke run, figures not for reporting)" if args.quick else ""))
    all_met = True
    for name in args.models:
        model = infopt.load_model(name, device=args.device, size=size)
        df, met = forward_paths(model, args, timing)
        all_met &= met
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.out / f"{name}_{args.device}_faster_paths.csv", index=False)
        if getattr(model, "is_causal_lm", False) and not args.skip_generation:
            gen, met = generation_paths(model, args)
            all_met &= met
            if args.out is not None:
                gen.drop(columns=["ttft_samples_ms", "e2e_samples_ms", "tpot_samples_ms"]).to_csv(
                    args.out / f"{name}_{args.device}_generation_paths.csv", index=False)
        del model
    print(f"\nAll targets {'met' if all_met else 'NOT met'}; total {time.perf_counter() - started:.0f} s"
          f" (baseline: {BASELINE})")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
