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
# # Profile and roofline: where the time of one forward pass goes
#
# `torch.profiler` records a few forward passes (after skipped and warm-up steps) with every submodule's forward
# annotated, so operator and module times come from the same trace. The trace (`trace.json`) opens in
# [Perfetto](https://ui.perfetto.dev) or `chrome://tracing`. Profiled times include the profiler's own cost: use the
# benchmark notebook for latency.

# %% tags=["parameters"]
model: str = "resnet50"  # resnet50 | gpt2 | distilbert | torchvision:NAME | hf:FOLDER | py:MODULE:FUNCTION
device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto (a named device is used or refused, never replaced)
size: str = "full"  # full | tiny (tiny: same family, very small, for smoke runs)
quick: bool = False  # True: few timing iterations (smoke runs; numbers are noisier)
output_dir: str = ""  # empty: <results>/interactive/<device>/<model>, one folder shared by hand runs
overwrite: bool = False  # True: replace result files already in output_dir
interactive: bool = False  # True: ipywidgets controls over the saved results (JupyterLab)
data: str = ""  # your data (docs/data.md): described here; the optimize notebook's accuracy guard uses it
batch_size: int = 8  # batch size to profile (at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
active: int = 3  # profiled steps (after 1 skipped and 2 warm-up steps)
peaks_path: str = ""  # JSON of this device's peaks measured earlier in the run (empty: measure now)
max_time_s: float = 4.0  # cap in seconds on the roofline's whole-model latency (lower: faster, wider interval)

# %%
import pandas as pd
from IPython.display import display
from infopt import report
from infopt.report import explorer, plots
from infopt.notebook import model_notebook
from infopt.run.params import coerce_namespace
from infopt.results import save_results
from infopt.analyze.profiling import profile_model
from infopt.names import safe_name
from infopt.results import save_json

coerce_namespace(globals())  # "-p quick false" arrives as text: typed and checked before the model loads
overwrite = overwrite or not output_dir  # hand runs share one folder per model and replace their files
wrapper, out, charts, label, results_dir = model_notebook(model, device, size, output_dir)
from infopt.data import data_line
print(data_line(data, wrapper))

text_seq_len = seq_len if wrapper.is_text else None

# %%
prof = profile_model(wrapper, batch_size, out, seq_len=text_seq_len, active=active)
save_results(prof.operators, out, model, label, kind="profile_ops", config=prof.config, overwrite=overwrite)
save_results(prof.modules, out, model, label, kind="profile_modules", config=prof.config, overwrite=overwrite)
print(f"Chrome/Perfetto trace: {prof.trace_path}")
for note in prof.notes:
    print("-", note)

# %% [markdown]
# ## Overhead, defined
# On CPU: the wall time of the profiled steps against the time spent inside operators (nested operators counted
# once); the remainder is framework and Python dispatch. On CUDA: the share of wall time the GPU is busy. The
# definition printed with the numbers is the one that produced them.

# %%
overhead = pd.Series({k: v for k, v in prof.overhead.items() if "definition" not in k}, name="value")
for key, text in prof.overhead.items():
    if "definition" in key:
        print(text)
overhead.to_frame()

# %% [markdown]
# ## Operator time breakdown
# The operators with the most **self** time per profiled step (time inside the operator, excluding operators it
# called), so bars add up without counting anything twice. Matrix products and convolutions at the top are expected;
# many small element-wise or copy operators near the top point at fusion opportunities (for example `torch.compile`).

# %%
ops = prof.operators
op_time = "self_device_ms" if "self_device_ms" in ops else "self_cpu_ms"
display(ops.head(15))
plots.show(plots.time_breakdown(ops, name_col="operator", time_col=op_time, time_label=f"{op_time} per step",
                                title=f"{model} on {label}, batch {batch_size}: operators by self time"),
           charts, "operator_breakdown")

# %% [markdown]
# ## Module time breakdown
# Self time of each submodule (its own operators, excluding its children), largest first: this says which layers
# cost the most. The table also has inclusive time (children included) and each module's parent; for an
# encoder-decoder its `stack` column says encoder, decoder or shared, and a second table sums each group.

# %%
mods = prof.modules
mod_time = "self_device_ms" if "self_device_ms" in mods else "self_cpu_ms"
display(mods.sort_values(mod_time, ascending=False).head(15))
if "stack" in mods:  # an encoder-decoder: the encoder's and the decoder's modules as two groups
    from infopt.analyze.profiling import stack_totals

    display(stack_totals(mods))
plots.show(plots.time_breakdown(mods, name_col="module", time_col=mod_time, time_label=f"{mod_time} per step",
                                title=f"{model} on {label}, batch {batch_size}: modules by self time"),
           charts, "module_breakdown")

# %% [markdown]
# ## Stages (detectors)
# A model with stages of its own (a detector: pre-processing `transform`, `backbone`, proposal / prediction heads,
# postprocess) gets one row per stage: the inclusive time of its submodules in the table above, the postprocess
# being the model's time outside every named stage, and the time inside NMS operators (already within the
# stages). Other models have no stages.

# %%
if wrapper.stages:
    from infopt.analyze.stages import STAGE_DEFINITION, stage_table

    stages = stage_table(wrapper.stages, mods, prof.operators)
    save_results(stages, out, model, label, kind="profile_stages", config=prof.config, overwrite=overwrite)
    print(STAGE_DEFINITION)
    display(stages)
else:
    print(f"{model} declares no stages of its own: the module table above is its breakdown.")

# %% [markdown]
# ## Roofline
# Device peaks are measured here (per dtype the best of large matrix products and 3x3 / 1x1 convolutions in both
# memory formats, the winning kernel named in the `note` column; and a large copy) and, where derivable,
# computed from the hardware specification. Each module is a point at its operational intensity (FLOPs per byte of
# **unfused eager** traffic: an upper bound on memory traffic, so intensities are lower bounds) and its achieved
# FLOP/s, sized by its time. The roof is min(peak FLOP/s, bandwidth x intensity); the ridge is where the two meet.
# A point left of the ridge is memory-bound (more bytes per FLOP would not help; fewer bytes would), right of it
# compute-bound. The distance below the roof (`roof_fraction`) is the headroom; no point can honestly sit above
# its roof: one that does says why in `roof_note` (e.g. a convolution that may run a reduced-FLOP Winograd/FFT
# algorithm, with its nominal FLOPs and rate). The largest roof fraction per level is shown below.

# %%
from infopt.notebook import device_peaks_once
from infopt.analyze.peaks import peaks_table
from infopt.analyze.roofline import roofline
from infopt.measure.timing import TimingConfig

peaks = device_peaks_once(wrapper.device, peaks_path, quick=quick)  # measured once per device and run
save_json(peaks, out / f"{safe_name(model)}_{label}_peaks.json", overwrite=overwrite)  # a spec may hold "/"
roof = roofline(wrapper, batch_size, device=wrapper.device, seq_len=text_seq_len, peaks=peaks,
                timing=TimingConfig.quick() if quick else TimingConfig(max_time_s=max_time_s),
                profiled=prof)  # the profile above: its module and operator times, not a second profile
save_results(roof.modules, out, model, label, kind="roofline", config=roof.config, overwrite=overwrite)
save_results(roof.operators, out, model, label, kind="roofline_ops", config=roof.config, overwrite=overwrite)
save_results(pd.DataFrame([roof.whole_model]), out, model, label, kind="roofline_model", config=roof.config,
             overwrite=overwrite)
for note in roof.notes:
    print("-", note)
display(peaks_table(peaks))
display(pd.Series(roof.whole_model, name="whole model").to_frame())
display(roof.largest_roof_fractions())
roof.modules.sort_values("time_ms", ascending=False).head(15)

# %%
plots.show(plots.roofline_result(roof, title=f"{model} on {label}, batch {batch_size}: roofline"),
           charts, "roofline")

# %% [markdown]
# ## Explore (interactive)
# With `interactive=True` (JupyterLab), pick model, device, variant, batch sizes and metric over every result of
# this kind saved under the results folder (this run and the others next to it). Headless runs leave it off.

# %%
if interactive:
    explorer.explore(report.gather(results_dir, kind="roofline_model"), metrics=('roof_fraction', 'achieved_flops_per_s', 'time_ms', 'operational_intensity'))
