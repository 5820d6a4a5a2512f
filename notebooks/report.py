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
# # Report
#
# The run this report belongs to, measured by the benchmark, profile, memory and optimize notebooks; other runs
# (from this machine or copied from others) only when `compare_runs` lists them. Every row and line is labelled
# with its run, the host that ran it and its device target. Numbers are the ones the notebooks measured; nothing is
# re-measured here.

# %% tags=["parameters"]
results_dir: str = ""  # folder holding the runs; empty: the project's results folder
run_name: str = ""  # the run this report covers (empty: every run under results_dir)
compare_runs: list = []  # other runs under results_dir to show next to it (["all"]: every one)
include_quick: bool = False  # True: also show quick (smoke) runs next to full-size ones, marked (quick)
output_dir: str = ""  # where report charts go; empty: a new <results>/reports/<timestamp> folder
interactive: bool = False  # True: ipywidgets controls over the gathered results (JupyterLab)

# %%
import pandas as pd
from IPython.display import Markdown, display
from infopt.report import explorer, plots, summary
from infopt.layout import default_results_dir
from infopt.notebook import report_notebook
from infopt.run.params import coerce_namespace
from infopt.report.gathering import ReportScope, recommendations

coerce_namespace(globals())  # "-p include_quick false" arrives as text: typed and checked first
scope = ReportScope(results_dir or default_results_dir(), run_name, compare_runs, include_quick)
out, charts = report_notebook(output_dir)
pd.set_option("display.max_columns", 40)
results = scope.gather("results")
roofline = scope.gather("roofline_model")
variants = scope.gather("variants")
for note in scope.notes:
    print(note)

# %% [markdown]
# ## Summary
# One row per run, model and device (the device target's folder label, e.g. `cuda-H100`, where a run measured
# several targets or placed them with a Ray selector). **Latency**: median time of one forward at the smallest measured batch
# (batch 1 by default) with its 95% confidence interval. **Best throughput**: the highest samples/s of the batch
# sweep and the batch size that gave it. **Model memory**: the model's own footprint at its largest (weights as
# stored plus activations and workspace), with the figure its method sees beside it (CPU: the whole process). **Roofline**:
# how close the whole model got to the roof at its operational intensity, and whether memory bandwidth or compute
# bounds it. **Recommended variant**: per batch size, the fastest variant that passed the accuracy guard, its speedup
# over eager fp32 with a 95% interval, or why there is none.

# %%
serving = scope.gather("serving")
headline = summary.headline(results, roofline, variants, serving)
display(Markdown(f"Runs: {', '.join(map(scope.label, scope.runs)) or 'none'}"))
display(summary.styled_table(headline))
plots.show(summary.chart(headline), charts, "summary")

# %% [markdown]
# ## Did it get slower?
# This run against each run `compare_runs` lists (that run the base, this one the new): per target, model, variant
# and batch size, the change of the median with a 95% bootstrap interval (a row timed in two visits: its fastest
# visit's), the change divided by the machine's drift (the reference workload both runs timed at their start,
# after each timing notebook and at their end), the verdict, and what changed in the environment. The same table
# as `python -m infopt.compare BASE NEW` (docs/regressions.md); for a gate on a shared VM, run both with
# `--threads 1`.

# %%
from infopt.errors import InvalidInputError
from infopt.report.compare import compare_runs as compare_two_runs, display_table, summary_lines

compared = [run for run in scope.runs if run != scope.run_name] if scope.run_name else []
for other in compared:
    try:
        comparison = compare_two_runs(scope.results_dir / other, scope.results_dir / scope.run_name)
    except InvalidInputError as error:
        print(f"{other}: {error}")
        continue
    display(Markdown("\n\n".join(summary_lines(comparison))))
    display(display_table(comparison).style.hide(axis="index"))
if not compared:
    display(Markdown("No other run listed in `compare_runs` (or no `run_name`): nothing to compare."))

# %% [markdown]
# ## Where it ran
# Per run and device target: the target as given to `--device`, its folder in the run, the hardware (CPU model or
# GPU name, from the environment captured where the jobs ran), the host, the Ray node (start of its id) when Ray
# placed the jobs, and how many notebooks ran there and how they ended. Jobs that never started have no host.

# %%
where = scope.placements()
display(where.style.hide(axis="index") if not where.empty else Markdown("No run manifest records its jobs."))

# %% [markdown]
# ## Measurement quality
# Rows to read with care, counted per notebook result, run and model: **interference**: other processes used more
# than a quarter of a CPU core (or the GPU) while the row was timed (`interference_detail` gives the figure; such
# rows are never recommended); **not_converged**: the time cap ended sampling before the median's CI reached its
# target (rerun with `--param max_time_s=...` for converged figures); **too_few_samples**: fewer samples than a
# 95% CI needs. Then each model's eager baseline in the optimize results against the same point of the benchmark
# sweep: a disagreement beyond both CIs (+10%) means the machine changed between the notebooks.

# %%
from infopt.measure.interference import disagreements, quality_table

quality = quality_table({"benchmark": results, "generation": scope.gather("generation"), "optimize": variants,
                         "generation variants": scope.gather("generation_variants")})
print("Every timed row is clean, converged and has its CI." if quality.empty else
      f"{int(quality['interference'].sum())} row(s) timed on a busy machine, {int(quality['not_converged'].sum())} "
      f"not converged, {int(quality['too_few_samples'].sum())} with too few samples:")
if not quality.empty:
    display(quality)
consistency = disagreements(results, variants) if not (results.empty or variants.empty) else pd.DataFrame()
for message in consistency.get("message", pd.Series(dtype=str)):
    if message != "consistent":
        print(message)

# %% [markdown]
# ## Runs
# One row per run manifest (`run.json`): when it started, the device, how it ended and how long it took, and the
# exact command. `notebooks_failed` counts failed or interrupted notebooks (see the status table below).

# %%
scope.runs_table()

# %% [markdown]
# ## Environments
# The machine and software each run measured on. Compare these before comparing numbers: a different CPU model,
# thread count, or torch version changes latency as much as any optimization.

# %%
scope.environments()

# %% [markdown]
# ## Notebook status
# Every executed notebook, its status and duration. A failed notebook's executed copy (with the error) sits at the
# `html` path relative to its run folder.

# %%
scope.notebook_status()

# %% [markdown]
# ## Latency: median per call vs batch size
# One line per (run, host, device target, model, variant) that differs between series. Lower is better. Compare lines of
# the same model: the vertical gap between two devices or runs at a batch size is the latency difference.

# %%
plots.show(plots.compare(results, "batch_size", "latency_p50_ms", title="Median latency per call vs batch size",
                         x_label="batch size", y_label="p50 latency per call (ms)", log_y=True),
           charts, "compare_latency_p50")
if not results.empty:
    display(results.pivot_table(index=["model", "batch_size"], columns=["run", "device", "variant"],
                                values="latency_p50_ms"))

# %% [markdown]
# ## Throughput vs batch size
# Samples per second (batch size / mean latency). Higher is better; where a line flattens the device is saturated.

# %%
plots.show(plots.compare(results, "batch_size", "throughput_items_per_s", title="Throughput vs batch size",
                         x_label="batch size", y_label="samples/s", log_y=True), charts, "compare_throughput")

# %% [markdown]
# ## Peak memory vs batch size
# Absolute peak memory during the memory pass of the benchmark (the method is per row in `memory_method`: CPU
# resident memory, CUDA allocator peak, or MPS allocated memory, so compare like with like).
# The model's own footprint (`model_memory_mb` = weights + activations, the same sum on every device) follows.

# %%
plots.show(plots.compare(results, "batch_size", "peak_memory_mb", title="Peak memory vs batch size",
                         x_label="batch size", y_label="peak memory (MB)"), charts, "compare_peak_memory")
plots.show(plots.compare(results, "batch_size", "model_memory_mb", title="Model memory (weights + activations)",
                         x_label="batch size", y_label="model memory (MB)"), charts, "compare_model_memory")

# %% [markdown]
# ## Generation (gpt2): time to first token and time per output token
# TTFT grows with the prompt (prefill); TPOT with the KV cache should stay nearly flat. Lines per run and device.

# %%
generation = scope.gather("generation")
if generation.empty:
    print("No generation results under this folder.")
else:
    generation = generation.assign(variant=generation["variant"] + generation["use_cache"].map({True: " +kv-cache", False: " no-cache"}))
    plots.show(plots.compare(generation, "prompt_len", "ttft_ms", title="Time to first token vs prompt length",
                             x_label="prompt length (tokens)", y_label="TTFT (ms)", log_y=True), charts, "compare_ttft")
    plots.show(plots.compare(generation, "prompt_len", "tpot_p50_ms", title="Median time per output token vs prompt length",
                             x_label="prompt length (tokens)", y_label="TPOT p50 (ms)", log_y=True), charts, "compare_tpot")

# %% [markdown]
# ### Decode against its physical floor
# Per variant (benchmark rows: eager; optimize rows: every generation variant), measured TPOT p50 with its 95% CI
# beside `tpot_floor_ms` = (weights as stored + KV cache read per step) / measured copy bandwidth, and
# `bandwidth_utilization` = floor / TPOT: how far decode is from the memory limit (1.0 = at it). `ttft_floor_ms` is
# the prefill's compute floor. Definitions in docs/metrics.md.

# %%
from infopt.analyze.decode_floor import floor_table

floors = floor_table(pd.concat([scope.gather("generation"), scope.gather("generation_variants")], ignore_index=True))
plots.show(plots.tpot_against_floor(floors), charts, "tpot_against_floor")
display(floors if not floors.empty else Markdown("No generation rows with a decode floor."))

# %% [markdown]
# ## Roofline summary
# Whole-model point per run, model and device: achieved FLOP/s over the roof at the model's operational intensity
# (`roof_fraction`, 1.0 means at the roof). A low fraction means time is lost to overheads or unfused memory traffic.

# %%
if roofline.empty:
    print("No roofline results under this folder.")
else:
    columns = ["run", "host", "model", "device", "batch_size", "flops_per_sample", "operational_intensity",
               "time_ms", "achieved_flops_per_s", "roof_flops_per_s", "roof_fraction", "bound", "peak_source"]
    display(roofline[[c for c in columns if c in roofline]])

# %% [markdown]
# ## Optimization variants and recommendations
# Per run, model, device and batch size: the fastest variant that passes the accuracy guard and its speedup over
# eager fp32 (ratio of medians, with a confidence interval). Variants that fail the guard are never recommended.

# %%
if variants.empty:
    print("No variant results under this folder.")
else:
    from infopt.optimize.race import search_lines
    print("\n".join(search_lines(variants)))  # how each model's search went: racing budget and spend, or exhaustive
    display(recommendations(variants))
    plots.show(plots.speedup_vs_accuracy(variants, title="Speedup vs accuracy error, every run and model"),
               charts, "compare_variants")

# %% [markdown]
# ## Accuracy on your data
# With `--data` (docs/data.md): per variant, the task metric of fp32 and of the variant on the evaluation split,
# the paired loss with its 95% interval and the verdict (safe / unsafe / cannot tell, with the samples that would
# settle it); then median latency against the metric, the Pareto front of the safe variants, unsafe ones as
# crosses. Without data the guard compared outputs on random inputs: agreement on random inputs, not accuracy.

# %%
from infopt.report.task_accuracy import accuracy_table, has_task_accuracy, latency_vs_accuracy, warnings_of
if variants.empty or not has_task_accuracy(variants):
    print("Accuracy guard: agreement on random inputs, not accuracy (no --data given).")
else:
    for line in warnings_of(variants):
        print("warning:", line)
    display(accuracy_table(variants))
    plots.show(latency_vs_accuracy(variants), charts, "latency_vs_accuracy")

# %% [markdown]
# ## Serving: traffic within the latency bound (MLPerf LoadGen)
# Per run, model and target: each served variant's peak QPS under the bound (Server scenario, Poisson arrivals,
# LoadGen's verdict) at its best batcher setting, next to its Offline throughput; then every Server test's latency
# against the offered load, the bound drawn. Definitions and budgets: docs/serving.md.

# %%
if serving.empty:
    print("No serving results under this folder (the serve notebook did not run).")
else:
    from infopt.report.serving_chart import latency_vs_offered_load
    from infopt.serve import best_settings

    keys = [k for k in ("run", "model", "device") if k in serving]
    display(pd.concat([best_settings(group).assign(**dict(zip(keys, key if isinstance(key, tuple) else (key,))))
                       for key, group in serving.groupby(keys)], ignore_index=True)
            .reindex(columns=[*keys, "variant", "peak_qps", "percentile", "bound_ms", "max_batch", "max_wait_ms",
                              "offline_qps", "verdict_basis"]))
    plots.show(latency_vs_offered_load(serving, title="Latency vs offered load, every run and model"), charts,
               "serving_latency_vs_load")

# %% [markdown]
# ## Explore (interactive)
# With `interactive=True` (JupyterLab): pick model, device, variant, batch sizes and metric over every benchmark row.

# %%
if interactive:
    explorer.explore(results)
