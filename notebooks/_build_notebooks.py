"""Generate the lab's notebooks (``python notebooks/_build_notebooks.py``).

The notebooks are built from this one script so they stay consistent (same
set-up cell, same parameter conventions) and are committed clean (no
outputs). Edit the cells here, re-run the script, commit both.

Conventions: exactly one cell tagged ``parameters`` with typed, commented
literal defaults (``papermill --help-notebook`` shows them); cells are short
(call ``infopt``, show a table, show a chart); a markdown cell before each
chart says what it shows and how to read it. Parameter comments must not
contain "=" (papermill's parser would drop that parameter from --help-notebook).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

MODEL_PARAMETERS = '''\
model: str = "resnet50"  # resnet50 | gpt2 | distilbert
device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto (a named device is used or refused, never replaced)
size: str = "full"  # full | tiny (tiny: same family, very small, for smoke runs)
quick: bool = False  # True: few timing iterations (smoke runs; numbers are noisier)
output_dir: str = ""  # empty: a new ../results/interactive/<timestamp>/<device>/<model> folder
overwrite: bool = False  # True: replace result files already in output_dir
interactive: bool = False  # True: ipywidgets controls over the saved results (JupyterLab)'''

SETUP = '''\
import pandas as pd
from IPython.display import display
from infopt import load_model, plots, report
from infopt.devices import device_kind
from infopt.results import save_results

plots.use_notebook_renderer()  # charts visible in JupyterLab AND in HTML exports, offline
out = report.output_folder(output_dir, model, device)
charts = out / "charts"
wrapper = load_model(model, device=device, size=size)
label = device_kind(wrapper.device)  # cpu | cuda | mps: used in file names
print(f"{wrapper} -> results in {out}")'''


def _md(text: str):
    return new_markdown_cell(text.strip("\n"))


def _code(text: str, tags: list[str] | None = None):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


def _explore(kind: str, metrics: tuple[str, ...] | None = None) -> list:
    """The closing "Explore" section: widgets over every saved result of ``kind`` under the results folder."""
    args = f'report.gather(out.parent.parent.parent, kind="{kind}")' + (f", metrics={metrics!r}" if metrics else "")
    return [
        _md("""
## Explore (interactive)
With `interactive=True` (JupyterLab), pick model, device, variant, batch sizes and metric over every result of
this kind saved under the results folder (this run and the others next to it). Headless runs leave it off.
"""),
        _code(f"if interactive:\n    plots.explore({args})"),
    ]


def _params(extra: str) -> object:
    return _code(MODEL_PARAMETERS + ("\n" + extra.strip("\n") if extra.strip() else ""), tags=["parameters"])


def benchmark() -> list:
    return [
        _md("""
# Benchmark: latency, throughput and memory vs batch size

One model on one device. Every number is measured here, on this machine, with its uncertainty:
latency per call comes from the raw per-call samples (warm-up until stable, then sampling until the
95% confidence interval of the median is within 1% or the time cap is reached; `converged=False`
flags points that did not get there). Memory is measured in a separate pass so it never perturbs timing.
"""),
        _params('''\
batch_sizes: list = [1, 4, 8, 16]  # batch sizes to sweep (each at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
prompt_lengths: list = [32, 128, 512]  # gpt2 only: prompt lengths for the generation sweep
no_cache_prompt_lengths: list = [32, 128]  # gpt2 only: prompts also generated WITHOUT the KV cache (empty list: skip)
new_tokens: int = 32  # gpt2 only: tokens generated per prompt (forced, never stops early)
max_time_s: float = 15.0  # cap in seconds on each timed point (lower: faster, wider confidence intervals)'''),
        _code(SETUP + '''
from infopt.benchmark import cold_start, run_batch_sweep
from infopt.timing import TimingConfig

timing = TimingConfig.quick() if quick else TimingConfig(max_time_s=max_time_s)
text_seq_len = seq_len if wrapper.is_text else None'''),
        _md("""
## Cold start
`load_s` is the time to build the model and move it to the device; `first_call_ms` is the very first
forward (batch 1), which pays one-off costs (allocator growth, kernel selection) that steady-state latency hides.
"""),
        _code('''\
cold = cold_start(model, device, size=size)
display(cold)'''),
        _md("""
## Batch sweep
One row per batch size. `latency_*_ms` are per call (one batch); `throughput_items_per_s` = batch size / mean
latency; `tokens_per_s` = tokens per batch / mean latency (text models); `peak_memory_mb` is the absolute peak
during the memory pass and `activation_memory_mb` its increase over the memory before it (method in `memory_method`).
"""),
        _code('''\
df = run_batch_sweep(wrapper, batch_sizes, seq_len=text_seq_len, timing=timing)
save_results(df, out, model, label, kind="results", overwrite=overwrite,
             config={"timing": timing.to_dict(), "batch_sizes": batch_sizes, "seq_len": text_seq_len, "size": size,
                     "cold_start": cold, "model_info": wrapper.info(text_seq_len)})
df.drop(columns=["samples_ms"])'''),
        _md("""
### Latency percentiles vs batch size
Solid line: median (p50) latency per call, with error bars showing the 95% confidence interval of the median;
dashed p90 and dotted p99 show the tail. A tail far above the median means jitter (other processes, frequency
changes, allocator work). Latency growing slower than the batch size means batching still pays off.
"""),
        _code('plots.show(plots.latency_percentiles(df, title=f"{model} on {label}: latency percentiles"), charts, "latency_percentiles")'),
        _md("""
### Throughput vs batch size
Samples per second. It rises while larger batches use the hardware better and flattens once the device is
saturated; the knee is usually the best trade-off between throughput and per-request latency.
"""),
        _code('plots.show(plots.throughput(df, title=f"{model} on {label}: throughput"), charts, "throughput")'),
        _md("""
### Latency distribution per batch size
Every timed call as a box (median line, quartile box, whiskers at 1.5 IQR, outliers as dots). A wide box or many
outliers means the median alone would hide variability.
"""),
        _code('plots.show(plots.latency_distribution(df, title=f"{model} on {label}: latency distribution"), charts, "latency_distribution")'),
        _md("""
## Generation (gpt2 only): time to first token and time per output token
TTFT is the prefill of the whole prompt up to the first generated token; TPOT is the latency of each later decode
step (timed per step inside `generate`). With the KV cache, TPOT stays nearly flat as the prompt grows;
without it every step recomputes the whole sequence, so TPOT grows with the prompt: the gap is the cache's speedup.
"""),
        _code('''\
if wrapper.is_causal_lm:
    from infopt.benchmark import run_generation_sweep

    repeats = 1 if quick else 3
    gen = run_generation_sweep(wrapper, prompt_lengths=prompt_lengths, new_tokens=new_tokens, use_cache=True,
                               repeats=repeats)
    if no_cache_prompt_lengths:
        gen_nc = run_generation_sweep(wrapper, prompt_lengths=no_cache_prompt_lengths, new_tokens=new_tokens,
                                      use_cache=False, repeats=repeats)
        gen = pd.concat([gen, gen_nc], ignore_index=True)
    save_results(gen, out, model, label, kind="generation", overwrite=overwrite,
                 config={"prompt_lengths": prompt_lengths, "no_cache_prompt_lengths": no_cache_prompt_lengths,
                         "new_tokens": new_tokens, "repeats": repeats})
    display(gen.drop(columns=[c for c in gen.columns if c.endswith("_samples_ms")]))
    plots.show(plots.generation_latency(gen, title=f"{model} on {label}: TTFT and TPOT vs prompt length"),
               charts, "generation_ttft_tpot")
else:
    print(f"{model} is not a causal language model: no generation metrics.")'''),
        *_explore("results"),
    ]


def profile() -> list:
    return [
        _md("""
# Profile and roofline: where the time of one forward pass goes

`torch.profiler` records a few forward passes (after skipped and warm-up steps) with every submodule's forward
annotated, so operator and module times come from the same trace. The trace (`trace.json`) opens in
[Perfetto](https://ui.perfetto.dev) or `chrome://tracing`. Profiled times include the profiler's own cost: use the
benchmark notebook for latency.
"""),
        _params('''\
batch_size: int = 8  # batch size to profile (at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
active: int = 3  # profiled steps (after 1 skipped and 2 warm-up steps)
peaks_path: str = ""  # JSON of this device's peaks measured earlier in the run (empty: measure now)'''),
        _code(SETUP + '''
from infopt.profiling import profile_model
from infopt.results import save_json

text_seq_len = seq_len if wrapper.is_text else None'''),
        _code('''\
prof = profile_model(wrapper, batch_size, out, seq_len=text_seq_len, active=active)
save_results(prof.operators, out, model, label, kind="profile_ops", config=prof.config, overwrite=overwrite)
save_results(prof.modules, out, model, label, kind="profile_modules", config=prof.config, overwrite=overwrite)
print(f"Chrome/Perfetto trace: {prof.trace_path}")
for note in prof.notes:
    print("-", note)'''),
        _md("""
## Overhead, defined
On CPU: the wall time of the profiled steps against the time spent inside operators (nested operators counted
once); the remainder is framework and Python dispatch. On CUDA: the share of wall time the GPU is busy. The
definition printed with the numbers is the one that produced them.
"""),
        _code('''\
overhead = pd.Series({k: v for k, v in prof.overhead.items() if "definition" not in k}, name="value")
for key, text in prof.overhead.items():
    if "definition" in key:
        print(text)
overhead.to_frame()'''),
        _md("""
## Operator time breakdown
The operators with the most **self** time per profiled step (time inside the operator, excluding operators it
called), so bars add up without counting anything twice. Matrix products and convolutions at the top are expected;
many small element-wise or copy operators near the top point at fusion opportunities (for example `torch.compile`).
"""),
        _code('''\
ops = prof.operators
op_time = "self_device_ms" if "self_device_ms" in ops else "self_cpu_ms"
display(ops.head(15))
plots.show(plots.time_breakdown(ops, name_col="operator", time_col=op_time, time_label=f"{op_time} per step",
                                title=f"{model} on {label}, batch {batch_size}: operators by self time"),
           charts, "operator_breakdown")'''),
        _md("""
## Module time breakdown
Self time of each submodule (its own operators, excluding its children), largest first: this says which layers
cost the most. The table also has inclusive time (children included) and each module's parent.
"""),
        _code('''\
mods = prof.modules
mod_time = "self_device_ms" if "self_device_ms" in mods else "self_cpu_ms"
display(mods.sort_values(mod_time, ascending=False).head(15))
plots.show(plots.time_breakdown(mods, name_col="module", time_col=mod_time, time_label=f"{mod_time} per step",
                                title=f"{model} on {label}, batch {batch_size}: modules by self time"),
           charts, "module_breakdown")'''),
        _md("""
## Roofline
Device peaks are measured here (a large matrix product per dtype and a large copy) and, where derivable,
computed from the hardware specification. Each module is a point at its operational intensity (FLOPs per byte of
**unfused eager** traffic: an upper bound on memory traffic, so intensities are lower bounds) and its achieved
FLOP/s, sized by its time. The roof is min(peak FLOP/s, bandwidth x intensity); the ridge is where the two meet.
A point left of the ridge is memory-bound (more bytes per FLOP would not help; fewer bytes would), right of it
compute-bound. The distance below the roof (`roof_fraction`) is the headroom; no point can honestly sit above
its roof.
"""),
        _code('''\
from infopt.peaks import peaks_table
from infopt.roofline import roofline
from infopt.timing import TimingConfig

peaks = report.device_peaks_once(wrapper.device, peaks_path, quick=quick)  # measured once per device and run
save_json(peaks, out / f"{model}_{label}_peaks.json", overwrite=overwrite)
roof = roofline(wrapper, batch_size, device=wrapper.device, seq_len=text_seq_len, peaks=peaks,
                timing=TimingConfig.quick() if quick else None)
save_results(roof.modules, out, model, label, kind="roofline", config=roof.config, overwrite=overwrite)
save_results(roof.operators, out, model, label, kind="roofline_ops", config=roof.config, overwrite=overwrite)
save_results(pd.DataFrame([roof.whole_model]), out, model, label, kind="roofline_model", config=roof.config,
             overwrite=overwrite)
for note in roof.notes:
    print("-", note)
display(peaks_table(peaks))
display(pd.Series(roof.whole_model, name="whole model").to_frame())
roof.modules.sort_values("time_ms", ascending=False).head(15)'''),
        _code('''\
plots.show(plots.roofline_result(roof, title=f"{model} on {label}, batch {batch_size}: roofline"),
           charts, "roofline")'''),
        *_explore("roofline_model", ("roof_fraction", "achieved_flops_per_s", "time_ms", "operational_intensity")),
    ]


def memory() -> list:
    return [
        _md("""
# Memory: peak versus batch size, a timeline of one forward, and the KV cache

Peak memory is split into weights, activations/workspace and (for generation) KV cache. The method depends on
the device and is stated in each table: CPU resident memory sampled in the background, CUDA allocator statistics,
or MPS allocated memory.
"""),
        _params('''\
batch_sizes: list = [1, 4, 8, 16]  # batch sizes to sweep (each at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
timeline_batch_size: int = 8  # batch size of the memory timeline
kv_prompt_len: int = 32  # gpt2 only: prompt length before the KV-cache measurement
kv_new_tokens: int = 64  # gpt2 only: tokens generated while the KV cache is measured'''),
        _code(SETUP + '''
from infopt import memory as memory_analysis

text_seq_len = seq_len if wrapper.is_text else None'''),
        _md("""
## Memory components vs batch size
Stacked bars are the components: weights (fixed), KV cache (gpt2, measured on a generation prefill) and
activations + workspace (the measured peak minus what was resident before the pass, minus the other components),
which grow with the batch. Hover shows the absolute measured peak (on CPU this includes the Python process and
torch itself). A missing bar means that batch size ran out of memory or failed (see `status` in the table).
"""),
        _code('''\
mem = memory_analysis.memory_vs_batch(wrapper, batch_sizes, seq_len=text_seq_len)
save_results(mem, out, model, label, kind="memory", config={"batch_sizes": batch_sizes, "seq_len": text_seq_len},
             overwrite=overwrite)
display(mem)
plots.show(plots.memory_vs_batch(mem, title=f"{model} on {label}: peak memory vs batch size"),
           charts, "memory_vs_batch")'''),
        _md("""
## Memory timeline of one forward pass
Memory sampled at a fine interval while one forward runs (batch `timeline_batch_size`), drawn as the increase over
the memory at the start of the pass; gray ticks mark where each module starts (hover for its name). Activations are
allocated layer by layer and released when no longer needed; the highest point decides whether a batch fits.
"""),
        _code('''\
timeline = memory_analysis.memory_timeline(wrapper, timeline_batch_size, seq_len=text_seq_len)
save_results(timeline, out, model, label, kind="memory_timeline", overwrite=overwrite,
             config={"batch_size": timeline_batch_size, "seq_len": text_seq_len, "method": timeline.attrs.get("method"),
                     "module_events": timeline.attrs.get("module_events")})
print("method:", timeline.attrs.get("method"))
plots.show(plots.memory_timeline(timeline, title=f"{model} on {label}: memory during one forward "
                                                         f"(batch {timeline_batch_size})"),
           charts, "memory_timeline")'''),
        _md("""
## KV cache (gpt2 only): measured vs analytic
The cache holds keys and values for every layer and position: analytic bytes = 2 x layers x batch x sequence x
hidden x bytes per element. The measured line should sit on the analytic one; a gap means allocator rounding or
extra buffers.
"""),
        _code('''\
if wrapper.is_causal_lm:
    kv = memory_analysis.kv_cache_sweep(wrapper, prompt_len=kv_prompt_len, new_tokens=kv_new_tokens)
    save_results(kv, out, model, label, kind="kv_cache", overwrite=overwrite,
                 config={"prompt_len": kv_prompt_len, "new_tokens": kv_new_tokens,
                         "analytic": memory_analysis.KV_ANALYTIC_DEFINITION})
    display(kv)
    plots.show(plots.kv_cache(kv, title=f"{model} on {label}: KV cache bytes vs sequence length"),
               charts, "kv_cache")
else:
    print(f"{model} does not generate: no KV cache.")'''),
        *_explore("memory", ("peak_memory_mb", "activation_workspace_mb", "kv_cache_mb", "weights_mb")),
    ]


def optimize() -> list:
    return [
        _md("""
# Optimize: the fastest variant that keeps the answers right

Each variant (layout, reduced precision, quantization, compilation, attention implementation, and compositions
with `+`) is timed like the benchmark and its outputs on the same seeded inputs are compared with eager fp32.
`speedup_vs_baseline` = eager-fp32 median latency / variant median latency (same batch size), with a 95% interval
from the two medians' intervals. A variant outside the accuracy tolerance is marked `accuracy_ok=False` and never
recommended; one that does not apply is `n/a` with the reason; one that fails is `error` with the message.
"""),
        _params('''\
batch_sizes: list = [1, 8]  # batch sizes to compare variants at (each at least 1)
seq_len: int = 128  # tokens per sample for text models (ignored by resnet50)
variants: list = []  # variant specs such as "bf16+channels-last"; empty list: the default set
include_compile: bool = True  # False: skip torch.compile variants (they take minutes to compile on CPU)
max_time_s: float = 15.0  # cap in seconds on each timed point (lower: faster, wider confidence intervals)'''),
        _code(SETUP + '''
from infopt.timing import TimingConfig
from infopt.variants import SPEEDUP_DEFINITION, describe_variants, recommend, run_variant_sweep

timing = TimingConfig.quick() if quick else TimingConfig(max_time_s=max_time_s)
text_seq_len = seq_len if wrapper.is_text else None
describe_variants()'''),
        _md("""
## Speedup table
One row per variant and batch size. `status` says whether it ran; the accuracy columns say what it cost
(`rel_error` = norm of the difference / norm of the reference; `cosine_similarity` is the worst row's;
`accuracy_metric` and `tolerance` state the test applied).
"""),
        _code('''\
sweep = run_variant_sweep(wrapper, variants or None, batch_sizes, seq_len=text_seq_len, timing=timing,
                          include_compile=include_compile)
save_results(sweep, out, model, label, kind="variants", overwrite=overwrite,
             config={"timing": timing.to_dict(), "batch_sizes": batch_sizes, "seq_len": text_seq_len,
                     "variants": variants, "include_compile": include_compile})
print(SPEEDUP_DEFINITION)
columns = ["variant", "batch_size", "status", "latency_p50_ms", "speedup_vs_baseline", "speedup_ci_low",
           "speedup_ci_high", "accuracy_ok", "rel_error", "cosine_similarity", "compile_time_s", "error"]
sweep[[c for c in columns if c in sweep]]'''),
        _md("""
## Speedup vs accuracy error
Each point is a variant at one batch size: up is faster (above the dotted line beats eager fp32), right is less
accurate (relative error against eager fp32, log scale; exact results sit at the far left). Crosses failed the
accuracy guard. The best choice is the highest circle.
"""),
        _code('''\
plots.show(plots.speedup_vs_accuracy(sweep, title=f"{model} on {label}: speedup vs accuracy error"),
           charts, "speedup_vs_accuracy")'''),
        _md("""
## Recommendation
Per batch size: the fastest variant with `status="ok"` that passes the accuracy guard, and by how much.
When the speedup interval includes 1x, the gain is within measurement noise.
"""),
        _code('''\
recommendations = recommend(sweep)
for line in recommendations["recommendation"]:
    print(line)
recommendations'''),
        *_explore("variants", ("speedup_vs_baseline", "latency_p50_ms", "throughput_items_per_s", "rel_error")),
    ]


REPORT_SETUP = """\
import pandas as pd
from IPython.display import display
from infopt import plots, report

plots.use_notebook_renderer()  # charts visible in JupyterLab AND in HTML exports, offline
charts = report.report_folder(output_dir) / "charts"
pd.set_option("display.max_columns", 40)
results = report.gather(results_dir, kind="results")
print(f"Report{' for run ' + run_name if run_name else ''}: {results_dir} holds {len(report.runs(results_dir))} "
      f"run manifest(s) and {len(results)} benchmark row(s).")"""


def report_notebook() -> list:
    return [
        _md("""
# Report: every run under a results folder, side by side

Reads every run below `results_dir` (runs from `run_notebooks.py`, notebooks run by hand, and runs copied
from other machines), so models, devices, hosts, variants and runs can be compared. Each row and line is
labelled with its run (folder) and host. Numbers are the ones the notebooks measured; nothing is re-measured here.
"""),
        _code('''\
results_dir: str = "../results"  # folder holding one or more runs (copy runs from other machines here)
output_dir: str = ""  # where report charts go; empty: a new ../results/reports/<timestamp> folder
run_name: str = ""  # the run this report was produced for (shown in the title; all runs are read)
interactive: bool = False  # True: ipywidgets controls over the gathered results (JupyterLab)''', tags=["parameters"]),
        _code(REPORT_SETUP),
        _md("""
## Runs
One row per run manifest (`run.json`): when it started, the device, whether every notebook succeeded, and the
exact command. `notebooks_failed` counts failed or interrupted notebooks (see the status table below).
"""),
        _code("report.runs(results_dir)"),
        _md("""
## Environments
The machine and software each run measured on. Compare these before comparing numbers: a different CPU model,
thread count, or torch version changes latency as much as any optimization.
"""),
        _code("report.environments(results_dir)"),
        _md("""
## Notebook status
Every executed notebook, its status and duration. A failed notebook's executed copy (with the error) sits at the
`html` path relative to its run folder.
"""),
        _code("report.notebook_status(results_dir)"),
        _md("""
## Latency: median per call vs batch size
One line per (run, host, device, model, variant) that differs between series. Lower is better. Compare lines of
the same model: the vertical gap between two devices or runs at a batch size is the latency difference.
"""),
        _code('''\
plots.show(plots.compare(results, "batch_size", "latency_p50_ms", title="Median latency per call vs batch size",
                         x_label="batch size", y_label="p50 latency per call (ms)", log_y=True),
           charts, "compare_latency_p50")
if not results.empty:
    display(results.pivot_table(index=["model", "batch_size"], columns=["run", "device", "variant"],
                                values="latency_p50_ms"))'''),
        _md("""
## Throughput vs batch size
Samples per second (batch size / mean latency). Higher is better; where a line flattens the device is saturated.
"""),
        _code('''\
plots.show(plots.compare(results, "batch_size", "throughput_items_per_s", title="Throughput vs batch size",
                         x_label="batch size", y_label="samples/s", log_y=True), charts, "compare_throughput")'''),
        _md("""
## Peak memory vs batch size
Absolute peak memory during the memory pass of the benchmark (the method is per row in `memory_method`: CPU
resident memory, CUDA allocator peak, or MPS allocated memory, so compare like with like).
"""),
        _code('''\
plots.show(plots.compare(results, "batch_size", "peak_memory_mb", title="Peak memory vs batch size",
                         x_label="batch size", y_label="peak memory (MB)"), charts, "compare_peak_memory")'''),
        _md("""
## Generation (gpt2): time to first token and time per output token
TTFT grows with the prompt (prefill); TPOT with the KV cache should stay nearly flat. Lines per run and device.
"""),
        _code('''\
generation = report.gather(results_dir, kind="generation")
if generation.empty:
    print("No generation results under this folder.")
else:
    generation = generation.assign(variant=generation["variant"] + generation["use_cache"].map({True: " +kv-cache", False: " no-cache"}))
    plots.show(plots.compare(generation, "prompt_len", "ttft_ms", title="Time to first token vs prompt length",
                             x_label="prompt length (tokens)", y_label="TTFT (ms)", log_y=True), charts, "compare_ttft")
    plots.show(plots.compare(generation, "prompt_len", "tpot_p50_ms", title="Median time per output token vs prompt length",
                             x_label="prompt length (tokens)", y_label="TPOT p50 (ms)", log_y=True), charts, "compare_tpot")'''),
        _md("""
## Roofline summary
Whole-model point per run, model and device: achieved FLOP/s over the roof at the model's operational intensity
(`roof_fraction`, 1.0 means at the roof). A low fraction means time is lost to overheads or unfused memory traffic.
"""),
        _code('''\
roofline = report.gather(results_dir, kind="roofline_model")
if roofline.empty:
    print("No roofline results under this folder.")
else:
    columns = ["run", "host", "model", "device", "batch_size", "flops_per_sample", "operational_intensity",
               "time_ms", "achieved_flops_per_s", "roof_flops_per_s", "roof_fraction", "bound", "peak_source"]
    display(roofline[[c for c in columns if c in roofline]])'''),
        _md("""
## Optimization variants and recommendations
Per run, model, device and batch size: the fastest variant that passes the accuracy guard and its speedup over
eager fp32 (ratio of medians, with a confidence interval). Variants that fail the guard are never recommended.
"""),
        _code('''\
variants = report.gather(results_dir, kind="variants")
if variants.empty:
    print("No variant results under this folder.")
else:
    display(report.recommendations(variants))
    plots.show(plots.speedup_vs_accuracy(variants, title="Speedup vs accuracy error, every run and model"),
               charts, "compare_variants")'''),
        _md("""
## Explore (interactive)
With `interactive=True` (JupyterLab): pick model, device, variant, batch sizes and metric over every benchmark row.
"""),
        _code('''\
if interactive:
    plots.explore(results)'''),
    ]


def main() -> None:
    notebooks = {"benchmark": benchmark(), "profile": profile(), "memory": memory(), "optimize": optimize(),
                 "report": report_notebook()}
    for name, cells in notebooks.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        for index, cell in enumerate(nb.cells):
            cell.id = f"{name}-{index:02d}"
        nbformat.validate(nb)
        nbformat.write(nb, str(HERE / f"{name}.ipynb"))
        print(f"wrote {HERE / f'{name}.ipynb'} ({len(cells)} cells)")


if __name__ == "__main__":
    main()
