"""Autoregressive generation metrics for causal LMs (``model.is_causal_lm``) and encoder-decoders
(``model.is_encoder_decoder``): TTFT, TPOT, decode rate.

Per-token steps are timed *inside* ``model.module.generate`` by a logits
processor that marks the moment each step's logits are ready (CPU:
``perf_counter_ns``; CUDA: a ``torch.cuda.Event`` recorded on the stream, read
after generation, so no step is synchronized; MPS: synchronize, then the host
clock). The output length is forced (``min_new_tokens = max_new_tokens``,
greedy), so generation never stops early at an end-of-sequence token.

Definitions (``t0`` = generate called, ``t_k`` = logits of token ``k`` ready,
``k = 1..N`` with ``N = new_tokens``):

* ``ttft_ms`` = ``t_1 - t0``: prefill of the whole prompt to the first token.
* TPOT samples = ``t_k - t_{k-1}`` for ``k = 2..N`` (one decode step each, for
  the whole batch); ``tpot_*`` are their statistics pooled over repeats.
* decode time = sum of the TPOT samples; ``decode_tokens_per_s`` =
  ``batch_size * (N - 1) * repeats / decode time`` = ``batch_size * 1000 / tpot_mean_ms``.
* ``e2e_ms`` = generate call to return (median over repeats).

Encoder-decoders (T5, BART, Whisper-style): the encoder runs once inside ``generate``, so ``ttft_ms`` =
encoder pass + first decoder step, and each TPOT sample is one later decoder step (self-attention cache
growing, cross-attention cache reused). ``prompt_len`` is the encoder's input length (text: tokens;
speech: the encoder's output positions, fixed by the config, so ``prompt_lengths`` do not apply there).
The decoder starts from its start token. The plain ``GenerationMixin.generate`` is called (Whisper's own
``generate`` adds long-form audio and language handling the measurement does not want).
"""

from __future__ import annotations

import itertools
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import GenerationConfig, GenerationMixin, LogitsProcessor, LogitsProcessorList

from infopt.measure import stats
from infopt.devices import device_kind, synchronize
from infopt.errors import InvalidInputError
from infopt.measure.interference import watch
from infopt.measure.memtrack import measure_peak_memory, release_memory
from infopt.results import numeric_columns
from infopt.measure.sweep import Point, check_batch_sizes, check_positive_ints, run_points
from infopt.measure.timing import gc_paused, recorded_failure, thread_count

GENERATION_COLUMNS = (
    "model", "device", "variant", "batch_size", "prompt_len", "new_tokens", "use_cache", "status", "error",
    "interference", "interference_detail", "repeats", "ttft_ms", "ttft_min_ms", "ttft_max_ms", "tpot_mean_ms",
    "tpot_std_ms", "tpot_p50_ms", "tpot_p90_ms",
    "tpot_p99_ms", "tpot_ci_low_ms", "tpot_ci_high_ms", "decode_tokens_per_s", "prefill_tokens_per_s", "e2e_ms",
    "peak_memory_mb", "activation_memory_mb", "memory_method", "num_threads", "wall_time_s",
    "ttft_samples_ms", "e2e_samples_ms", "tpot_samples_ms",
)


class StepClock(LogitsProcessor):
    """A no-op logits processor that timestamps every generation step."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.kind = device_kind(self.device)
        self.marks: list = []

    def mark(self) -> None:
        if self.kind == "cuda":
            # on the model's device's stream: the current device may be another GPU (cuda:N, N > 0)
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self.marks.append(event)
        else:
            if self.kind == "mps":
                torch.mps.synchronize()
            self.marks.append(time.perf_counter_ns())

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.mark()
        return scores

    def elapsed_ms(self) -> list[float]:
        """Milliseconds from the first mark to each mark (call after the device has synchronized)."""
        if self.kind == "cuda":
            first = self.marks[0]
            return [first.elapsed_time(event) for event in self.marks]
        return [(mark - self.marks[0]) / 1e6 for mark in self.marks]


def _encoder_decoder(model) -> bool:
    return bool(getattr(model, "is_encoder_decoder", False))


def generation_config(model, new_tokens: int, use_cache: bool) -> GenerationConfig:
    config = model.config

    def special(name: str):  # transformers 5 configs may not define every special id
        return getattr(config, name, None)

    pad = special("pad_token_id") if special("pad_token_id") is not None else special("eos_token_id")
    extra = {"decoder_start_token_id": model.decoder_start_id()} if _encoder_decoder(model) else {}
    return GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1, use_cache=use_cache,
        pad_token_id=pad if pad is not None else 0, eos_token_id=special("eos_token_id"),
        bos_token_id=special("bos_token_id"), **extra,
    )


def generate(model, inputs: dict, **kwargs):
    """``generate`` on the model's module: the plain ``GenerationMixin`` one for encoder-decoders. A ``module``
    that is no ``nn.Module`` (a generation variant's runner, which sets its cache and contexts) generates itself."""
    module = model.module
    if _encoder_decoder(model) and isinstance(module, torch.nn.Module):
        return GenerationMixin.generate(module, **inputs, **kwargs)
    return module.generate(**inputs, **kwargs)


def generation_inputs(model, batch_size: int, prompt_len: int | None) -> dict:
    """What ``generate`` takes: the prompt (causal LMs) or the encoder's inputs (encoder-decoders: the forward's
    inputs without the decoder's, so a variant's input casts apply to them too)."""
    if _encoder_decoder(model):
        inputs = model.prepare_input(batch_size, prompt_len if model.is_text else None)
        return {key: value for key, value in inputs.items() if not key.startswith("decoder_")}
    return model.prepare_input(batch_size, prompt_len)


def forward_inputs(model, batch_size: int, prompt_len: int | None) -> dict:
    """The forward's inputs for the same prompt (an encoder-decoder's carry its decoder inputs; a speech encoder's
    size is fixed by its config)."""
    speech = _encoder_decoder(model) and not model.is_text
    return model.prepare_input(batch_size, None if speech else prompt_len)


def generated_from(model, inputs: dict) -> int:
    """Where the generated tokens start in ``generate``'s sequences for ``inputs`` (:func:`generation_inputs`):
    after the prompt (causal LMs) or after the decoder's start token (encoder-decoders)."""
    return 1 if _encoder_decoder(model) else int(inputs["input_ids"].shape[1])


def generate_once(model, inputs: dict, new_tokens: int, use_cache: bool = True) -> dict:
    """One timed ``generate`` call: ``{"ttft_ms", "tpot_ms" (list), "e2e_ms"}``."""
    clock = StepClock(model.device)
    config = generation_config(model, new_tokens, use_cache)
    prompt_len = generated_from(model, inputs)  # the prompt, or an encoder-decoder's decoder start token
    synchronize(model.device)
    clock.mark()
    output = generate(model, inputs, generation_config=config, logits_processor=LogitsProcessorList([clock]))
    clock.mark()
    synchronize(model.device)
    times = clock.elapsed_ms()
    steps = times[1:-1]
    if output.shape[1] != prompt_len + new_tokens or len(steps) < new_tokens:
        raise RuntimeError(f"generate produced {output.shape[1] - prompt_len} tokens in {len(steps)} steps, "
                           f"expected exactly {new_tokens}.")
    steps = steps[:new_tokens]
    return {"ttft_ms": steps[0], "tpot_ms": np.diff(steps).tolist(), "e2e_ms": times[-1]}


def check_generation_length(model, prompt_len: int, new_tokens: int) -> None:
    """The prompt and the new tokens fit the model: a causal LM's positions; an encoder-decoder's encoder input
    (text) and its decoder (the start token and the new tokens)."""
    if _encoder_decoder(model):
        if model.is_text:
            model.check_seq_len(prompt_len)
        if model.max_decoder_len is not None and 1 + new_tokens > model.max_decoder_len:
            raise InvalidInputError(f"the start token + new_tokens {new_tokens} exceeds {model.name}'s decoder "
                                    f"limit of {model.max_decoder_len} positions.")
    elif model.max_seq_len is not None and prompt_len + new_tokens > model.max_seq_len:
        raise InvalidInputError(f"prompt_len {prompt_len} + new_tokens {new_tokens} = {prompt_len + new_tokens} "
                                f"exceeds {model.name}'s limit of {model.max_seq_len} positions.")


def _check_generation_inputs(model, prompt_lengths, batch_sizes, new_tokens, use_cache, repeats):
    if not getattr(model, "is_causal_lm", False) and not _encoder_decoder(model):
        raise InvalidInputError(f"Generation needs a causal language model or an encoder-decoder; {model.name} is "
                                "neither.")
    prompts = check_positive_ints(prompt_lengths, "prompt_lengths")
    batches = check_batch_sizes(batch_sizes)
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 2:
        raise InvalidInputError(f"new_tokens must be an integer of at least 2 (one prefill and one decode step), "
                                f"got {new_tokens!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InvalidInputError(f"repeats must be an integer of at least 1, got {repeats!r}.")
    check_generation_length(model, max(prompts), new_tokens)
    if _encoder_decoder(model) and not model.is_text:
        prompts = [model.encoder_output_len()]  # a speech encoder's input size is fixed by its config
    caches = [use_cache] if isinstance(use_cache, bool) else list(use_cache)
    if not caches or not all(isinstance(flag, bool) for flag in caches):
        raise InvalidInputError(f"use_cache must be True, False or a list of them, got {use_cache!r}.")
    return prompts, batches, list(dict.fromkeys(caches))


def _point(model, batch_size: int, prompt_len: int, new_tokens: int, use_cache: bool) -> Point:
    """A generation point: the prompt length is its sequence length; cache setting and output length are settings."""
    return Point(model=model.name, variant=model.variant, device=str(model.device), batch_size=batch_size,
                 seq_len=prompt_len, settings=(("new_tokens", new_tokens), ("use_cache", use_cache)))


def empty_generation_row(point: Point, status: str, error: str | None = None) -> dict:
    """A :data:`GENERATION_COLUMNS` row for ``point`` with nothing measured yet."""
    settings = dict(point.settings)
    row = dict.fromkeys(GENERATION_COLUMNS)
    row.update(model=point.model, device=point.device, variant=point.variant, batch_size=point.batch_size,
               prompt_len=point.seq_len, new_tokens=settings["new_tokens"], use_cache=settings["use_cache"],
               status=status, error=error, repeats=0, ttft_samples_ms=[], e2e_samples_ms=[], tpot_samples_ms=[])
    return row


def generation_point(model, batch_size: int, prompt_len: int, new_tokens: int = 64, use_cache: bool = True, *,
                     repeats: int = 3, warmup: int = 1, num_threads: int | None = None,
                     measure_memory: bool = True) -> dict:
    """Measure one (batch size, prompt length, cache setting): one row of :data:`GENERATION_COLUMNS`."""
    started = time.perf_counter()
    row = empty_generation_row(_point(model, batch_size, prompt_len, new_tokens, use_cache), "ok")
    inputs = None
    try:
        with recorded_failure(row):
            inputs = generation_inputs(model, batch_size, prompt_len)
            runs = []
            with thread_count(num_threads) as threads, torch.inference_mode(), gc_paused(), \
                    watch(model.device) as window:
                for index in range(warmup + repeats):
                    run = generate_once(model, inputs, new_tokens, use_cache)
                    if index >= warmup:
                        runs.append(run)
            ttft = [run["ttft_ms"] for run in runs]
            e2e = [run["e2e_ms"] for run in runs]
            tpot = [gap for run in runs for gap in run["tpot_ms"]]
            summary = stats.summarize(tpot)
            row.update(window.result.columns())
            row.update(
                repeats=repeats, num_threads=threads, ttft_ms=float(np.median(ttft)), ttft_min_ms=min(ttft),
                ttft_max_ms=max(ttft), tpot_mean_ms=summary["mean"], tpot_std_ms=summary["std"],
                tpot_p50_ms=summary["p50"], tpot_p90_ms=summary["p90"], tpot_p99_ms=summary["p99"],
                tpot_ci_low_ms=summary["ci_low"], tpot_ci_high_ms=summary["ci_high"],
                decode_tokens_per_s=batch_size * 1000.0 / summary["mean"],
                prefill_tokens_per_s=batch_size * prompt_len * 1000.0 / float(np.median(ttft)),
                e2e_ms=float(np.median(e2e)), ttft_samples_ms=ttft, e2e_samples_ms=e2e, tpot_samples_ms=tpot,
            )
            if measure_memory:
                with thread_count(num_threads):
                    row.update({key: value for key, value in measure_peak_memory(
                        lambda: generate_once(model, inputs, new_tokens, use_cache), model.device, calls=1).items()
                        if key in GENERATION_COLUMNS})
    finally:
        del inputs
        release_memory(model.device, thorough=row["status"] != "ok")
    row["wall_time_s"] = time.perf_counter() - started
    return row


def run_generation_sweep(model, prompt_lengths: Sequence[int] = (32, 128, 512), batch_sizes: Sequence[int] = (1,),
                         new_tokens: int = 64, use_cache: bool | Sequence[bool] = True, *, repeats: int = 3,
                         warmup: int = 1, num_threads: int | None = None, measure_memory: bool = True) -> pd.DataFrame:
    """One row per (use_cache, batch size, prompt length); see the module docstring for the metrics.

    ``use_cache=(True, False)`` measures with and without the KV cache so the
    cache's speedup can be shown. Limits are checked up front: ``prompt_len +
    new_tokens`` must fit the model's positions. After an out-of-memory point,
    points at least as large (batch and prompt) are ``skipped``.
    """
    prompts, batches, caches = _check_generation_inputs(model, prompt_lengths, batch_sizes, new_tokens, use_cache,
                                                        repeats)
    points = [_point(model, batch_size, prompt_len, new_tokens, cache)
              for cache in caches for batch_size, prompt_len in itertools.product(batches, prompts)]

    def measure_point(point: Point) -> dict:
        settings = dict(point.settings)
        return generation_point(model, point.batch_size, point.seq_len, new_tokens, settings["use_cache"],
                                repeats=repeats, warmup=warmup, num_threads=num_threads,
                                measure_memory=measure_memory)

    rows = run_points(points, measure_point, empty_generation_row)
    return numeric_columns(pd.DataFrame(rows, columns=list(GENERATION_COLUMNS)))


__all__ = ["GENERATION_COLUMNS", "StepClock", "check_generation_length", "forward_inputs", "generate", "generate_once", "generated_from",
           "generation_inputs", "generation_point", "run_generation_sweep"]
