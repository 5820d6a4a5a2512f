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
# # Memory: peak versus batch size, a timeline of one forward, and the KV cache
#
# Peak memory is split into weights, activations/workspace and (for generation) KV cache. The method depends on
# the device and is stated in each table: CPU resident memory sampled in the background, CUDA allocator statistics,
# or MPS allocated memory.

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
timeline_batch_size: int = 8  # batch size of the memory timeline
kv_prompt_len: int = 32  # gpt2 only: prompt length before the KV-cache measurement
kv_new_tokens: int = 64  # gpt2 only: tokens generated while the KV cache is measured

# %%
import pandas as pd
from IPython.display import display
from infopt import report
from infopt.report import explorer, plots
from infopt.notebook import model_notebook
from infopt.run.params import coerce_namespace
from infopt.results import save_results
from infopt.analyze import memory as memory_analysis

coerce_namespace(globals())  # "-p quick false" arrives as text: typed and checked before the model loads
overwrite = overwrite or not output_dir  # hand runs share one folder per model and replace their files
wrapper, out, charts, label, results_dir = model_notebook(model, device, size, output_dir)
from infopt.data import data_line
print(data_line(data, wrapper))

text_seq_len = seq_len if wrapper.is_text else None

# %% [markdown]
# ## Memory components vs batch size
# Stacked bars are the components: weights (fixed), KV cache (gpt2, measured on a generation prefill) and
# activations + workspace (the measured peak minus what was resident before the pass, minus the other components),
# which grow with the batch. Hover shows the absolute measured peak (on CPU this includes the Python process and
# torch itself). A missing bar means that batch size ran out of memory or failed (see `status` in the table).

# %%
mem = memory_analysis.memory_vs_batch(wrapper, batch_sizes, seq_len=text_seq_len)
save_results(mem, out, model, label, kind="memory", config={"batch_sizes": batch_sizes, "seq_len": text_seq_len},
             overwrite=overwrite)
display(mem)
plots.show(plots.memory_vs_batch(mem, title=f"{model} on {label}: peak memory vs batch size"),
           charts, "memory_vs_batch")

# %% [markdown]
# ## Memory timeline of one forward pass
# Memory sampled at a fine interval while one forward runs (batch `timeline_batch_size`), drawn as the increase over
# the memory at the start of the pass; gray ticks mark where each module starts (hover for its name). Activations are
# allocated layer by layer and released when no longer needed; the highest point decides whether a batch fits.

# %%
timeline = memory_analysis.memory_timeline(wrapper, timeline_batch_size, seq_len=text_seq_len)
save_results(timeline, out, model, label, kind="memory_timeline", overwrite=overwrite,
             config={"batch_size": timeline_batch_size, "seq_len": text_seq_len, "method": timeline.attrs.get("method"),
                     "module_events": timeline.attrs.get("module_events")})
print("method:", timeline.attrs.get("method"))
plots.show(plots.memory_timeline(timeline, title=f"{model} on {label}: memory during one forward "
                                                         f"(batch {timeline_batch_size})"),
           charts, "memory_timeline")

# %% [markdown]
# ## KV cache (causal LMs and encoder-decoders): measured vs analytic
# The cache holds keys and values for every layer and position: analytic bytes = 2 x layers x batch x sequence x
# hidden x bytes per element. The measured line should sit on the analytic one; a gap means allocator rounding or
# extra buffers. An encoder-decoder shows its decoder's self-attention cache (grows by one position a step) and
# its cross-attention cache (encoder positions, filled once) as separate rows, each against its analytic size.

# %%
if wrapper.is_causal_lm or wrapper.is_encoder_decoder:
    kv = memory_analysis.kv_cache_sweep(wrapper, prompt_len=kv_prompt_len, new_tokens=kv_new_tokens)
    save_results(kv, out, model, label, kind="kv_cache", overwrite=overwrite,
                 config={"prompt_len": kv_prompt_len, "new_tokens": kv_new_tokens,
                         "analytic": memory_analysis.KV_ANALYTIC_DEFINITION})
    display(memory_analysis.kv_cache_split(kv))
    plots.show(plots.kv_cache(kv, title=f"{model} on {label}: KV cache bytes vs sequence length"),
               charts, "kv_cache")
else:
    print(f"{model} is neither a causal language model nor an encoder-decoder: no KV cache.")

# %% [markdown]
# ## Explore (interactive)
# With `interactive=True` (JupyterLab), pick model, device, variant, batch sizes and metric over every result of
# this kind saved under the results folder (this run and the others next to it). Headless runs leave it off.

# %%
if interactive:
    explorer.explore(report.gather(results_dir, kind="memory"), metrics=('peak_memory_mb', 'activation_workspace_mb', 'kv_cache_mb', 'weights_mb'))
