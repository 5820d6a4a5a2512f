# ---
# jupyter:
#   jupytext:
#     text_representation:
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Serve: how much traffic within a latency bound (MLPerf LoadGen)
#
# The model (eager fp32, the optimize notebook's recommended variant, and `serve_variants`) sits behind a dynamic
# batcher (max batch, max wait, one worker) and MLPerf's LoadGen drives it: **SingleStream** (one query at a time,
# p90), **Server** (Poisson arrivals; the peak target QPS whose latency percentile meets the bound, by bisection over
# `server_target_qps` judged by LoadGen), **Offline** (all queries at once: throughput) and, for causal LMs, the
# Server scenario with LoadGen's token latencies (TTFT, TPOT). LoadGen's logs stay under `loadgen/` in the model
# folder. Definitions, budgets and the checks: docs/serving.md.

# %% tags=["parameters"]
model: str = "resnet50"  # resnet50 | gpt2 | distilbert | torchvision:NAME | hf:FOLDER | py:MODULE:FUNCTION
device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto (a named device is used or refused, never replaced)
size: str = "full"  # full | tiny (tiny: same family, very small, for smoke runs)
quick: bool = False  # True: smoke run (the quick preset's budgets; figures not for reporting)
output_dir: str = ""  # empty: <results>/interactive/<device>/<model>, one folder shared by hand runs
overwrite: bool = False  # True: replace result files already in output_dir
interactive: bool = False  # no widgets here (the runner sets it for every model notebook)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
latency_bound_ms: float = 100.0  # the bound on the latency percentile (the default: 100 ms on CPU, 10 ms on GPU)
latency_percentile: float = 99.0  # which percentile must meet the bound, strictly between 0 and 100
scenarios: list = ["single-stream", "server", "offline", "server-tokens"]  # LoadGen scenarios to run
serve_variants: list = []  # extra variant specs to serve besides eager fp32 and the recommended one
max_batch_sizes: list = [1, 4, 8, 16]  # batcher grid: maximum batch sizes
max_waits_ms: list = [1.0, 5.0, 20.0]  # batcher grid: maximum waits (ms) from a batch's first request
scenario_budget_s: float = 5.0  # minimum duration of each LoadGen test (MLPerf's 10 minutes scaled down)
min_queries: int = 64  # minimum queries per test (raised to what early stopping needs when strict_validity)
bisection_steps: int = 3  # Server tests between the bisection's two ends, per batcher setting
strict_validity: bool = True  # True: a rate counts as served only when LoadGen says VALID (early stopping included)
grid_budget_s: float = 20.0  # seconds per variant for the batcher grid; settings left over are reported as skipped
max_test_s: float = 60.0  # cap on one LoadGen Server test; rates too low to issue its minimum queries in it are not tested
new_tokens: int = 16  # causal LMs: tokens generated per query in the token-latency scenario

# %%
import pandas as pd
from IPython.display import display
from infopt.notebook import model_notebook
from infopt.report import plots
from infopt.report.serving_chart import latency_vs_offered_load
from infopt.results import save_results
from infopt.run.params import coerce_namespace
from infopt.serve import ServeSettings, best_settings, consistency_checks, serve_model
from infopt.serve.sources import batch1_medians_ms, recommended_variant

coerce_namespace(globals())  # "-p quick false" arrives as text: typed and checked before the model loads
settings = ServeSettings(bound_ms=latency_bound_ms, percentile=latency_percentile, scenarios=tuple(scenarios),
                         max_batches=tuple(max_batch_sizes), max_waits_ms=tuple(max_waits_ms),
                         budget_s=scenario_budget_s, min_queries=min_queries, bisection_steps=bisection_steps,
                         strict=strict_validity, samples=16 if quick else 64,
                         extras={"max_test_s": 2 if quick else max_test_s})
overwrite = overwrite or not output_dir  # hand runs share one folder per model and replace their files
wrapper, out, charts, label, results_dir = model_notebook(model, device, size, output_dir)
text_seq_len = seq_len if wrapper.is_text else None
recommended = recommended_variant(out, model, label)
variants = list(dict.fromkeys(["eager-fp32", *([recommended] if recommended else []), *serve_variants]))
print(f"serving {', '.join(variants)}; bound p{latency_percentile:g} <= {latency_bound_ms:g} ms"
      + ("" if recommended else " (no optimize recommendation in this folder: eager fp32 only, plus serve_variants)"))

# %% [markdown]
# ## Every LoadGen test
# One row per LoadGen test (`role`: low-rate Server run, Offline, bisection step, token latencies), plus one `peak`
# row per variant and batcher setting. `meets_bound` follows `verdict_basis`; `loadgen_result` and `summary_lines`
# are LoadGen's own words; `log_dir` holds its log files.

# %%
frames = []
for variant in variants:
    try:
        if variant == "eager-fp32":
            served = wrapper
        else:
            from infopt.optimize.applied import apply_variant  # only when a variant is served (heavy imports)

            served = apply_variant(wrapper, variant)
        frame = serve_model(served, variant, settings, out / "loadgen", seq_len=text_seq_len,
                            grid_budget_s=grid_budget_s, new_tokens=min(new_tokens, 4) if quick else new_tokens,
                            token_latencies=variant == "eager-fp32")
    except Exception as error:  # a variant that does not apply here is a row, not a failed notebook
        frame = pd.DataFrame([{"variant": variant, "scenario": "server", "role": "error", "error": str(error)}])
    frames.append(frame)
serving = pd.concat(frames, ignore_index=True)
serving.insert(0, "model", wrapper.name)  # the rows of every notebook carry the name
serving["device"] = label
save_results(serving, out, model, label, kind="serving", overwrite=overwrite,
             config={"settings": settings.to_dict(), "variants": variants, "seq_len": text_seq_len,
                     "grid_budget_s": grid_budget_s, "recommended_variant": recommended})
columns = ["variant", "scenario", "role", "search_phase", "max_batch", "max_wait_ms", "target_qps", "achieved_qps", "peak_qps",
           "latency_p50_ms", "latency_p90_ms", "latency_at_percentile_ms", "ttft_p99_ms", "tpot_p99_ms",
           "meets_bound", "loadgen_result", "queries", "error"]
serving[[c for c in columns if c in serving]]

# %% [markdown]
# ## Latency vs offered load
# Each Server test: the bound's percentile (solid) and p50 (dotted) against the target rate; the dashed line is the
# bound. The peak under the bound is the highest rate whose solid point stays below it (LoadGen's verdict decides).

# %%
plots.show(latency_vs_offered_load(serving, title=f"{model} on {label}: latency vs offered load"), charts,
           "serving_latency_vs_load")

# %% [markdown]
# ## Best batcher settings and the consistency checks

# %%
best = best_settings(serving)
display(best[[c for c in ("variant", "max_batch", "max_wait_ms", "peak_qps", "offline_qps", "verdict_basis")
              if c in best]])
checks = consistency_checks(serving, batch1_medians_ms(out, model, label))
display(checks)
for _, row in best.iterrows():
    print(f"{model} on {label}, {row['variant']}: max {row['peak_qps']:.3g} QPS @ p{latency_percentile:g} <= "
          f"{latency_bound_ms:g} ms (max batch {int(row['max_batch'])}, max wait {row['max_wait_ms']:g} ms; "
          f"offline {row['offline_qps']:.3g} samples/s)")
for _, row in checks.iterrows():
    verdict = "n/a" if row["ok"] is None else ("ok" if row["ok"] else "NOT MET")
    print(f"check {row['check']} [{row['variant']}, {row['setting']}]: {verdict}; {row['note']}")
