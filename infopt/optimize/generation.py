"""Variants on the generation path of causal LMs and encoder-decoders: TTFT and TPOT per variant, paired, under an accuracy guard.

The forward sweep (:mod:`infopt.optimize.sweep`) times one forward pass; what a
causal LM's user feels is the ``generate`` loop. This module measures each
variant over that loop with :func:`infopt.measure.generation.generation_point` (TTFT,
TPOT median/p90/p99, decode tokens/s) at one prompt length, batch size and
output length, always with the KV cache (the baseline is eager fp32 with
transformers' dynamic cache).

A generation variant is a forward variant spec (weights, autocast, attention:
``bf16-weights``, ``torchao-int8-weight-only`` ...) optionally combined with a
cache option:

* ``static-cache``: ``cache_implementation="static"`` (preallocated KV cache,
  fixed shapes), decode step not compiled;
* ``static-cache-compile``: the same with the decode step compiled by
  transformers' generate (``torch.compile``; ``mode="reduce-overhead"`` CUDA
  graphs on CUDA, the default Inductor mode on CPU). In the default list on
  CUDA; opt-in on CPU (``include_compile=True``) like the other compile
  variants, because compiling costs minutes there.

Forward variants of the ``compile`` group (``compile``, ``onnxruntime``) are
``n/a``: they replace ``forward`` only, not the generate loop.

Paired discipline (``paired_rounds``): the baseline and the variant generate
in alternating rounds (A B, B A, ...), one timed ``generate`` each; per round
``baseline / variant`` of the TPOT median and of the TTFT; the columns are the
medians of the rounds with the order-statistic 95% CI (6 rounds or more).
``tpot_speedup_verdict`` / ``ttft_speedup_verdict``: of the paired speedup,
as :func:`infopt.optimize.recommend.speedup_verdict` says it (``faster``, ``slower``,
``no significant difference`` when the CI contains 1, ``too few samples``).

Interference (:mod:`infopt.measure.interference`): every timed row carries
``interference`` / ``interference_detail``, from the unpaired timing window
and, for variants, the paired rounds' window combined. Like
:func:`infopt.optimize.recommend.recommend`, :func:`recommend_generation` never picks a
flagged row, a speedup without a CI or one whose CI contains 1, and says why
(:data:`infopt.optimize.recommend.REFUSALS`).

Accuracy (:func:`infopt.optimize.accuracy.compare_generation`): the greedy
continuation against the fp32 eager one on the same prompts (first divergence,
share of identical tokens) and the prefill logits' relative error; the
tolerance is stated in ``generation_tolerance``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
from typing import Iterable

import pandas as pd
import torch

from infopt.optimize.accuracy import compare_generation, tolerance_for
from infopt.analyze.decode_floor import FLOOR_COLUMNS, FLOOR_INPUT_COLUMNS, floor_inputs
from infopt.devices import device_kind
from infopt.errors import InvalidInputError
from infopt.measure.generation import (GENERATION_COLUMNS, check_generation_length, forward_inputs, generate,
                                       generated_from, generation_config, generation_inputs, generation_point)
from infopt.measure.interference import Interference, combine, watch
from infopt.measure.memtrack import release_memory
from infopt.measure.stats import median_ci
from infopt.measure.timing import describe_failure, recorded_failure
from infopt.optimize.applied import VariantModel, apply_variant
from infopt.optimize.compiled import warm_up_compiled
from infopt.optimize.recommend import flagged, qualify, speedup_verdict
from infopt.optimize.registry import BASELINE, VARIANTS, VariantError, VariantNotApplicableError, canonical_spec

CACHE_OPTIONS = ("static-cache", "static-cache-compile")
#: Forward variants worth measuring over generate (n/a ones are reported with their reason).
GENERATION_FORWARD_VARIANTS = (
    "bf16-weights", "bf16", "fp16-weights", "fp16", "int8-dynamic", "torchao-int8-weight-only",
    "torchao-int8-dynamic", "torchao-int4-weight-only", "torchao-float8",
)
GENERATION_COMBINATIONS = ("bf16-weights+static-cache", "torchao-int8-weight-only+static-cache")
COMPILED_COMBINATIONS = ("bf16-weights+static-cache-compile", "torchao-int8-weight-only+static-cache-compile",
                         "fp16-weights+static-cache-compile", "torchao-int4-weight-only+static-cache-compile")

GENERATION_VARIANT_COLUMNS = (
    "tpot_speedup_vs_baseline", "ttft_speedup_vs_baseline", "paired_tpot_speedup", "paired_tpot_speedup_ci_low",
    "paired_tpot_speedup_ci_high", "paired_ttft_speedup", "paired_ttft_speedup_ci_low",
    "paired_ttft_speedup_ci_high", "paired_rounds", "tpot_speedup_verdict", "ttft_speedup_verdict",
    "transform_time_s", "compile_time_s",
    "first_divergence", "identical_token_share", "rows_diverged", "confident_divergence", "prefill_rel_error",
    "prefill_cosine_similarity", "generation_accuracy_ok", "generation_tolerance", "notes",
    *FLOOR_INPUT_COLUMNS, *FLOOR_COLUMNS,  # the decode floor (infopt.analyze.decode_floor): bytes now, floors with peaks
)
SWEEP_COLUMNS = tuple(GENERATION_COLUMNS) + GENERATION_VARIANT_COLUMNS


def parse_generation_spec(spec: str) -> tuple[str, str | None]:
    """``"bf16-weights+static-cache"`` -> ``("bf16-weights", "static-cache")``; the forward part canonical."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"A generation variant must be a non-empty string such as "
                                f"'bf16-weights+static-cache', got {spec!r}.")
    parts = [part.strip().lower() for part in spec.split("+")]
    caches = [part for part in parts if part in CACHE_OPTIONS]
    if len(caches) > 1:
        raise InvalidInputError(f"'{spec}' names two cache options ({', '.join(caches)}): choose one.")
    rest = [part for part in parts if part not in CACHE_OPTIONS]
    forward = canonical_spec("+".join(rest)) if rest else BASELINE
    return forward, (caches[0] if caches else None)


def generation_spec_name(forward: str, cache: str | None) -> str:
    """The canonical name of a generation variant (forward spec, then the cache option)."""
    if forward == BASELINE:
        return cache or BASELINE
    return f"{forward}+{cache}" if cache else forward


def default_generation_variants(model, *, include_compile: bool | None = None) -> list[str]:
    """The generation variants measured by default (compiled decode: CUDA by default, opt-in elsewhere)."""
    if include_compile is None:
        include_compile = device_kind(model.device) == "cuda"
    specs = [BASELINE, "static-cache", *GENERATION_FORWARD_VARIANTS, *GENERATION_COMBINATIONS]
    if include_compile:
        specs += ["static-cache-compile", *COMPILED_COMBINATIONS]
    return specs


def _cache_options(cache: str | None, kind: str) -> dict:
    """GenerationConfig attributes for a cache option."""
    if cache is None:
        return {"disable_compile": True}
    options = {"cache_implementation": "static"}
    if cache == "static-cache":
        return {**options, "disable_compile": True}
    from transformers import CompileConfig  # noqa: PLC0415

    config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if kind == "cuda" else "default")
    if kind != "cuda":
        config._compile_all_devices = True  # transformers auto-compiles on CUDA/XPU only unless told
    return {**options, "compile_config": config, "disable_compile": False}


class GenerateRunner:
    """A model (baseline or :class:`VariantModel`) seen by :mod:`infopt.measure.generation` as one that generates
    with the variant's cache options and forward contexts (e.g. autocast) around the whole loop."""

    def __init__(self, model, cache: str | None, name: str):
        self.model, self.cache, self.variant = model, cache, name
        self.options = _cache_options(cache, device_kind(model.device))
        self.compiles = cache == "static-cache-compile"

    def __getattr__(self, name: str):
        if name in ("model", "__setstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)

    @property
    def module(self) -> "GenerateRunner":
        return self  # generation.generate_once calls model.module.generate(...)

    def generate(self, **kwargs):
        config = kwargs.get("generation_config")
        if config is not None:
            for key, value in self.options.items():
                setattr(config, key, value)
        with contextlib.ExitStack() as stack:
            for context in getattr(self.model, "forward_contexts", []):
                stack.enter_context(context())
            return generate(self.model, {}, **kwargs)

    def greedy(self, inputs: dict, new_tokens: int, scores: bool = False):
        """Untimed greedy continuation (token ids; with ``scores``, also the raw per-step logits)."""
        config = generation_config(self.model, new_tokens, True)
        with torch.inference_mode():
            if scores:
                config.output_logits = config.return_dict_in_generate = True  # raw logits: scores mask EOS
                out = self.generate(**inputs, generation_config=config)
                return out.sequences, [s.float() for s in out.logits]
            return self.generate(**inputs, generation_config=config), None


def _check(model, prompt_len: int, new_tokens: int, batch_size: int, paired_rounds: int) -> None:
    if not getattr(model, "is_causal_lm", False) and not getattr(model, "is_encoder_decoder", False):
        raise InvalidInputError(f"Generation variants need a causal language model or an encoder-decoder; "
                                f"{model.name} is neither.")
    if isinstance(model, VariantModel) or getattr(model, "variant", BASELINE) != BASELINE:
        raise InvalidInputError(f"run_generation_variant_sweep needs the {BASELINE} baseline model, not a variant.")
    for label, value, low in (("prompt_len", prompt_len, 1), ("new_tokens", new_tokens, 2),
                              ("batch_size", batch_size, 1), ("paired_rounds", paired_rounds, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{label} must be an integer of at least {low}, got {value!r}.")
    check_generation_length(model, prompt_len, new_tokens)


def paired_generation_speedup(baseline: GenerateRunner, variant: GenerateRunner, batch_size: int, prompt_len: int,
                              new_tokens: int, *, rounds: int = 6, num_threads: int | None = None) -> dict:
    """TPOT and TTFT speedups from alternating rounds of one timed ``generate`` each (module docstring),
    plus the ``interference`` of the whole paired window."""
    tpot, ttft = [], []
    with watch(baseline.device) as window:
        for index in range(rounds):
            order = (baseline, variant) if index % 2 == 0 else (variant, baseline)
            rows = {}
            for runner in order:
                row = generation_point(runner, batch_size, prompt_len, new_tokens, True, repeats=1, warmup=0,
                                       num_threads=num_threads, measure_memory=False)
                if row["status"] != "ok":
                    raise RuntimeError(f"paired round {index}: {runner.variant} failed: {row['error']}")
                rows[runner is baseline] = row
            tpot.append(rows[True]["tpot_p50_ms"] / rows[False]["tpot_p50_ms"])
            ttft.append(rows[True]["ttft_ms"] / rows[False]["ttft_ms"])
    (tpot_low, tpot_high), (ttft_low, ttft_high) = median_ci(tpot), median_ci(ttft)
    return {"paired_tpot_speedup": statistics.median(tpot), "paired_tpot_speedup_ci_low": tpot_low,
            "paired_tpot_speedup_ci_high": tpot_high, "paired_ttft_speedup": statistics.median(ttft),
            "paired_ttft_speedup_ci_low": ttft_low, "paired_ttft_speedup_ci_high": ttft_high,
            "paired_rounds": rounds, **window.result.columns()}


def _empty(model, name: str, batch_size: int, prompt_len: int, new_tokens: int, status: str, error: str | None):
    row = dict.fromkeys(SWEEP_COLUMNS)
    row.update(model=model.name, device=str(model.device), variant=name, batch_size=batch_size,
               prompt_len=prompt_len, new_tokens=new_tokens, use_cache=True, status=status, error=error, repeats=0)
    return row


def run_generation_variant_sweep(model, variants: Iterable[str] | None = None, *, prompt_len: int = 32,
                                 new_tokens: int = 64, batch_size: int = 1, repeats: int = 3, warmup: int = 1,
                                 paired_rounds: int = 6, include_compile: bool | None = None,
                                 num_threads: int | None = None, measure_memory: bool = False) -> pd.DataFrame:
    """One row per generation variant of the causal LM or encoder-decoder ``model`` (the eager-fp32 baseline, left
    untouched; an encoder-decoder's prompt is its encoder's input, and its continuations start after the decoder's
    start token).

    Columns: :data:`infopt.measure.generation.GENERATION_COLUMNS` then
    :data:`GENERATION_VARIANT_COLUMNS`. ``tpot_speedup_vs_baseline`` /
    ``ttft_speedup_vs_baseline`` are ratios of medians; the ``paired_*``
    columns come from ``paired_rounds`` alternating rounds (0 to skip). A
    variant that does not apply is ``n/a`` with the reason, a failing one
    ``error``; neither stops the sweep.
    """
    _check(model, prompt_len, new_tokens, batch_size, paired_rounds)
    requested = default_generation_variants(model, include_compile=include_compile) if variants is None \
        else list(variants)
    specs: list[tuple[str, str, str | None]] = []
    for spec in [BASELINE, *requested]:
        forward, cache = parse_generation_spec(spec)
        name = generation_spec_name(forward, cache)
        if name not in [s[0] for s in specs]:
            specs.append((name, forward, cache))

    base_runner = GenerateRunner(model, None, BASELINE)
    inputs = generation_inputs(model, batch_size, prompt_len)
    reference_ids, reference_scores = base_runner.greedy(inputs, new_tokens, scores=True)
    with torch.inference_mode():
        reference_prefill = model.forward(forward_inputs(model, batch_size, prompt_len)).detach().float().cpu()
    rows = []
    for name, forward, cache in specs:
        rows.append(_sweep_one(model, base_runner, name, forward, cache, inputs, reference_ids, reference_scores,
                               reference_prefill, prompt_len, new_tokens, batch_size, repeats, warmup, paired_rounds,
                               num_threads, measure_memory))
    df = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    base = df[(df["variant"] == BASELINE) & (df["status"] == "ok")]
    if not base.empty:
        ok = df["status"] == "ok"
        df["tpot_speedup_vs_baseline"] = (float(base["tpot_p50_ms"].iloc[0]) /
                                          pd.to_numeric(df["tpot_p50_ms"])).where(ok)
        df["ttft_speedup_vs_baseline"] = (float(base["ttft_ms"].iloc[0]) / pd.to_numeric(df["ttft_ms"])).where(ok)
    return add_generation_verdicts(df)


def add_generation_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """Fill ``tpot_speedup_verdict`` / ``ttft_speedup_verdict`` from the paired speedups (baseline rows: empty)."""
    df = df.copy()
    for metric in ("tpot", "ttft"):
        paired = f"paired_{metric}_speedup"
        values = pd.DataFrame({c: pd.to_numeric(df[c]) for c in (paired, f"{paired}_ci_low", f"{paired}_ci_high")})
        verdicts = [None if variant == BASELINE else speedup_verdict(*numbers)
                    for variant, numbers in zip(df["variant"], values.itertuples(index=False))]
        df[f"{metric}_speedup_verdict"] = pd.Series(verdicts, index=df.index, dtype=object)
    return df


def _sweep_one(model, base_runner, name, forward, cache, inputs, reference_ids, reference_scores, reference_prefill,
               prompt_len, new_tokens, batch_size, repeats, warmup, paired_rounds, num_threads, measure_memory):
    """One generation variant: build, warm up (compile), check accuracy, time, pair. Never raises for a
    failure inside the variant."""
    if forward != BASELINE and any(VARIANTS[part].group == "compile" for part in forward.split("+")):
        return _empty(model, name, batch_size, prompt_len, new_tokens, "n/a",
                      f"{forward} replaces forward only, not the generate loop; use static-cache-compile.")
    try:
        # on a GPU the baseline waits in host memory while its variant is measured (never both on the device)
        variant = model if forward == BASELINE else apply_variant(model, forward, park_baseline=True)
    except VariantNotApplicableError as error:
        return _empty(model, name, batch_size, prompt_len, new_tokens, "n/a", str(error))
    except VariantError as error:
        return _empty(model, name, batch_size, prompt_len, new_tokens, "error", str(error))
    is_variant = isinstance(variant, VariantModel)
    runner = GenerateRunner(variant, cache, name)
    reduced = is_variant and variant.reduced_precision
    row = _empty(model, name, batch_size, prompt_len, new_tokens, "ok", None)
    extra = {"transform_time_s": variant.transform_time_s if is_variant else 0.0}
    extra.update(floor_inputs(variant, name, batch_size, prompt_len, new_tokens))  # weights as stored
    notes = list(variant.notes) if is_variant else []
    try:
        with recorded_failure(row):
            variant_inputs = generation_inputs(variant, batch_size, prompt_len)
            if runner.compiles:
                from infopt.measure.generation import generate_once  # noqa: PLC0415

                warm = warm_up_compiled(lambda: generate_once(runner, variant_inputs, new_tokens, True))
                extra["compile_time_s"] = warm["compile_time_s"]
                if not warm["compile_stable"]:
                    notes.append(f"still compiling after {warm['compile_calls']} generate calls")
            ids, _ = runner.greedy(variant_inputs, new_tokens)
            with torch.inference_mode():
                prefill = variant.forward(forward_inputs(variant, batch_size, prompt_len))
            extra.update(compare_generation(reference_ids, ids, generated_from(model, inputs),
                                            reference_scores=reference_scores,
                                            reference_prefill=reference_prefill, candidate_prefill=prefill,
                                            tolerance=tolerance_for(model.device, reduced)))
            extra.pop("generation_metric", None)
        if row["status"] == "ok":
            timed = generation_point(runner, batch_size, prompt_len, new_tokens, True, repeats=repeats,
                                     warmup=warmup, num_threads=num_threads, measure_memory=measure_memory)
            row.update({key: value for key, value in timed.items() if key in row})
            row["variant"] = name
            if paired_rounds and name != BASELINE and row["status"] == "ok":
                try:
                    unpaired = Interference(bool(row["interference"]), row["interference_detail"])
                    resident = variant.baseline_resident() if is_variant else contextlib.nullcontext()
                    with resident:  # paired rounds need both on the device
                        paired = paired_generation_speedup(base_runner, runner, batch_size, prompt_len, new_tokens,
                                                           rounds=paired_rounds, num_threads=num_threads)
                    pair_window = Interference(paired.pop("interference"), "paired rounds: " +
                                               paired.pop("interference_detail"))
                    extra.update(paired, **combine([unpaired, pair_window]).columns())
                except Exception as error:  # noqa: BLE001 - the timed row stands; say why the pair is missing
                    notes.append(f"paired timing failed: {describe_failure(error)[1]}")
    finally:
        if is_variant:
            del variant
        if runner.compiles:
            torch._dynamo.reset()
        release_memory(model.device)
        gc.collect()
    row.update(extra)
    row["notes"] = "; ".join(notes)
    return row


def recommend_generation(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, device, batch and prompt length: the best variant for TPOT and for TTFT, or the baseline and why.

    Same rules as :func:`infopt.optimize.recommend.recommend` (:func:`infopt.optimize.recommend.qualify`): a variant qualifies
    only if it ran, passed the generation accuracy guard, was not flagged for interference (nor, for the
    ratio of medians, was its baseline) and its speedup's 95% CI lies above 1. The measure is the paired
    speedup where the group has one, else the ratio of medians (which has no CI, so never qualifies). When
    nothing qualifies the baseline is kept and ``reason`` says why (:data:`infopt.optimize.recommend.REFUSALS`).
    """
    rows = []
    keys = ["model", "device", "batch_size", "prompt_len"]
    df = df.assign(_flagged=flagged(df), _no_ci=math.nan)
    for key, group in df.groupby(keys, sort=True):
        ran = group["status"] == "ok"
        accurate_rows = ran & (group["generation_accuracy_ok"] == True)  # noqa: E712
        rejected = int((ran & (group["generation_accuracy_ok"] == False)).sum())  # noqa: E712
        baseline = group[ran & (group["variant"] == BASELINE)]
        where = f"{key[0]} on {key[1]} (batch {key[2]}, prompt {key[3]})"
        for metric in ("tpot", "ttft"):
            paired = f"paired_{metric}_speedup"
            if pd.to_numeric(group[paired]).notna().any():
                (speed, low, high), measure = (paired, f"{paired}_ci_low", f"{paired}_ci_high"), "paired rounds"
            else:
                (speed, low, high), measure = (f"{metric}_speedup_vs_baseline", "_no_ci", "_no_ci"), \
                    "ratio of medians"
            median = f"{metric}_p50_ms" if metric == "tpot" else "ttft_ms"
            base = dict(zip(keys, key), metric=metric.upper(), speedup_measure=measure,
                        rejected_for_accuracy=rejected)
            accurate = group[accurate_rows & (group["variant"] != BASELINE) & pd.to_numeric(group[speed]).notna()]
            baseline_flagged = bool(baseline["_flagged"].any()) and measure == "ratio of medians"
            qualified, reason = qualify(accurate, speed, low, high, accurate["_flagged"] | baseline_flagged)
            if qualified.empty:
                if baseline.empty:
                    rows.append({**base, "variant": None, "speedup": math.nan, "speedup_ci_low": math.nan,
                                 "speedup_ci_high": math.nan, "runner_up": None, "reason": "nothing ran",
                                 "recommendation": f"{where}: no variant (not even the baseline) ran and passed "
                                                   "the generation accuracy guard."})
                    continue
                value = float(baseline[median].iloc[0])
                rows.append({**base, "variant": BASELINE, "speedup": 1.0, "speedup_ci_low": math.nan,
                             "speedup_ci_high": math.nan, "runner_up": None, "reason": reason,
                             "recommendation": f"{where}: for {metric.upper()} keep {BASELINE} ({value:.3g} ms); "
                                               f"{reason}."})
                continue
            best = qualified.iloc[0]
            text = (f"{where}: best {metric.upper()} with {best['variant']}, {float(best[speed]):.2f}x vs {BASELINE} "
                    f"({measure}; 95% CI {float(best[low]):.2f}-{float(best[high]):.2f}x; "
                    f"{float(best[median]):.3g} ms); identical tokens {best['identical_token_share']:.0%}, "
                    f"prefill rel. error {best['prefill_rel_error']:.2g}")
            rows.append({**base, "variant": best["variant"], "speedup": float(best[speed]),
                         "speedup_ci_low": float(best[low]), "speedup_ci_high": float(best[high]),
                         "runner_up": qualified.iloc[1]["variant"] if len(qualified) > 1 else None,
                         "reason": None, "recommendation": text})
    return pd.DataFrame(rows, columns=keys + ["metric", "speedup_measure", "variant", "speedup", "speedup_ci_low",
                                              "speedup_ci_high", "runner_up", "rejected_for_accuracy", "reason",
                                              "recommendation"])


__all__ = ["CACHE_OPTIONS", "COMPILED_COMBINATIONS", "GENERATION_COMBINATIONS", "GENERATION_FORWARD_VARIANTS",
           "GENERATION_VARIANT_COLUMNS", "GenerateRunner", "SWEEP_COLUMNS", "add_generation_verdicts",
           "default_generation_variants",
           "generation_spec_name", "paired_generation_speedup", "parse_generation_spec", "recommend_generation",
           "run_generation_variant_sweep"]
