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
# # Optimize: the fastest variant that keeps the answers right
#
# Each variant (layout, reduced precision, quantization, compilation, attention implementation, and compositions
# with `+`) is timed like the benchmark and its outputs on the same seeded inputs are compared with eager fp32.
# `speedup_vs_baseline` = eager-fp32 median latency / variant median latency (same batch size), with a 95% interval
# from the two medians' intervals. A variant outside the accuracy tolerance is marked `accuracy_ok=False` and never
# recommended; one that does not apply is `n/a` with the reason; one that fails is `error` with the message.

# %% tags=["parameters"]
model: str = "resnet50"  # resnet50 | gpt2 | distilbert | torchvision:NAME | hf:FOLDER | py:MODULE:FUNCTION
device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto (a named device is used or refused, never replaced)
size: str = "full"  # full | tiny (tiny: same family, very small, for smoke runs)
quick: bool = False  # True: few timing iterations (smoke runs; numbers are noisier)
output_dir: str = ""  # empty: <results>/interactive/<device>/<model>, one folder shared by hand runs
overwrite: bool = False  # True: replace result files already in output_dir
interactive: bool = False  # True: ipywidgets controls over the saved results (JupyterLab)
batch_sizes: list = [1, 8]  # batch sizes to compare variants at (each at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
variants: list = []  # variant specs such as "bf16+channels-last"; empty list: the default set
include_compile: bool = True  # False: leave the torch.compile variants out (their compilation costs seconds to minutes each on a CPU)
max_time_s: float = 3.0  # cap in seconds on each fully timed point (lower: faster, wider confidence intervals)
search: str = "racing"  # racing: short paired rounds, slower variants eliminated early | exhaustive: every variant timed in full at every batch size
optimize_budget_s: float = 60.0  # racing: seconds of timed race rounds per model and target (compilation and accuracy checks not included)
generation: bool = True  # causal LMs and encoder-decoders: also time the generation variants (TTFT / TPOT)
prompt_len: int = 32  # prompt tokens for the generation variants
new_tokens: int = 16  # generated tokens per generate call (at least 2)
data: str = ""  # your data (docs/data.md), e.g. sklearn:digits: the guard measures the task metric on it and static int8 calibrates on it; empty: agreement on random inputs, not accuracy
accuracy_budget: float = -1.0  # with data: the largest accepted loss in the metric's unit; -1: the default (1 point of top-1, 2% relative perplexity)
generation_variants: list = ["bf16-weights+static-cache", "torchao-int8-dynamic"]  # causal LMs and encoder-decoders; empty list: the full default set

# %%
import pandas as pd
from IPython.display import display
from infopt import report
from infopt.report import explorer, plots
from infopt.notebook import model_notebook
from infopt.run.params import coerce_namespace
from infopt.results import save_results
from infopt.measure.timing import TimingConfig
from infopt.errors import InvalidInputError
from infopt.optimize import SPEEDUP_DEFINITION, describe_variants, recommend, run_variant_sweep
from infopt.optimize.race import SEARCHES, run_variant_race

coerce_namespace(globals())  # "-p quick false" arrives as text: typed and checked before the model loads
overwrite = overwrite or not output_dir  # hand runs share one folder per model and replace their files
wrapper, out, charts, label, results_dir = model_notebook(model, device, size, output_dir)

if search not in SEARCHES:
    raise InvalidInputError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}.")
timing = TimingConfig.quick() if quick else TimingConfig(max_time_s=max_time_s)
text_seq_len = seq_len if wrapper.is_text else None
describe_variants()
guard, task_results, data_record = None, {}, None  # the guard on the user's data (infopt.optimize.task_accuracy)
if data:
    from infopt.data import load_data
    from infopt.optimize.task_accuracy import TaskAccuracyGuard, attach_calibration, race_accuracy_check
    dataset = load_data(data, wrapper)
    guard = TaskAccuracyGuard(wrapper, dataset, budget=None if accuracy_budget < 0 else accuracy_budget)
    data_record = {**dataset.record(), "calibrated_on": attach_calibration(wrapper, dataset),
                   "budget": guard.budget, "budget_unit": guard.unit}
    print(f"data: {dataset.description}; fp32 {guard.metric_name} = {guard.reference_value:.4g} on "
          f"{guard.part.size} evaluation samples; budget {guard.budget:g} ({guard.unit})")
    for line in dataset.warnings():
        print("warning:", line)
else:
    print("no data given: the guard compares outputs on random inputs (agreement on random inputs, not accuracy)")

# %% [markdown]
# ## Speedup table
# One row per variant and batch size. `status` says whether it ran; the accuracy columns say what it cost
# (`rel_error` = norm of the difference / norm of the reference; `cosine_similarity` is the worst row's;
# `accuracy_metric` and `tolerance` state the test applied). With `search="racing"` (docs/optimize.md) every
# variant is accuracy-checked, then raced in short paired rounds at the largest batch size: `search_stage` says
# where each stopped (`accuracy`: never timed; `eliminated`: the interval it had then; `confirmed`: measured in
# full at every batch size), `compile_time_s` is compilation, kept out of the race's timing.

# %%
if search == "racing":
    sweep, race = run_variant_race(wrapper, variants or None, batch_sizes, seq_len=text_seq_len, timing=timing,
                                   include_compile=include_compile, budget_s=optimize_budget_s,
                                   **({"accuracy_check": race_accuracy_check(guard, task_results)} if guard else {}))
    print(sweep["search_summary"].iloc[0])
else:
    sweep = run_variant_sweep(wrapper, variants or None, batch_sizes, seq_len=text_seq_len, timing=timing,
                              include_compile=include_compile)
    sweep["search"] = "exhaustive"
    if guard:
        from infopt.optimize.task_accuracy import check_variants
        check_variants(guard, wrapper, sweep["variant"].unique(), task_results)
from infopt.optimize.task_accuracy import merge_task_columns
sweep = merge_task_columns(sweep, guard, task_results, weights=wrapper.weights)  # accuracy_basis on every row; the task verdict with data
save_results(sweep, out, model, label, kind="variants", overwrite=overwrite,
             config={"timing": timing.to_dict(), "batch_sizes": batch_sizes, "seq_len": text_seq_len,
                     "variants": variants, "include_compile": include_compile, "search": search,
                     "optimize_budget_s": optimize_budget_s if search == "racing" else None,
                     "data": data_record})
print(SPEEDUP_DEFINITION)
columns = ["variant", "batch_size", "status", "search_stage", "latency_p50_ms", "paired_speedup",
           "paired_speedup_ci_low", "paired_speedup_ci_high", "speedup_verdict", "speedup_vs_baseline",
           "speedup_ci_low", "speedup_ci_high", "interference", "accuracy_ok", "accuracy_basis", "task_value",
           "task_loss", "task_loss_low", "task_loss_high", "task_verdict", "rel_error", "cosine_similarity",
           "compile_time_s", "search_note", "error"]
sweep[[c for c in columns if c in sweep]]

# %% [markdown]
# ## Speedup vs accuracy error
# Each point is a variant at one batch size: up is faster (above the dotted line beats eager fp32), right is less
# accurate (relative error against eager fp32, log scale; exact results sit at the far left). Crosses failed the
# accuracy guard. The best choice is the highest circle.

# %%
plots.show(plots.speedup_vs_accuracy(sweep, title=f"{model} on {label}: speedup vs accuracy error"),
           charts, "speedup_vs_accuracy")

# %% [markdown]
# ## Recommendation
# Per batch size: the fastest variant with `status="ok"` that passes the accuracy guard, and by how much.
# The headline is the paired speedup (alternating baseline/variant rounds). A variant is recommended only if that
# speedup's 95% interval lies above 1x and its rows were not timed on a busy machine (`interference`); otherwise
# eager fp32 is kept and the line says why (machine busy, not enough samples, or no variant beats the baseline).

# %%
recommendations = recommend(sweep)
from infopt.optimize.task_accuracy import recommendation_lines
for line in recommendation_lines(recommendations, sweep, guard):
    print(line)
recommendations

# %% [markdown]
# ## Generation: TTFT and TPOT per variant (causal LMs and encoder-decoders)
# Each variant runs the whole `generate` loop with the KV cache (baseline: eager fp32, dynamic cache): TTFT, TPOT
# median and p99, decode tokens/s; `paired_*_speedup` = median over alternating baseline/variant rounds of
# baseline / variant (95% CI). Accuracy: greedy continuation vs eager fp32 (first divergence, share of identical
# tokens) and the prefill logits' relative error; `generation_tolerance` states the test.

# %%
if generation and (wrapper.is_causal_lm or wrapper.is_encoder_decoder):
    from infopt.optimize.generation import recommend_generation, run_generation_variant_sweep

    gen_sweep = run_generation_variant_sweep(
        wrapper, generation_variants or None, prompt_len=min(prompt_len, 8) if quick else prompt_len,
        new_tokens=min(new_tokens, 8) if quick else new_tokens, batch_size=1, repeats=1 if quick else 3,
        paired_rounds=2 if quick else 6, include_compile=include_compile or None)
    from infopt.analyze.decode_floor import add_decode_floors  # the decode floor per variant (docs/metrics.md)
    from infopt.layout import PEAKS_NAME
    from infopt.notebook import device_peaks_once
    gen_sweep = add_decode_floors(gen_sweep, device_peaks_once(wrapper.device, str(out.parent / PEAKS_NAME), quick=quick))
    save_results(gen_sweep, out, model, label, kind="generation_variants", overwrite=overwrite,
                 config={"prompt_len": prompt_len, "new_tokens": new_tokens, "variants": generation_variants})
    display(gen_sweep[["variant", "status", "ttft_ms", "tpot_p50_ms", "tpot_p99_ms", "decode_tokens_per_s",
                       "paired_tpot_speedup", "paired_tpot_speedup_ci_low", "paired_tpot_speedup_ci_high",
                       "paired_ttft_speedup", "first_divergence", "identical_token_share", "prefill_rel_error",
                       "generation_accuracy_ok", "compile_time_s", "tpot_floor_ms", "bandwidth_utilization",
                       "ttft_floor_ms", "floor_note", "error"]])
    plots.show(plots.generation_variants(gen_sweep, title=f"{model} on {label}: TTFT and TPOT per variant"),
               charts, "generation_variants")
    for line in recommend_generation(gen_sweep)["recommendation"]:
        print(line)
else:
    print(f"{model} is not a causal LM (or generation=False): no generation variants.")

# %% [markdown]
# ## Explore (interactive)
# With `interactive=True` (JupyterLab), pick model, device, variant, batch sizes and metric over every result of
# this kind saved under the results folder (this run and the others next to it). Headless runs leave it off.

# %%
if interactive:
    explorer.explore(report.gather(results_dir, kind="variants"), metrics=('speedup_vs_baseline', 'latency_p50_ms', 'throughput_items_per_s', 'rel_error'))
