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
# # Benchmark: latency, throughput and memory vs batch size
#
# One model on one device. Every number is measured here, on this machine, with its uncertainty:
# latency per call comes from the raw per-call samples (warm-up until stable, then sampling until the
# 95% confidence interval of the median is within 1% or the time cap is reached; `converged=False`
# flags points that did not get there: give them more time with `--param max_time_s=...`). `interference=True`
# flags points timed while other processes used the machine (`interference_detail` gives the figure): rerun
# those on a quiet machine. Memory is measured in a separate pass so it never perturbs timing.

# %% tags=["parameters"]
model: str = "resnet50"  # resnet50 | gpt2 | distilbert | torchvision:NAME | hf:FOLDER | py:MODULE:FUNCTION
device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto (a named device is used or refused, never replaced)
size: str = "full"  # full | tiny (tiny: same family, very small, for smoke runs)
quick: bool = False  # True: few timing iterations (smoke runs; numbers are noisier)
output_dir: str = ""  # empty: <results>/interactive/<device>/<model>, one folder shared by hand runs
overwrite: bool = False  # True: replace result files already in output_dir
interactive: bool = False  # True: ipywidgets controls over the saved results (JupyterLab)
data: str = ""  # your data (docs/data.md): described here; the optimize notebook's accuracy guard uses it
batch_sizes: list = [1, 4, 8, 16]  # batch sizes to sweep (each at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
prompt_lengths: list = [32, 128]  # gpt2 only: prompt lengths for the generation sweep
no_cache_prompt_lengths: list = [32]  # gpt2 only: prompts also generated WITHOUT the KV cache (empty list: skip)
new_tokens: int = 16  # gpt2 only: tokens generated per prompt (forced, never stops early)
max_time_s: float = 4.0  # cap in seconds on each timed point (lower: faster, wider confidence intervals)

# %%
import pandas as pd
from IPython.display import display
from infopt import report
from infopt.report import explorer, plots
from infopt.notebook import model_notebook
from infopt.run.params import coerce_namespace
from infopt.results import save_results
from infopt.measure.benchmark import cold_start, run_batch_sweep
from infopt.measure.interference import quality_line
from infopt.measure.timing import TimingConfig

coerce_namespace(globals())  # "-p quick false" arrives as text: typed and checked before the model loads
overwrite = overwrite or not output_dir  # hand runs share one folder per model and replace their files
wrapper, out, charts, label, results_dir = model_notebook(model, device, size, output_dir)
from infopt.data import data_line
print(data_line(data, wrapper))

timing = TimingConfig.quick() if quick else TimingConfig(max_time_s=max_time_s)
text_seq_len = seq_len if wrapper.is_text else None

# %% [markdown]
# ## Cold start
# `load_s` is the time to build the model and move it to the device; `first_call_ms` is the very first
# forward (batch 1), which pays one-off costs (allocator growth, kernel selection) that steady-state latency hides.

# %%
cold = cold_start(model, device, size=size)
display(cold)

# %% [markdown]
# ## Batch sweep
# One row per batch size. `latency_*_ms` are per call (one batch); `throughput_items_per_s` = batch size / mean
# latency; `tokens_per_s` = tokens per batch / mean latency (text models); `model_memory_mb` is the model's own
# footprint = `weight_memory_mb` (weights as stored) + `activation_memory_mb` (the memory pass's increase: activations
# and workspace); `peak_memory_mb` is what `memory_method` sees (CPU: the whole process, interpreter and libraries).

# %%
df = run_batch_sweep(wrapper, batch_sizes, seq_len=text_seq_len, timing=timing)
save_results(df, out, model, label, kind="results", overwrite=overwrite,
             config={"timing": timing.to_dict(), "batch_sizes": batch_sizes, "seq_len": text_seq_len, "size": size,
                     "cold_start": cold, "model_info": wrapper.info(text_seq_len)})
print(quality_line(df))
df.drop(columns=["samples_ms"])

# %% [markdown]
# ### Latency percentiles vs batch size
# Solid line: median (p50) latency per call, with error bars showing the 95% confidence interval of the median;
# dashed p90 and dotted p99 show the tail. A tail far above the median means jitter (other processes, frequency
# changes, allocator work). Latency growing slower than the batch size means batching still pays off.

# %%
plots.show(plots.latency_percentiles(df, title=f"{model} on {label}: latency percentiles"), charts, "latency_percentiles")

# %% [markdown]
# ### Throughput vs batch size
# Samples per second. It rises while larger batches use the hardware better and flattens once the device is
# saturated; the knee is usually the best trade-off between throughput and per-request latency.

# %%
plots.show(plots.throughput(df, title=f"{model} on {label}: throughput"), charts, "throughput")

# %% [markdown]
# ### Latency distribution per batch size
# Every timed call as a box (median line, quartile box, whiskers at 1.5 IQR, outliers as dots). A wide box or many
# outliers means the median alone would hide variability.

# %%
plots.show(plots.latency_distribution(df, title=f"{model} on {label}: latency distribution"), charts, "latency_distribution")

# %% [markdown]
# ## Encoder alone (encoder-decoders)
# The encoder on its inputs only, timed like the batch sweep above (which runs the encoder and a teacher-forced
# decoder): its share of every request, paid once per request before the first token.

# %%
if wrapper.is_encoder_decoder:
    encoder = run_batch_sweep(wrapper.encoder_only(), batch_sizes, seq_len=text_seq_len, timing=timing,
                              measure_memory=False)
    save_results(encoder, out, model, label, kind="encoder_latency", overwrite=overwrite,
                 config={"timing": timing.to_dict(), "batch_sizes": batch_sizes, "seq_len": text_seq_len,
                         "what": "the encoder alone on the encoder's inputs"})
    print(quality_line(encoder))
    display(encoder[["batch_size", "seq_len", "status", "latency_p50_ms", "latency_ci_low_ms", "latency_ci_high_ms",
                     "throughput_items_per_s", "converged", "interference"]])
else:
    print(f"{model} is not an encoder-decoder: no separate encoder timing.")

# %% [markdown]
# ## Generation (causal LMs and encoder-decoders): time to first token and time per output token
# TTFT is the prefill of the whole prompt up to the first generated token; TPOT is the latency of each later decode
# step (timed per step inside `generate`). For an encoder-decoder the prompt is the encoder's input and TTFT
# includes the encoder pass; its decoder starts from the start token. With the KV cache, TPOT stays nearly flat as the prompt grows;
# without it every step recomputes the whole sequence, so TPOT grows with the prompt: the gap is the cache's speedup.
# `tpot_floor_ms` is the physical floor of a decode step (weights as stored + the KV cache read, over the measured
# copy bandwidth) and `bandwidth_utilization` = floor / measured TPOT p50; `ttft_floor_ms` the prefill's compute floor
# (2 x parameters x batch x prompt / measured peak FLOP/s). Definitions in docs/metrics.md.

# %%
if wrapper.is_causal_lm or wrapper.is_encoder_decoder:
    from infopt.analyze.decode_floor import add_decode_floors, add_floor_inputs
    from infopt.measure.benchmark import run_generation_sweep
    from infopt.errors import InvalidInputError
    from infopt.layout import PEAKS_NAME
    from infopt.notebook import device_peaks_once

    repeats = 1 if quick else 3
    gen = run_generation_sweep(wrapper, prompt_lengths=prompt_lengths, new_tokens=new_tokens, use_cache=True,
                               repeats=repeats)
    if no_cache_prompt_lengths:
        gen_nc = run_generation_sweep(wrapper, prompt_lengths=no_cache_prompt_lengths, new_tokens=new_tokens,
                                      use_cache=False, repeats=repeats)
        gen = pd.concat([gen, gen_nc], ignore_index=True)
    # the decode floor: weights as stored + KV cache read per step over the measured bandwidth (shared peaks file)
    try:  # measured once per device and run (the profile notebook reuses the file)
        peaks = device_peaks_once(wrapper.device, str(out.parent / PEAKS_NAME), quick=quick)
    except InvalidInputError as error:  # a hand-run folder holding peaks of another mode: no floor, said so
        peaks = None
        print(f"No decode floor: {error}")
    gen = add_decode_floors(add_floor_inputs(gen, wrapper), peaks)
    save_results(gen, out, model, label, kind="generation", overwrite=overwrite,
                 config={"prompt_lengths": prompt_lengths, "no_cache_prompt_lengths": no_cache_prompt_lengths,
                         "new_tokens": new_tokens, "repeats": repeats})
    display(gen.drop(columns=[c for c in gen.columns if c.endswith("_samples_ms")]))
    plots.show(plots.generation_latency(gen, title=f"{model} on {label}: TTFT and TPOT vs prompt length"),
               charts, "generation_ttft_tpot")
else:
    print(f"{model} is neither a causal language model nor an encoder-decoder: no generation metrics.")

# %% [markdown]
# ## Explore (interactive)
# With `interactive=True` (JupyterLab), pick model, device, variant, batch sizes and metric over every result of
# this kind saved under the results folder (this run and the others next to it). Headless runs leave it off.

# %%
if interactive:
    explorer.explore(report.gather(results_dir, kind="results"))
