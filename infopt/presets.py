"""The run sizes, defined once: library defaults, the quick and full presets, and the CPU caps.

The runner builds every notebook's parameters from a :class:`Preset`
(:meth:`Preset.notebook_parameters`), the notebooks' literal defaults equal
the ``full-cpu`` preset, their default device being the CPU (tests/test_runner.py
checks it), and ``run.json`` records
the preset's name and values. Library functions take their defaults from the
constants below, so a number such as the 15 s timing cap is written once.

Why these sizes: ``full`` is what a GPU or a patient CPU user measures;
``full-cpu`` caps the time per timed point and races the variants (compiled
ones included) in a budget: the default three-model CPU run takes about 24 minutes on 2 cores (measured
figures per notebook: :mod:`infopt.run.estimate`); ``quick`` uses tiny models and a handful of iterations to
smoke-test the whole pipeline in about 90 s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

#: Cap (seconds) on each timed point unless told otherwise (``TimingConfig.max_time_s``).
DEFAULT_MAX_TIME_S: float = 15.0
#: Batch sizes a sweep covers unless told otherwise.
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 4, 8, 16)
#: Tokens per sample for text models unless told otherwise.
DEFAULT_SEQ_LEN: int = 128
#: Largest batch size the single-batch notebooks (profile, memory timeline) pick from the sweep.
SINGLE_BATCH_LIMIT: int = 8

#: Caps (seconds) on each timed point of a full CPU run (benchmark and the profile's roofline latency; variants).
CPU_BENCHMARK_MAX_TIME_S: float = 4.0
CPU_VARIANT_MAX_TIME_S: float = 3.0
#: Seconds of timed race rounds per model and target in the optimize notebook's racing search (compilation and
#: accuracy checks not included): a GPU's calls are short, a CPU's long; quick runs only smoke-test the race.
OPTIMIZE_BUDGET_S: float = 90.0
CPU_OPTIMIZE_BUDGET_S: float = 60.0
QUICK_OPTIMIZE_BUDGET_S: float = 1.5

#: The per-model notebooks, in run order, and the report that closes every run.
MODEL_NOTEBOOKS: tuple[str, ...] = ("benchmark", "profile", "memory", "optimize", "serve")
REPORT_NOTEBOOK = "report"


@dataclass(frozen=True)
class Preset:
    """Every size a run chooses, typed; notebook parameters are derived from it."""

    name: str
    size: str                                  # model size: "full" | "tiny"
    quick: bool                                # few timing iterations (TimingConfig.quick())
    batch_sizes: tuple[int, ...]               # benchmark and memory sweeps
    optimize_batch_sizes: tuple[int, ...]      # variant comparison
    seq_len: int                               # tokens per sample (text models)
    prompt_lengths: tuple[int, ...]            # generation sweep with the KV cache (gpt2)
    no_cache_prompt_lengths: tuple[int, ...]   # generation sweep without the KV cache
    new_tokens: int                            # tokens generated per prompt
    benchmark_max_time_s: float                # cap per timed benchmark point (not passed when quick)
    variant_max_time_s: float                  # cap per timed variant point (not passed when quick)
    profile_active: int                        # profiled steps
    kv_prompt_len: int                         # prompt before the KV-cache measurement
    kv_new_tokens: int                         # tokens generated while the KV cache is measured
    include_compile: bool                      # torch.compile variants (minutes each on a CPU)
    variants: tuple[str, ...] = ()             # variant specs; empty: the default set
    generation_variants: tuple[str, ...] = ()  # generation variant specs (causal LMs); empty: the default set
    # serve notebook (docs/serving.md): seconds per LoadGen test, minimum queries per test (raised to what
    # early stopping needs when LoadGen's VALID is required: `serve_strict`), bisection steps, the batcher grid
    # and its budget per variant
    serve_bound_ms: float = 10.0  # the latency bound on the percentile: 10 ms on an accelerator, 100 ms on a CPU
    serve_budget_s: float = 5.0
    serve_min_queries: int = 64
    serve_bisection_steps: int = 4
    serve_strict: bool = True
    serve_grid_budget_s: float = 180.0
    serve_max_batches: tuple[int, ...] = (1, 4, 8, 16)
    serve_max_waits_ms: tuple[float, ...] = (1.0, 5.0, 20.0)
    search: str = "racing"                     # optimize: racing | exhaustive
    optimize_budget_s: float = OPTIMIZE_BUDGET_S  # optimize: seconds of race rounds per model and target

    def with_batch_sizes(self, batch_sizes) -> "Preset":
        """The same preset sweeping the user's batch sizes (``--batch-sizes``) everywhere."""
        sizes = tuple(int(b) for b in batch_sizes)
        return replace(self, batch_sizes=sizes, optimize_batch_sizes=sizes)

    def single_batch(self) -> int:
        """The batch size of single-batch notebooks: the largest swept size up to 8, else the smallest."""
        return max([b for b in self.batch_sizes if b <= SINGLE_BATCH_LIMIT] or [min(self.batch_sizes)])

    def notebook_parameters(self, notebook: str) -> dict:
        """The size parameters of one notebook (model, device and folders are the runner's)."""
        common = {"size": self.size, "quick": self.quick, "seq_len": self.seq_len}
        # quick timing (TimingConfig.quick()) has its own cap: a max_time_s would be recorded but ignored
        cap = {} if self.quick else {"max_time_s": self.benchmark_max_time_s}
        if notebook == "benchmark":
            return {**common, "batch_sizes": list(self.batch_sizes), "prompt_lengths": list(self.prompt_lengths),
                    "no_cache_prompt_lengths": list(self.no_cache_prompt_lengths), "new_tokens": self.new_tokens,
                    **cap}
        if notebook == "profile":
            return {**common, "batch_size": self.single_batch(), "active": self.profile_active, **cap}
        if notebook == "memory":
            return {**common, "batch_sizes": list(self.batch_sizes), "timeline_batch_size": self.single_batch(),
                    "kv_prompt_len": self.kv_prompt_len, "kv_new_tokens": self.kv_new_tokens}
        if notebook == "optimize":
            return {**common, "batch_sizes": list(self.optimize_batch_sizes), "variants": list(self.variants),
                    "generation_variants": list(self.generation_variants),
                    "include_compile": self.include_compile, "search": self.search, "new_tokens": self.new_tokens,
                    "optimize_budget_s": self.optimize_budget_s,
                    **({} if self.quick else {"max_time_s": self.variant_max_time_s})}
        if notebook == "serve":
            return {"size": self.size, "quick": self.quick, "seq_len": self.seq_len,
                    "latency_bound_ms": self.serve_bound_ms, "scenario_budget_s": self.serve_budget_s, "min_queries": self.serve_min_queries,
                    "bisection_steps": self.serve_bisection_steps, "strict_validity": self.serve_strict,
                    "grid_budget_s": self.serve_grid_budget_s, "max_batch_sizes": list(self.serve_max_batches),
                    "max_waits_ms": list(self.serve_max_waits_ms)}
        if notebook == REPORT_NOTEBOOK:
            return {}
        raise KeyError(notebook)

    def to_dict(self) -> dict:
        """Plain JSON values, as recorded in ``run.json``."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


FULL = Preset(
    name="full", size="full", quick=False, batch_sizes=DEFAULT_BATCH_SIZES, optimize_batch_sizes=(1, 8),
    seq_len=DEFAULT_SEQ_LEN, prompt_lengths=(32, 128, 512), no_cache_prompt_lengths=(32, 128), new_tokens=32,
    benchmark_max_time_s=DEFAULT_MAX_TIME_S, variant_max_time_s=DEFAULT_MAX_TIME_S, profile_active=3,
    kv_prompt_len=32, kv_new_tokens=64, include_compile=True,
)

#: ``full`` with the CPU caps, sized to keep the default three-model CPU run short on 2 cores (about 24 min):
#: shorter timed points, two prompt lengths of 16 new tokens and one no-cache length (every step recomputes the
#: prompt, one length shows it), the racing search in a shorter budget (compiled paths included), two generation
#: variants instead of the full set (each costs tens of seconds of generate calls on a CPU; the full set:
#: ``--param generation_variants=[]``), three bisection steps and a 20 s batcher-grid budget per served variant
#: (a strict p99 Server test needs 459 queries, up to a minute at a CPU's rates; ``--param grid_budget_s=180``
#: for more).
FULL_CPU = replace(
    FULL, name="full-cpu", benchmark_max_time_s=CPU_BENCHMARK_MAX_TIME_S, variant_max_time_s=CPU_VARIANT_MAX_TIME_S,
    prompt_lengths=(32, 128), no_cache_prompt_lengths=(32,), new_tokens=16, include_compile=True,
    optimize_budget_s=CPU_OPTIMIZE_BUDGET_S, generation_variants=("bf16-weights+static-cache", "torchao-int8-dynamic"),
    serve_bound_ms=100.0, serve_bisection_steps=3, serve_grid_budget_s=20.0,
)

#: Tiny models and few iterations: a smoke run of the whole pipeline, numbers not for reporting. A few
#: representative variants: the pipeline, not the search, is what --quick checks.
QUICK = replace(
    FULL, name="quick", size="tiny", quick=True, batch_sizes=(1, 2, 4), optimize_batch_sizes=(4,), seq_len=32,
    prompt_lengths=(8, 32), no_cache_prompt_lengths=(8,), new_tokens=8, profile_active=1, kv_prompt_len=8,
    kv_new_tokens=8, include_compile=False, optimize_budget_s=QUICK_OPTIMIZE_BUDGET_S,
    variants=("channels-last", "bf16", "int8-dynamic", "torchao-int8-dynamic", "onnxruntime",
              "onnxruntime-int8-static"),
    generation_variants=("static-cache", "bf16-weights", "torchao-int8-weight-only"),
    # serve: a fraction of a second per LoadGen test, one batcher setting, one bisection step, LoadGen's
    # latency constraint without early stopping (which needs ~459 queries for a p99): the pipeline, not a figure
    serve_bound_ms=100.0, serve_budget_s=0.25, serve_min_queries=8, serve_bisection_steps=1, serve_strict=False, serve_grid_budget_s=1.0,
    serve_max_batches=(4,), serve_max_waits_ms=(1.0,),
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (FULL, FULL_CPU, QUICK)}


def preset_for(quick: bool, device_kind: str) -> Preset:
    """The preset a run uses: ``quick``, else ``full-cpu`` on a CPU, else ``full``."""
    if quick:
        return QUICK
    return FULL_CPU if device_kind == "cpu" else FULL


__all__ = ["CPU_BENCHMARK_MAX_TIME_S", "CPU_OPTIMIZE_BUDGET_S", "CPU_VARIANT_MAX_TIME_S", "DEFAULT_BATCH_SIZES",
           "DEFAULT_MAX_TIME_S", "DEFAULT_SEQ_LEN", "FULL", "FULL_CPU", "MODEL_NOTEBOOKS", "OPTIMIZE_BUDGET_S",
           "PRESETS", "Preset", "QUICK", "QUICK_OPTIMIZE_BUDGET_S", "REPORT_NOTEBOOK", "SINGLE_BATCH_LIMIT",
           "preset_for"]
