"""The physical floor of generation: how fast a decode step and a prefill could be on this device's measured peaks.

TPOT is compared with what the hardware allows, not only with eager fp32. A decode step of a causal LM must at
least read every weight it multiplies once and the KV cache it attends over, so

* ``tpot_floor_ms`` = (``floor_weight_bytes`` + ``floor_kv_bytes_per_step``) / measured copy bandwidth, and
  ``bandwidth_utilization`` = ``tpot_floor_ms`` / ``tpot_p50_ms`` (1.0: decode runs at the memory limit);
* ``ttft_floor_ms`` = ``floor_prefill_flops`` / measured peak FLOP/s of ``floor_dtype``, with
  ``floor_prefill_flops`` = 2 x matrix parameters x batch x prompt (the output head once per sequence: generate
  computes the prefill's logits for the last position only), and ``compute_utilization`` = floor / ``ttft_ms``.

What is counted, so the floor stays a lower bound:

* weights *as stored* (a torchao tensor subclass by its packed inner tensors, a legacy quantized tensor by its
  int8 storage), each tensor once (tied embeddings and heads are one read); embedding tables that are only
  indexed (``nn.Embedding`` not tied to a head) are left out: a step reads a few of their rows, not the table;
* the KV cache at the mean context of the decode steps: step ``k`` (``k = 2..N``) attends over
  ``prompt + k - 1`` positions, a mean of ``prompt + N / 2``; K and V, every layer, in the cache's dtype
  (the autocast dtype under autocast, else the weights' float dtype). Rows without the cache read no KV
  cache (their floor is the weights alone: a loose bound, since they recompute the whole sequence).
  Encoder-decoders (``prompt_len`` = encoder positions) read per step the decoder's self-attention cache at its
  mean context (start token + ``N / 2``) *and* the whole cross-attention cache (``prompt_len`` positions), both
  with the decoder's layers, KV heads and head size; the TTFT floor counts every matrix (encoder and decoder) once
  per prompt position, which over-counts the decoder (one start token in the prefill): for them ``ttft_floor_ms``
  is approximate, not a strict lower bound;
* the peaks are the device peaks file's *measured* figures (:mod:`infopt.analyze.peaks`): copy bandwidth
  (bytes read + written per second) and the best kernel's FLOP/s per dtype. Variants whose matrix products run
  in a type with no measured peak (int8 or float8 compute) get no compute floor, and ``floor_note`` says so.

The byte and FLOP counts (``FLOOR_INPUT_COLUMNS``) are taken while the model or variant exists
(:func:`floor_inputs`); the floors (``FLOOR_COLUMNS``) are added whenever the peaks are known
(:func:`add_decode_floors`), so a report can fill them for rows saved before the peaks were measured.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from infopt.analyze.memory import kv_cache_analytic_bytes
from infopt.analyze.peaks import peak_bandwidth, peak_flops

FLOOR_INPUT_COLUMNS = ("floor_weight_bytes", "floor_kv_bytes_per_step", "floor_prefill_flops", "floor_dtype")
FLOOR_COLUMNS = ("tpot_floor_ms", "bandwidth_utilization", "ttft_floor_ms", "compute_utilization",
                 "floor_bandwidth_bytes_per_s", "floor_flops_per_s", "floor_note")
#: Variant steps whose matrix products run in a type without a measured peak FLOP/s (no compute floor).
LOW_PRECISION_COMPUTE = frozenset({"int8-dynamic", "torchao-int8-dynamic", "torchao-float8"})
_SKIPPED_DTYPES = (torch.bool, torch.int64, torch.int32)  # masks and position ids, not weights


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor occupies as stored: a tensor subclass by its inner tensors (packed int4/int8 data, scales)."""
    if type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(stored_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()  # a legacy quantized tensor: its int8 storage


def _module_of(key: str, modules: dict[str, nn.Module]) -> nn.Module | None:
    prefix = key
    while "." in prefix:
        prefix = prefix.rsplit(".", 1)[0]
        if prefix in modules:
            return modules[prefix]
    return modules.get("")


def _weights(module: nn.Module) -> tuple[dict[int, torch.Tensor], dict[int, set[str]]]:
    """``(read, keys)``: the tensors a step multiplies, by identity (indexed-only embeddings left out), and the
    state-dict keys each is stored under."""
    modules = dict(module.named_modules())
    read, indexed, keys = {}, {}, {}

    def visit(value, owner, key):
        if isinstance(value, (tuple, list)):
            for item in value:
                visit(item, owner, key)
        elif isinstance(value, torch.Tensor) and (value.is_quantized or value.dtype not in _SKIPPED_DTYPES):
            (indexed if isinstance(owner, nn.Embedding) else read)[id(value)] = value
            keys.setdefault(id(value), set()).add(key)

    for key, value in module.state_dict(keep_vars=True).items():
        visit(value, _module_of(key, modules), key)
    return read, keys


def weight_bytes_read(module: nn.Module) -> int:
    """Bytes of the weights one decode step must read (as stored, each once, indexed-only embeddings left out)."""
    read, _ = _weights(module)
    return sum(stored_bytes(tensor) for tensor in read.values())


def _head_prefix(module: nn.Module) -> str | None:
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    return next((f"{name}." for name, child in module.named_modules() if child is head and name), None)


def prefill_flops(module: nn.Module, batch_size: int, prompt_len: int) -> float:
    """2 x matrix parameters x batch x prompt, the output head once per sequence (the module docstring)."""
    read, keys = _weights(module)
    prefix = _head_prefix(module)
    in_head = {ident: prefix is not None and any(k.startswith(prefix) for k in keys[ident]) for ident in read}
    per_token = sum(t.numel() for ident, t in read.items() if t.dim() >= 2 and not in_head[ident])
    per_sequence = sum(t.numel() for ident, t in read.items() if t.dim() >= 2 and in_head[ident])
    return 2.0 * batch_size * (per_token * prompt_len + per_sequence)


def _activation_dtype(model, module: nn.Module) -> torch.dtype:
    for context in getattr(model, "forward_contexts", []) or []:
        fast = getattr(context(), "fast_dtype", None)
        if fast is not None:
            return fast
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """K and V of one position, every layer, for one sequence (from the model's config)."""
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def floor_inputs(model, variant: str, batch_size: int, prompt_len: int, new_tokens: int,
                 use_cache: bool = True) -> dict:
    """The :data:`FLOOR_INPUT_COLUMNS` of one generation row of ``model`` (a wrapper or a variant of one)."""
    module = getattr(model, "eager_module", None) or model.module
    dtype = _activation_dtype(model, module)
    mean_context = prompt_len + new_tokens / 2
    try:
        if getattr(model, "is_encoder_decoder", False):  # decoder self cache from the start token + cross cache
            per_token = kv_cache_analytic_bytes(model, 1, 1, dtype)
            kv = batch_size * (1 + new_tokens / 2 + prompt_len) * per_token if use_cache else 0.0
        else:
            kv = batch_size * mean_context * kv_bytes_per_token(model.config, dtype) if use_cache else 0.0
    except (AttributeError, TypeError):  # a config without layer and head counts: the cache size is unknown
        kv = math.nan
    low_precision = bool(set(str(variant).split("+")) & LOW_PRECISION_COMPUTE)
    return {"floor_weight_bytes": weight_bytes_read(module), "floor_kv_bytes_per_step": float(kv),
            "floor_prefill_flops": prefill_flops(module, batch_size, prompt_len),
            "floor_dtype": "int8/float8" if low_precision else str(dtype).replace("torch.", "")}


def add_floor_inputs(df: pd.DataFrame, model) -> pd.DataFrame:
    """:func:`floor_inputs` for every row of a generation sweep of one model (its own variant on every row)."""
    df = df.copy()
    values = [floor_inputs(model, row.variant, int(row.batch_size), int(row.prompt_len), int(row.new_tokens),
                           bool(row.use_cache)) for row in df.itertuples(index=False)]
    for column in FLOOR_INPUT_COLUMNS:
        df[column] = [value[column] for value in values]
    return df


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ratio(numerator: float, denominator) -> float:
    denominator = _number(denominator)
    return numerator / denominator if denominator > 0 else math.nan


def add_decode_floors(df: pd.DataFrame, peaks: dict | None) -> pd.DataFrame:
    """Fill :data:`FLOOR_COLUMNS` from the rows' floor inputs and a :func:`~infopt.analyze.peaks.device_peaks` dict.

    Rows of another device than the peaks', rows without floor inputs and rows that did not run get NaN floors
    and a ``floor_note`` saying why; nothing is guessed.
    """
    df = df.copy()
    bandwidth = _number(peak_bandwidth(peaks, "measured")) if peaks else math.nan
    out = {column: [] for column in FLOOR_COLUMNS}
    for row in df.to_dict("records"):
        note, tpot, ttft, flops = "", math.nan, math.nan, math.nan
        weights, kv = _number(row.get("floor_weight_bytes")), _number(row.get("floor_kv_bytes_per_step"))
        if not peaks:
            note = "no device peaks measured in this run"
        elif str(row.get("device")) != str(peaks.get("device")):
            note = f"the peaks are of {peaks.get('device')}, not {row.get('device')}"
        elif math.isnan(weights):
            note = "no floor inputs recorded for this row"
        else:
            if bandwidth > 0:
                tpot = (weights + (0.0 if math.isnan(kv) else kv)) / bandwidth * 1e3
                note = "KV cache size unknown: weights only" if math.isnan(kv) else ""
            else:
                note = "no measured bandwidth"
            dtype = str(row.get("floor_dtype"))
            flops = _number(peak_flops(peaks, dtype, "measured")) if dtype in ("float32", "bfloat16", "float16") \
                else math.nan
            if flops > 0:
                ttft = _number(row.get("floor_prefill_flops")) / flops * 1e3
            else:
                note = "; ".join(filter(None, [note, f"no measured peak FLOP/s for {dtype} compute"]))
        if row.get("status") not in (None, "ok"):
            tpot = ttft = math.nan
            note = note or f"status {row.get('status')}"
        out["tpot_floor_ms"].append(tpot)
        out["bandwidth_utilization"].append(_ratio(tpot, row.get("tpot_p50_ms")))
        out["ttft_floor_ms"].append(ttft)
        out["compute_utilization"].append(_ratio(ttft, row.get("ttft_ms")))
        out["floor_bandwidth_bytes_per_s"].append(bandwidth if peaks else math.nan)
        out["floor_flops_per_s"].append(flops)
        out["floor_note"].append(note)
    for column, values in out.items():
        df[column] = values
    return df


def floor_table(df: pd.DataFrame) -> pd.DataFrame:
    """Measured TPOT and TTFT beside their floors, one row per generation row with the cache that ran."""
    if df is None or df.empty or "tpot_floor_ms" not in df:
        return pd.DataFrame()
    rows = df[(df["status"] == "ok") & (df["use_cache"].astype(str).str.lower() == "true")]
    columns = [c for c in ("run", "device", "model", "variant", "batch_size", "prompt_len", "tpot_p50_ms",
                           "tpot_ci_low_ms", "tpot_ci_high_ms", "tpot_floor_ms", "bandwidth_utilization", "ttft_ms",
                           "ttft_floor_ms", "compute_utilization", "floor_note") if c in rows]
    return rows[columns].reset_index(drop=True)


__all__ = ["FLOOR_COLUMNS", "FLOOR_INPUT_COLUMNS", "LOW_PRECISION_COMPUTE", "add_decode_floors",
           "add_floor_inputs", "floor_inputs", "floor_table", "kv_bytes_per_token", "prefill_flops", "stored_bytes",
           "weight_bytes_read"]
