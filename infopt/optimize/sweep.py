"""The variant sweep: measured speedups, each next to the accuracy it costs.

A *variant* is a named transformation of a loaded model (and of its inputs):
``channels-last``, ``bf16``, ``int8-dynamic``, ``compile`` ... Each declares
the tasks and device kinds it applies to; variants compose with ``+``
(``bf16+channels-last+compile``). :func:`apply_variant` transforms a *copy*, so
the baseline model is never touched, and returns a :class:`VariantModel` that
the benchmark, profiler and accuracy guard use exactly like a model wrapper.

:func:`run_variant_sweep` times every variant with
:func:`infopt.measure.benchmark.benchmark_point` (same columns as a batch sweep),
compares its output with the fp32 eager reference on the same seeded inputs
(:mod:`infopt.optimize.accuracy`), then measures its speedup paired with the baseline.
:func:`recommend` picks, per model, device and batch size, the fastest variant
that passes the guard and whose speedup is measured and significant.

Definitions:

* ``paired_speedup`` (the headline; ``paired_rounds`` rounds, default
  :data:`PAIRED_ROUNDS`): baseline and variant are timed in alternating blocks
  (A B, B A, A B, ...), each round gives ``baseline median / variant median``,
  and the column is the median of the rounds with the order-statistic 95% CI
  of that median (needs 6 rounds or more). Load that comes and goes on a
  shared machine hits both sides of a round alike, so this figure survives
  drift that distorts the unpaired ratio. Trade-off: the rounds take
  :data:`PAIRED_SHARE` of each point's time cap, so the unpaired columns get
  fewer samples (wider CIs) and a default run takes about as long as before;
  calls too slow for that get fewer rounds (at least :data:`MIN_PAIRED_ROUNDS`)
  and still cost a few calls more than the share.
* ``speedup_vs_baseline = baseline median latency / variant median latency``
  (ratio of two medians timed at different moments; secondary). Its 95%
  interval is the conservative ratio of the two medians' 95% CIs:
  ``[baseline ci_low / variant ci_high, baseline ci_high / variant ci_low]``.
* ``speedup_verdict``: of the headline speedup, ``faster`` / ``slower`` when
  its 95% CI lies above / below 1, ``no significant difference`` when the CI
  contains 1, ``too few samples`` when there is no CI.
* ``interference``: other processes used the machine while the row was timed
  (unpaired or paired window; :mod:`infopt.measure.interference`). Flagged rows are
  never recommended.
* ``transform_time_s``: wall time of the transformations (casts,
  quantization, wrapping; not the copy), once per variant.
* ``compile_time_s``: wall time of the calls, at that batch size, during
  which ``torch.compile`` compiled (dynamo frame counter moved); compiled
  variants are called until compilation stops before they are timed. Empty for
  variants that do not compile.
"""


from __future__ import annotations

import gc
from typing import Iterable

import pandas as pd
import torch

from infopt.errors import InvalidInputError
from infopt.measure.benchmark import BENCHMARK_COLUMNS, benchmark_point, empty_row
from infopt.measure.interference import Interference, combine
from infopt.measure.memtrack import release_memory
from infopt.measure.sweep import Point, check_batch_sizes, run_points
from infopt.measure.timing import TimingConfig, describe_failure, recorded_failure
from infopt.models.base import ModelWrapper
from infopt.optimize.accuracy import compare_outputs, tolerance_for
from infopt.optimize.applied import VariantModel, apply_variant
from infopt.optimize.compiled import warm_up_compiled
from infopt.optimize.paired import PAIRED_COLUMNS, PAIRED_ROUNDS, paired_speedup, unpaired_timing
from infopt.optimize.recommend import add_verdicts
from infopt.optimize.registry import (BASELINE, VARIANTS, VariantError, VariantNotApplicableError, canonical_spec,
                                      parse_spec, unavailable_reason)

#: Compositions worth measuring by default (kept only where every part applies).
#: Compiled ones are few on purpose: each costs minutes of compilation per batch size on a CPU.
DEFAULT_COMBINATIONS = (
    "bf16+channels-last", "bf16-weights+channels-last", "fp16+channels-last", "fp16-weights+channels-last",
    "bf16+compile", "bf16+channels-last+compile", "fp16+compile", "fp16+channels-last+compile",
    "bf16-weights+compile-freezing", "bf16-weights+channels-last+compile-freezing",
    "torchao-int8-dynamic+compile-freezing",
)


def default_variants(model: ModelWrapper, *, include_compile: bool = True) -> list[str]:
    """Every registered single variant (n/a ones are reported with their reason) plus the
    :data:`DEFAULT_COMBINATIONS` that apply to ``model`` on its device."""
    singles = list(VARIANTS)
    combos = [spec for spec in DEFAULT_COMBINATIONS if unavailable_reason(model, spec) is None]
    specs = singles + combos
    if not include_compile:
        specs = [spec for spec in specs if not any(VARIANTS[name].compiles for name in parse_spec(spec))]
    return specs


# -- the sweep -----------------------------------------------------------------
ACCURACY_COLUMNS = ("accuracy_ok", "max_abs_error", "rel_error", "cosine_similarity", "top1_agreement",
                    "top1_confident_agreement", "top1_confident_rows", "accuracy_metric", "tolerance")
VARIANT_COLUMNS = ("speedup_vs_baseline", "speedup_ci_low", "speedup_ci_high", "paired_speedup",
                   "paired_speedup_ci_low", "paired_speedup_ci_high", "paired_rounds", "speedup_verdict",
                   "transform_time_s",
                   "compile_time_s", "compile_calls", "compile_stable") + ACCURACY_COLUMNS + ("notes",)
#: Columns of :func:`run_variant_sweep`: the benchmark's, then the variant and accuracy columns.
SWEEP_COLUMNS = tuple(BENCHMARK_COLUMNS) + VARIANT_COLUMNS
SPEEDUP_DEFINITION = ("headline: paired_speedup = median over alternating baseline/variant rounds (A B, B A, ...) "
                      "of baseline median / variant median, with the order-statistic 95% CI of that median; "
                      "secondary: speedup_vs_baseline = eager-fp32 median latency / variant median latency (same "
                      "batch), 95% interval = [baseline ci_low / variant ci_high, baseline ci_high / variant ci_low]; "
                      "a CI containing 1 means no significant difference")


def reference_outputs(model: ModelWrapper, batch_sizes: list[int], seq_len: int | None) -> dict:
    """fp32 eager outputs on the seeded inputs, per batch size (an error is kept as its message)."""
    outputs: dict[int, torch.Tensor | str] = {}
    with torch.inference_mode():
        for size in batch_sizes:
            try:
                outputs[size] = model.forward(model.prepare_input(size, seq_len)).detach().float().cpu()
            except InvalidInputError:
                raise
            except Exception as error:  # noqa: BLE001 - recorded, the sweep goes on
                outputs[size] = describe_failure(error)[1]
    return outputs


def warm_up_fields(variant: VariantModel, inputs) -> dict:
    """Before a variant is timed: compile it until compilation stops (``compile_time_s``, ``compile_calls``,
    ``compile_stable``), or report its ONNX export time as its ``compile_time_s``."""
    fields = dict(warm_up_compiled(lambda: variant.forward(inputs))) if variant.compiled else {}
    if getattr(variant, "export_time_s", None) is not None:  # ONNX export, like compile
        fields["compile_time_s"] = variant.export_time_s
    return fields


def sweep_variant(model: ModelWrapper, spec: str, sizes: list[int], seq_len: int | None, references: dict,
                   timing: TimingConfig, measure_memory: bool, paired_rounds: int = 0,
                   applied: VariantModel | None = None, measured: dict | None = None) -> list[dict]:
    """All batch sizes of one variant (protocol of :func:`infopt.measure.sweep.run_points`); never raises for a
    failure inside the variant. ``applied``: ``spec`` already applied (a race's finalist), not applied again.
    ``measured``: per batch size, fields a race already measured there on this same applied variant (its
    accuracy check, compile time, paired columns and their ``Interference``, key ``"paired_window"``): those
    are kept, not measured again; the latency and memory columns are always timed here."""
    measured = measured or {}
    points = [Point.of(model, size, seq_len, variant=spec) for size in sizes]
    try:
        # on a GPU the baseline waits in host memory while its variant is measured (never both on the device)
        variant = model if spec == BASELINE else applied if applied is not None else \
            apply_variant(model, spec, park_baseline=True)
    except VariantNotApplicableError as error:
        return [empty_row(point, "n/a", str(error)) for point in points]
    except VariantError as error:
        return [empty_row(point, "error", str(error)) for point in points]
    is_variant = isinstance(variant, VariantModel)
    tolerance = variant.tolerance if is_variant else tolerance_for(model.device, False)
    common = {"transform_time_s": variant.transform_time_s if is_variant else 0.0}

    def empty(point: Point, status: str, error: str | None = None) -> dict:
        return {**empty_row(point, status, error), **common}

    def measure_point(point: Point) -> dict:
        size, extra, failed = point.batch_size, dict(common), empty(point, "ok")
        known = dict(measured.get(size) or {})
        paired_window = known.pop("paired_window", None)
        paired_known = {key: known.pop(key) for key in PAIRED_COLUMNS if key in known}
        if size in measured:  # checked (and compiled) at this size already: the timing below warms it up again
            extra.update(known)
        else:
            with recorded_failure(failed):  # compile warm-up and accuracy check, before timing
                check_before_timing(size, extra)
        if failed["status"] != "ok":
            return {**failed, **extra}
        row = benchmark_point(variant, size, seq_len, timing=unpaired_timing(timing, paired_rounds),
                              measure_memory=measure_memory)
        row.update(extra)
        if is_variant and row["status"] == "ok" and (paired_known or paired_rounds):
            unpaired = Interference(bool(row["interference"]), row["interference_detail"])
            if paired_known:
                row.update(paired_known, **combine([unpaired, paired_window]).columns())
            else:
                add_paired(row, size, unpaired)
        return row

    def check_before_timing(size: int, extra: dict) -> None:
        """The compile warm-up and the accuracy check at ``size``, into ``extra``."""
        inputs = variant.prepare_input(size, seq_len)
        if is_variant:
            extra.update(warm_up_fields(variant, inputs))
        with torch.inference_mode():
            output = variant.forward(inputs)
        del inputs
        reference = references.get(size)
        if isinstance(reference, torch.Tensor):
            extra.update(compare_outputs(reference, output, model.task, tolerance))
        else:
            extra["tolerance"] = f"no reference: the {BASELINE} baseline failed ({reference})"

    def add_paired(row: dict, size: int, unpaired: Interference) -> None:
        """The paired rounds against the baseline at ``size``, into ``row`` (a failure is a note, the row stands)."""
        try:
            with variant.baseline_resident():  # paired rounds need both on the device
                paired = paired_speedup(model, variant, size, seq_len, rounds=paired_rounds, timing=timing)
            pair_window = Interference(paired.pop("interference"), "paired rounds: " +
                                       paired.pop("interference_detail"))
            row.update(paired, **combine([unpaired, pair_window]).columns())
        except InvalidInputError:
            raise
        except Exception as error:  # noqa: BLE001 - the timed row stands; say why the pair is missing
            row["notes"] = f"paired timing failed: {describe_failure(error)[1]}"

    rows: list[dict] = []
    try:
        rows = run_points(points, measure_point, empty)
    finally:
        if is_variant:
            for row in rows:
                row["notes"] = "; ".join(variant.notes + ([row["notes"]] if row.get("notes") else []))
            compiled = variant.compiled and applied is None  # a caller's variant: the caller frees its graphs
            del variant
            if compiled:
                torch._dynamo.reset()  # free compiled graphs; later variants recompile the same code objects
            release_memory(model.device)
            gc.collect()
    return rows


def add_speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Fill ``speedup_vs_baseline`` and its interval from the eager-fp32 rows (see module docstring)."""
    df = df.reset_index(drop=True)
    keys = ["model", "device", "batch_size"]
    base = df[(df["variant"] == BASELINE) & (df["status"] == "ok")][
        keys + ["latency_p50_ms", "latency_ci_low_ms", "latency_ci_high_ms"]].drop_duplicates(keys, keep="last")
    base = base.rename(columns={"latency_p50_ms": "_b50", "latency_ci_low_ms": "_blo", "latency_ci_high_ms": "_bhi"})
    merged = df[keys].merge(base, on=keys, how="left")
    ok = (df["status"] == "ok").to_numpy()
    values = pd.to_numeric
    df["speedup_vs_baseline"] = (values(merged["_b50"]) / values(df["latency_p50_ms"])).where(ok).to_numpy()
    df["speedup_ci_low"] = (values(merged["_blo"]) / values(df["latency_ci_high_ms"])).where(ok).to_numpy()
    df["speedup_ci_high"] = (values(merged["_bhi"]) / values(df["latency_ci_low_ms"])).where(ok).to_numpy()
    return df


def run_variant_sweep(model: ModelWrapper, variants: Iterable[str] | None = None,
                      batch_sizes: Iterable[int] = (1, 8), seq_len: int | None = None, *,
                      timing: TimingConfig | None = None, measure_memory: bool = True,
                      include_compile: bool = True, paired_rounds: int = PAIRED_ROUNDS) -> pd.DataFrame:
    """Time and accuracy-check each variant of ``model`` at each batch size.

    ``model`` is the eager-fp32 baseline (left untouched); ``variants``
    defaults to :func:`default_variants`; the baseline is always measured
    first. Returns one row per (variant, batch size): the benchmark columns,
    then :data:`VARIANT_COLUMNS`. Status is ``ok``, ``n/a`` (does not apply,
    with the reason in ``error``), ``error``, ``oom`` or ``skipped``; none of
    them stops the sweep. Unknown or conflicting specs raise before anything
    runs. ``include_compile=False`` drops compiled variants from the default list.
    ``paired_rounds`` (default :data:`PAIRED_ROUNDS`) adds the drift-robust
    ``paired_speedup`` (interleaved baseline/variant rounds, see module
    docstring), the headline, to every successful variant row; the unpaired
    timing then gets ``1 - PAIRED_SHARE`` of ``timing.max_time_s``, so the sweep
    takes about as long as an unpaired one with fewer unpaired samples per
    row. ``paired_rounds=0`` times unpaired only, with the full cap.
    """
    sizes, specs = resolve_specs(model, variants, batch_sizes, seq_len, include_compile)
    timing = timing or TimingConfig()
    references = reference_outputs(model, sizes, seq_len)
    rows = []
    for spec in specs:
        rows.extend(sweep_variant(model, spec, sizes, seq_len, references, timing, measure_memory, paired_rounds))
    return finish_table(rows)


def resolve_specs(model: ModelWrapper, variants: Iterable[str] | None, batch_sizes: Iterable[int],
                  seq_len: int | None, include_compile: bool = True) -> tuple[list[int], list[str]]:
    """Checked batch sizes and canonical specs (baseline first, no duplicates); bad input raises before any run."""
    if isinstance(model, VariantModel) or getattr(model, "variant", BASELINE) != BASELINE:
        raise InvalidInputError(f"A variant search needs the {BASELINE} baseline model, not a variant.")
    sizes = check_batch_sizes(batch_sizes)
    model.prepare_input(1, seq_len)  # validate seq_len before anything runs
    requested = default_variants(model, include_compile=include_compile) if variants is None else list(variants)
    specs = [BASELINE]
    for spec in requested:
        canonical = canonical_spec(spec)
        if canonical not in specs:
            specs.append(canonical)
    return sizes, specs


def finish_table(rows: list[dict], extra_columns: tuple = ()) -> pd.DataFrame:
    """Rows to the sweep's table: every :data:`SWEEP_COLUMNS` (plus ``extra_columns``), speedups, verdicts."""
    df = pd.DataFrame(rows)
    columns = list(SWEEP_COLUMNS) + [c for c in extra_columns if c not in SWEEP_COLUMNS]
    for column in columns:
        if column not in df:
            df[column] = None
    return add_verdicts(add_speedups(df[columns]))


__all__ = ["ACCURACY_COLUMNS", "DEFAULT_COMBINATIONS", "SPEEDUP_DEFINITION", "SWEEP_COLUMNS", "VARIANT_COLUMNS",
           "add_speedups", "default_variants", "finish_table", "reference_outputs", "resolve_specs",
           "run_variant_sweep", "sweep_variant", "warm_up_fields"]
