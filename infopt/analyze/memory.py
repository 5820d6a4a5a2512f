"""Where the memory of inference goes: weights, activations/workspace, KV cache.

- :func:`memory_vs_batch`: peak memory per batch size, split into weights
  (exact parameter + buffer bytes), KV cache (causal LMs: bytes of the cache
  tensors a generation prefill returns) and activations + workspace (the
  measured peak increase over the level before the pass, minus the KV cache).
  Peaks come from :func:`infopt.measure.memtrack.measure_peak_memory` (RSS sampled on
  CPU, allocator peaks on CUDA, sampled allocations on MPS).
- :func:`memory_timeline`: memory over one forward pass. CPU: resident set
  size sampled every millisecond; CUDA: allocated and reserved bytes replayed
  from the allocator's event history, with the snapshot saved as a pickle for
  https://pytorch.org/memory_viz; MPS: current allocated memory sampled.
- :func:`kv_cache_sweep`: a causal LM's KV cache bytes against the number of tokens
  generated, measured from the real cache tensors and computed analytically
  (2 x layers x batch x sequence x hidden x bytes per element), side by side.
  Encoder-decoders (``is_encoder_decoder``) count the decoder's self-attention
  cache (growing with the generated tokens) and its cross-attention cache
  (2 x decoder layers x batch x encoder positions x heads x head size x bytes,
  filled once from the encoder's output) separately, each against its own
  analytic size.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pandas as pd
import torch

from infopt.devices import device_kind, synchronize
from infopt.errors import InvalidInputError
from infopt.measure.memtrack import MIB, MpsAllocatedSampler, RssSampler, measure_peak_memory, release_memory
from infopt.analyze.opcount import ModuleScopes
from infopt.presets import DEFAULT_BATCH_SIZES
from infopt.measure.sweep import Point, check_batch_sizes, resolve_seq_len, run_points, validate_inputs
from infopt.models.base import check_batch_size
from infopt.measure.timing import recorded_failure

KV_ANALYTIC_DEFINITION = ("2 (keys and values) x layers x batch x cached sequence length x KV heads x head size "
                          "x bytes per element (KV heads < query heads under grouped-query attention)")


# --------------------------------------------------------------------------- KV cache helpers

def cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a ``past_key_values`` object holds (Cache classes or legacy tuples)."""
    found: list[torch.Tensor] = []
    if cache is None:
        return found
    if isinstance(cache, torch.Tensor):
        return [cache]
    if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache: decoder self-attention + cross-attention
        return cache_tensors(cache.self_attention_cache) + cache_tensors(cache.cross_attention_cache)
    if hasattr(cache, "layers"):  # transformers >= 4.56 Cache: one layer object per decoder layer
        for layer in cache.layers:
            found += [value for value in vars(layer).values() if isinstance(value, torch.Tensor)]
        return found
    for name in ("key_cache", "value_cache"):  # older DynamicCache
        if hasattr(cache, name):
            found += [t for t in getattr(cache, name) if isinstance(t, torch.Tensor)]
    if found:
        return found
    if isinstance(cache, (tuple, list)):
        for item in cache:
            found += cache_tensors(item)
    return found


def cache_bytes(cache) -> dict:
    """Bytes held by a KV cache: distinct storages (what is allocated) and tensor elements."""
    storages: dict[int, int] = {}
    element_bytes = 0
    for tensor in cache_tensors(cache):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        element_bytes += tensor.numel() * tensor.element_size()
    return {"storage_bytes": sum(storages.values()), "tensor_bytes": element_bytes}


def cache_seq_len(cache) -> int:
    """Positions stored in the cache."""
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2])


def kv_cache_analytic_bytes(model, batch_size: int, seq_len: int, dtype: torch.dtype | None = None) -> int:
    """2 x layers x batch x seq_len x (KV heads x head size) x bytes per element.

    The KV width comes from the model interface (``kv_width``: fewer KV heads
    than query heads under grouped-query attention); ``hidden_size`` when a
    model does not declare it.
    """
    element = torch.empty((), dtype=dtype or model.dtype).element_size()
    width = getattr(model, "kv_width", None) or model.hidden_size
    return 2 * model.num_layers * batch_size * seq_len * width * element


def cross_cache_analytic_bytes(model, batch_size: int, encoder_len: int, dtype: torch.dtype | None = None) -> int:
    """An encoder-decoder's cross-attention cache: 2 x decoder layers x batch x encoder positions x
    (heads x head size) x bytes per element (the same width as the decoder's self-attention cache)."""
    return kv_cache_analytic_bytes(model, batch_size, encoder_len, dtype)


def _generates(model) -> bool:
    return bool(getattr(model, "is_causal_lm", False) or getattr(model, "is_encoder_decoder", False))


def _require_causal_lm(model, what: str) -> None:
    if not _generates(model):
        raise InvalidInputError(f"{what} needs a causal language model or an encoder-decoder, got {model.name} "
                                f"({model.task}).")


def output_cache(output):
    """The KV cache of a model output (``cache`` in transformers >= 5.2x, ``past_key_values`` before)."""
    keys = output.keys() if hasattr(output, "keys") else ()
    if "cache" in keys:
        return output["cache"]
    return output["past_key_values"] if "past_key_values" in keys else getattr(output, "past_key_values", None)


def _cache_argument(module) -> str:
    """Name of the forward argument that takes a KV cache back (``cache`` or ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _prefill(model, inputs: dict):
    """One forward with ``use_cache=True``: logits and the KV cache generation starts from.

    Encoder-decoders: the encoder pass and the decoder's first step (its start token), which fills the
    cross-attention cache and the first position of the self-attention cache.
    """
    if getattr(model, "is_encoder_decoder", False):
        encoder_inputs = {key: value for key, value in inputs.items() if not key.startswith("decoder_")}
        start = inputs["decoder_input_ids"][:, :1]
        return model.module(**encoder_inputs, decoder_input_ids=start, use_cache=True)
    return model.module(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=True)


# --------------------------------------------------------------------------- peak vs batch

def _prefill_name(model) -> str:
    if getattr(model, "is_encoder_decoder", False):
        return "encoder + first decoder step (use_cache=True)"
    return "prefill (use_cache=True)"


def memory_vs_batch(model, batch_sizes=DEFAULT_BATCH_SIZES, seq_len: int | None = None, *,
                    calls: int = 2) -> pd.DataFrame:
    """Peak memory per batch size, split into weights, KV cache and activations + workspace.

    Causal LMs are measured on a generation prefill (``use_cache=True``), so
    the KV cache is part of the peak; other models on their forward. Failures
    follow :func:`infopt.measure.sweep.run_points` (an out-of-memory point is
    ``status="oom"`` and larger ones are ``skipped``; invalid input raises).
    ``activation_workspace_mb`` is floored at 0 (``activation_workspace_floored``
    says where): on CPU the sampled resident-set increase can be smaller than
    the KV cache it contains, and a negative size would be meaningless.
    """
    sizes = check_batch_sizes(batch_sizes)
    validate_inputs(model, seq_len)  # invalid seq_len raises before anything runs; an OOM is the points'
    weights_mb = model.weight_bytes() / MIB
    causal = _generates(model)

    def empty_row(point: Point, status: str, error: str | None = None) -> dict:
        return {**point.identity(), "measured_pass": _prefill_name(model) if causal else "forward",
                "status": status, "error": error, "weights_mb": weights_mb, "kv_cache_mb": 0.0 if causal else None,
                "activation_workspace_mb": None, "activation_workspace_floored": None, "peak_memory_mb": None,
                "baseline_memory_mb": None, "peak_reserved_mb": None, "memory_method": None}

    def measure_point(point: Point) -> dict:
        row = empty_row(point, "ok")
        try:
            with recorded_failure(row):
                inputs = model.prepare_input(point.batch_size, seq_len)
                run = (lambda: _prefill(model, inputs)) if causal else (lambda: model.forward(inputs))
                measured = measure_peak_memory(run, model.device, calls=calls)
                kv_mb = 0.0
                if causal:
                    with torch.inference_mode():
                        kv_mb = cache_bytes(output_cache(run()))["storage_bytes"] / MIB
                row.update({key: value for key, value in measured.items() if key != "activation_memory_mb"})
                row["kv_cache_mb"] = kv_mb if causal else None
                activations = measured["activation_memory_mb"] - kv_mb
                row["activation_workspace_floored"] = activations < 0
                row["activation_workspace_mb"] = max(activations, 0.0)
        finally:
            release_memory(model.device)
        return row

    table = pd.DataFrame(run_points([Point.of(model, size, seq_len) for size in sizes], measure_point, empty_row))
    table.attrs["definitions"] = {
        "weights_mb": "parameter and buffer bytes (exact)",
        "kv_cache_mb": "storage bytes of the past_key_values tensors returned by the prefill (causal LMs; "
                       "encoder-decoders: self-attention + cross-attention caches)",
        "activation_workspace_mb": "measured peak increase over the level before the pass, minus kv_cache_mb, "
                                   "floored at 0 (activation_workspace_floored=True where the floor applied); "
                                   "CPU: resident set size sampled every ms (includes allocator caching)",
    }
    return table


# --------------------------------------------------------------------------- timeline

def _module_markers(model, t0: float, depth: int):
    """Context manager recording enter/exit times (ms since ``t0``) of modules up to ``depth``."""
    events: list[dict] = []
    depth_of = {name: (0 if name == "<root>" else name.count(".") + 1)
                for name in {n or "<root>" for n, _ in model.module.named_modules()}}

    def mark(kind):
        def record(name: str) -> None:
            if depth_of.get(name, depth + 1) <= depth:
                events.append({"t_ms": (time.perf_counter() - t0) * 1e3, "module": name, "event": kind})
        return record

    return ModuleScopes(model.module, mark("enter"), mark("exit")), events


def _cuda_timeline(model, inputs: dict, out_dir: Path | None) -> tuple[pd.DataFrame, str | None]:
    device = model.device
    synchronize(device)
    allocated0, reserved0 = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    snapshot_path = None
    try:
        with torch.inference_mode():
            model.forward(inputs)
        synchronize(device)
        snapshot = torch.cuda.memory._snapshot()
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            snapshot_path = str(out_dir / f"{model.name}_{device.type}_memory_snapshot.pickle")
            torch.cuda.memory._dump_snapshot(snapshot_path)
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    index = device.index if device.index is not None else torch.cuda.current_device()
    trace = snapshot["device_traces"][index]
    allocated, reserved, rows = allocated0, reserved0, []
    start = next((e["time_us"] for e in trace if "time_us" in e), None)
    rows.append({"t_ms": 0.0, "allocated_mb": allocated / MIB, "reserved_mb": reserved / MIB, "action": "start"})
    for position, entry in enumerate(trace):
        action, size = entry["action"], entry.get("size", 0)
        if action == "alloc":
            allocated += size
        elif action == "free_completed":
            allocated -= size
        elif action == "segment_alloc":
            reserved += size
        elif action in ("segment_free", "segment_unmap"):
            reserved -= size
        else:
            continue
        t_ms = (entry["time_us"] - start) / 1e3 if start is not None and "time_us" in entry else float(position)
        rows.append({"t_ms": t_ms, "allocated_mb": allocated / MIB, "reserved_mb": reserved / MIB, "action": action})
    wide = pd.DataFrame(rows)
    long = wide.melt(id_vars=["t_ms", "action"], value_vars=["allocated_mb", "reserved_mb"],
                     var_name="metric", value_name="value_mb")
    long["metric"] = long["metric"].str.replace("_mb", "", regex=False)
    return long, snapshot_path


def memory_timeline(model, batch_size: int, seq_len: int | None = None, *, out_dir: str | Path | None = None,
                    interval_s: float = 0.001, settle_s: float = 0.01, module_depth: int = 2) -> pd.DataFrame:
    """Memory over one forward pass, long form: ``t_ms``, ``metric``, ``value_mb``, ``increase_mb``.

    Metrics: ``rss`` (CPU), ``allocated``/``reserved`` (CUDA; replayed from the
    allocator history, ``t_ms`` from its timestamps or the event index if the
    torch build records none), ``mps_allocated`` (MPS). ``df.attrs`` holds
    ``module_events`` (enter/exit times of modules up to ``module_depth``, CPU
    and MPS), ``snapshot_path`` (CUDA pickle written into ``out_dir``) and
    ``method``.
    """
    kind = device_kind(model.device)
    inputs = model.prepare_input(batch_size, seq_len)
    with torch.inference_mode():  # one call first: lazy initialisation is not part of the timeline
        model.forward(inputs)
    synchronize(model.device)
    release_memory(model.device)
    attrs: dict = {"batch_size": batch_size, "seq_len": resolve_seq_len(model, seq_len),
                   "module_events": [], "snapshot_path": None}
    if kind == "cuda":
        table, attrs["snapshot_path"] = _cuda_timeline(model, inputs, Path(out_dir) if out_dir else None)
        attrs["method"] = "cuda allocator history (torch.cuda.memory._record_memory_history)"
    else:
        sampler = RssSampler(interval_s) if kind == "cpu" else MpsAllocatedSampler(interval_s)
        metric = "rss" if kind == "cpu" else "mps_allocated"
        t0 = time.perf_counter()  # the sampler's clock starts microseconds later, at __enter__
        markers, events = _module_markers(model, t0, module_depth)
        with sampler:
            time.sleep(settle_s)
            with torch.inference_mode(), markers:
                model.forward(inputs)
            synchronize(model.device)
            time.sleep(settle_s)
        table = pd.DataFrame([{"t_ms": t * 1e3, "action": "sample", "metric": metric, "value_mb": v / MIB}
                              for t, v in sampler.samples])
        attrs["module_events"] = events
        attrs["method"] = (f"resident set size sampled every {interval_s * 1e3:g} ms" if kind == "cpu" else
                           f"torch.mps.current_allocated_memory sampled every {interval_s * 1e3:g} ms")
        if kind == "mps":
            attrs["mps_driver_allocated_mb_after"] = torch.mps.driver_allocated_memory() / MIB
    baseline = table.groupby("metric")["value_mb"].transform("first")
    table["increase_mb"] = table["value_mb"] - baseline
    table.insert(0, "model", model.name)
    table.insert(1, "device", str(model.device))
    table.attrs.update(attrs)
    return table


# --------------------------------------------------------------------------- KV cache

def kv_cache_sweep(model, batch_size: int = 1, prompt_len: int = 32, new_tokens: int = 64, *,
                   check_generate: bool = True) -> pd.DataFrame:
    """KV cache bytes after each generated token: measured from the cache tensors vs analytic.

    Greedy decoding step by step (a prefill with ``use_cache=True``, then one
    token at a time feeding ``past_key_values`` back), measuring the cache
    after every step. With ``check_generate`` a final row measures the cache
    that ``model.module.generate`` returns for the same lengths.
    """
    _require_causal_lm(model, "kv_cache_sweep")
    check_batch_size(batch_size)
    if new_tokens < 1:
        raise InvalidInputError(f"new_tokens must be at least 1, got {new_tokens!r}.")
    if getattr(model, "is_encoder_decoder", False):
        return _encoder_decoder_kv_sweep(model, batch_size, prompt_len, new_tokens, check_generate)
    model.check_seq_len(prompt_len + new_tokens)
    inputs = model.prepare_input(batch_size, prompt_len)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rows = []

    def record(cache, generated: int, source: str) -> None:
        seq = cache_seq_len(cache)
        measured = cache_bytes(cache)
        analytic = kv_cache_analytic_bytes(model, batch_size, seq)
        rows.append({"model": model.name, "device": str(model.device), "batch_size": batch_size,
                     "prompt_len": prompt_len, "generated_tokens": generated, "cache_seq_len": seq,
                     "measured_bytes": measured["storage_bytes"], "tensor_bytes": measured["tensor_bytes"],
                     "analytic_bytes": analytic, "measured_over_analytic": measured["storage_bytes"] / analytic,
                     "measured_mb": measured["storage_bytes"] / MIB, "analytic_mb": analytic / MIB,
                     "cache_class": type(cache).__name__, "source": source})

    with torch.inference_mode():
        output = _prefill(model, inputs)
        cache = output_cache(output)
        cache_argument = _cache_argument(model.module)
        for step in range(1, new_tokens + 1):
            record(cache, step, "decode loop")  # the cache holds prompt + step - 1 positions
            if step == new_tokens:
                break
            next_ids = output.logits[:, -1].argmax(dim=-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
            output = model.module(input_ids=next_ids, attention_mask=mask, use_cache=True, **{cache_argument: cache})
            cache = output_cache(output)
        if check_generate:
            generated = model.module.generate(
                input_ids=ids, attention_mask=inputs["attention_mask"], max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, return_dict_in_generate=True,
                pad_token_id=model.config.eos_token_id)
            record(output_cache(generated), generated.sequences.shape[1] - prompt_len, "generate()")
    table = pd.DataFrame(rows)
    table.attrs["analytic_definition"] = KV_ANALYTIC_DEFINITION
    table.attrs["measured_definition"] = "distinct storage bytes of every tensor in past_key_values"
    return table


def _encoder_decoder_kv_sweep(model, batch_size: int, prompt_len: int, new_tokens: int,
                              check_generate: bool) -> pd.DataFrame:
    """:func:`kv_cache_sweep` for an encoder-decoder: self- and cross-attention caches, each vs analytic.

    ``prompt_len`` is the text encoder's input length (a speech encoder's is fixed by its config). The
    decoder starts from its start token, so after generated token ``k`` the self-attention cache holds
    ``k`` positions; the cross-attention cache holds the encoder's output positions throughout.
    """
    from infopt.measure.generation import generate, generation_config  # noqa: PLC0415 - transformers-only path

    if model.is_text:
        model.check_seq_len(prompt_len)
    else:
        prompt_len = model.encoder_output_len()
    if model.max_decoder_len is not None and 1 + new_tokens > model.max_decoder_len:
        raise InvalidInputError(f"the start token + new_tokens {new_tokens} exceeds {model.name}'s decoder limit "
                                f"of {model.max_decoder_len} positions.")
    inputs = model.prepare_input(batch_size, prompt_len if model.is_text else None)
    encoder_inputs = {key: value for key, value in inputs.items() if not key.startswith("decoder_")}
    encoder_len = model.encoder_output_len(prompt_len if model.is_text else None)
    rows = []

    def record(cache, generated: int, source: str) -> None:
        self_cache, cross_cache = cache.self_attention_cache, cache.cross_attention_cache
        self_seq, cross_seq = cache_seq_len(self_cache), cache_seq_len(cross_cache)
        measured_self = cache_bytes(self_cache)["storage_bytes"]
        measured_cross = cache_bytes(cross_cache)["storage_bytes"]
        analytic_self = kv_cache_analytic_bytes(model, batch_size, generated)
        analytic_cross = cross_cache_analytic_bytes(model, batch_size, encoder_len)
        measured, analytic = measured_self + measured_cross, analytic_self + analytic_cross
        rows.append({"model": model.name, "device": str(model.device), "batch_size": batch_size,
                     "prompt_len": prompt_len, "generated_tokens": generated, "cache_seq_len": self_seq,
                     "cross_cache_seq_len": cross_seq, "measured_bytes": measured,
                     "tensor_bytes": cache_bytes(cache)["tensor_bytes"], "analytic_bytes": analytic,
                     "measured_over_analytic": measured / analytic, "measured_mb": measured / MIB,
                     "analytic_mb": analytic / MIB, "self_measured_bytes": measured_self,
                     "self_analytic_bytes": analytic_self, "self_measured_over_analytic": measured_self / analytic_self,
                     "cross_measured_bytes": measured_cross, "cross_analytic_bytes": analytic_cross,
                     "cross_measured_over_analytic": measured_cross / analytic_cross,
                     "cache_class": type(cache).__name__, "source": source})

    with torch.inference_mode():
        output = _prefill(model, inputs)
        cache = output_cache(output)
        encoder_outputs = (output.encoder_last_hidden_state,)
        cache_argument = _cache_argument(model.module)
        mask = {"attention_mask": inputs["attention_mask"]} if "attention_mask" in inputs else {}
        for step in range(1, new_tokens + 1):
            record(cache, step, "decode loop")  # the self-attention cache holds the start token + step - 1
            if step == new_tokens:
                break
            next_ids = output.logits[:, -1].argmax(dim=-1, keepdim=True)
            output = model.module(encoder_outputs=encoder_outputs, decoder_input_ids=next_ids, use_cache=True,
                                  **mask, **{cache_argument: cache})
            cache = output_cache(output)
        if check_generate:
            generated = generate(model, encoder_inputs, generation_config=generation_config(model, new_tokens, True),
                                 return_dict_in_generate=True)
            # the returned cache has not stored the last token's keys and values: it holds start + N - 1
            record(output_cache(generated), generated.sequences.shape[1] - 1, "generate()")
    table = pd.DataFrame(rows)
    table.attrs["analytic_definition"] = (
        "self-attention: " + KV_ANALYTIC_DEFINITION.replace("layers", "decoder layers") + "; cross-attention: 2 x "
        "decoder layers x batch x encoder positions x heads x head size x bytes per element")
    table.attrs["measured_definition"] = ("distinct storage bytes of the tensors in the self-attention and the "
                                          "cross-attention caches, counted separately and together")
    return table


def kv_cache_split(kv: pd.DataFrame) -> pd.DataFrame:
    """A :func:`kv_cache_sweep` table to show: as is for a causal LM; an encoder-decoder's rows as one row per
    step and cache (``cache`` = ``self-attention`` / ``cross-attention``), each with its own measured and
    analytic bytes and their ratio."""
    if kv is None or kv.empty or "cross_measured_bytes" not in kv:
        return kv
    keep = [c for c in ("model", "device", "batch_size", "prompt_len", "generated_tokens", "source") if c in kv]
    parts = []
    for cache, prefix, seq in (("self-attention", "self", "cache_seq_len"),
                               ("cross-attention", "cross", "cross_cache_seq_len")):
        part = kv[keep].copy()
        part.insert(len(keep) - 1, "cache", cache)
        part["cache_seq_len"] = kv[seq]
        part["measured_bytes"] = kv[f"{prefix}_measured_bytes"]
        part["analytic_bytes"] = kv[f"{prefix}_analytic_bytes"]
        part["measured_over_analytic"] = kv[f"{prefix}_measured_over_analytic"]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
