"""Optimization variants: measured speedups, each next to the accuracy it costs.

A *variant* is a named transformation of a loaded model (and of its inputs):
``channels-last``, ``bf16``, ``int8-dynamic``, ``compile`` ... Each declares
the tasks and device kinds it applies to; variants compose with ``+``
(``bf16+channels-last+compile``). :func:`apply_variant` transforms a *copy*, so
the baseline model is never touched, and returns a :class:`VariantModel` that
the benchmark, profiler and accuracy guard use exactly like a model wrapper.

:func:`run_variant_sweep` times every variant with
:func:`infopt.benchmark.benchmark_point` (same columns as a batch sweep),
compares its output with the fp32 eager reference on the same seeded inputs
(:mod:`infopt.accuracy`), then measures its speedup paired with the baseline.
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
  (unpaired or paired window; :mod:`infopt.interference`). Flagged rows are
  never recommended.
* ``transform_time_s``: wall time of the transformations (casts,
  quantization, wrapping; not the copy), once per variant.
* ``compile_time_s``: wall time of the calls, at that batch size, during
  which ``torch.compile`` compiled (dynamo frame counter moved); compiled
  variants are called until compilation stops before they are timed. Empty for
  variants that do not compile.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import pandas as pd
import torch
from torch import nn

from .accuracy import Tolerance, compare_outputs, tolerance_for
from .benchmark import BENCHMARK_COLUMNS, benchmark_point, empty_row
from .devices import device_kind
from .errors import InfoptError, InvalidInputError
from .memtrack import release_memory
from .models.base import Inputs, ModelWrapper
from .stats import median_ci
from .sweep import Point, check_batch_sizes, run_points
from .interference import Interference, combine, watch
from .timing import TimingConfig, describe_failure, gc_paused, make_timer, recorded_failure, thread_count

BASELINE = "eager-fp32"


class UnknownVariantError(InvalidInputError):
    """A variant name that is not in the registry."""


class VariantNotApplicableError(InfoptError, ValueError):
    """The variant does not apply to this model or device (reported as ``status="n/a"``)."""


class VariantError(InfoptError, RuntimeError):
    """Applying a variant failed (reported as ``status="error"``)."""


# -- the registry -------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One named transformation.

    ``stage`` orders the steps of a composition (attention kernel, weights,
    memory layout, autocast, compile: compilation must see the final model).
    Two variants of the same ``group`` cannot be combined. ``transform``
    mutates a :class:`VariantModel` in place. ``check`` may return a reason the
    variant does not apply to a particular model (beyond task and device).
    """

    name: str
    description: str
    transform: Callable[["VariantModel"], None]
    stage: int
    group: str | None = None
    tasks: tuple[str, ...] | None = None        # None: every task
    devices: tuple[str, ...] | None = None      # device kinds; None: every kind
    device_reason: str = ""                     # why other device kinds are excluded
    reduced_precision: bool = False
    compiles: bool = False
    check: Callable[[ModelWrapper], str | None] | None = None

    def unavailable_reason(self, model: ModelWrapper) -> str | None:
        """Why this variant does not apply to ``model`` on its device, or ``None``."""
        if self.tasks is not None and model.task not in self.tasks:
            return f"{self.name} applies only to {' / '.join(self.tasks)} models, not to {model.name} ({model.task})."
        kind = device_kind(model.device)
        if self.devices is not None and kind not in self.devices:
            return f"{self.name} runs on {' / '.join(self.devices)} only, not {kind}: {self.device_reason}."
        return self.check(model) if self.check else None


VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant, *, replace: bool = False) -> Variant:
    """Add ``variant`` to the registry (``replace=True`` to redefine a name)."""
    if "+" in variant.name or not variant.name:
        raise InvalidInputError(f"Variant names must be non-empty and contain no '+', got {variant.name!r}.")
    if variant.name in VARIANTS and not replace:
        raise InvalidInputError(f"A variant named '{variant.name}' is already registered.")
    VARIANTS[variant.name] = variant
    return variant


def unregister_variant(name: str) -> None:
    """Remove a registered variant (used by tests that register their own)."""
    VARIANTS.pop(name, None)


def list_variants(model: ModelWrapper | None = None) -> list[str]:
    """Registered variant names; with ``model``, only those that apply to it on its device."""
    names = list(VARIANTS)
    if model is not None:
        names = [name for name in names if VARIANTS[name].unavailable_reason(model) is None]
    return names


def describe_variants() -> pd.DataFrame:
    """The registry as a table: name, description, tasks, devices, precision, compiles."""
    return pd.DataFrame([
        {"variant": v.name, "description": v.description, "tasks": "all" if v.tasks is None else ", ".join(v.tasks),
         "devices": "all" if v.devices is None else ", ".join(v.devices),
         "precision": "reduced" if v.reduced_precision else "fp32", "compiles": v.compiles}
        for v in VARIANTS.values()
    ])


def parse_spec(spec: str) -> tuple[str, ...]:
    """Split ``"a+b+c"`` into registered names in registry order (the canonical spelling).

    Raises :class:`UnknownVariantError` for an unknown name and
    :class:`~infopt.errors.InvalidInputError` for a duplicate, a conflict
    (two of one group, e.g. ``bf16+fp16``) or the baseline combined with others.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"A variant spec must be a non-empty string such as 'bf16+compile', got {spec!r}.")
    names = [part.strip().lower() for part in spec.split("+")]
    for name in names:
        if name not in VARIANTS:
            raise UnknownVariantError(f"Unknown variant '{name}' in '{spec}': choose from {', '.join(VARIANTS)}.")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"Variant spec '{spec}' names the same variant twice.")
    if BASELINE in names and len(names) > 1:
        raise InvalidInputError(f"'{BASELINE}' is the untouched baseline and cannot be combined ('{spec}').")
    groups: dict[str, str] = {}
    for name in names:
        group = VARIANTS[name].group
        if group is not None and group in groups:
            raise InvalidInputError(f"Variants '{groups[group]}' and '{name}' both set the {group} and cannot be combined.")
        if group is not None:
            groups[group] = name
    order = list(VARIANTS)
    return tuple(sorted(names, key=order.index))


def application_order(steps: Iterable[str]) -> list[str]:
    """The steps sorted by ``stage``: the order the transformations run in (compile last)."""
    order = list(VARIANTS)
    return sorted(steps, key=lambda name: (VARIANTS[name].stage, order.index(name)))


def canonical_spec(spec: str) -> str:
    """The spec with its parts in registry order, e.g. ``compile+channels-last+bf16`` -> ``bf16+channels-last+compile``."""
    return "+".join(parse_spec(spec))


def unavailable_reason(model: ModelWrapper, spec: str) -> str | None:
    """Why ``spec`` does not apply to ``model`` on its device (first failing part), or ``None``."""
    for name in parse_spec(spec):
        reason = VARIANTS[name].unavailable_reason(model)
        if reason:
            return reason
    return None


# -- the transformed model ----------------------------------------------------
class VariantModel:
    """A transformed copy of a model wrapper, used exactly like one.

    Everything not overridden here (``name``, ``task``, ``is_text``,
    ``device``, ``module``, ``items_per_batch``, ``tokens_per_batch``,
    ``config`` ...) is the copy's. ``prepare_input`` returns the *same seeded
    values* as the baseline's, converted to the layout/dtype the variant runs
    on (outside the timed call, as a data pipeline would deliver them);
    ``forward`` runs inside the variant's contexts (e.g. autocast).
    """

    def __init__(self, wrapper: ModelWrapper, reference: ModelWrapper, spec: str):
        self.wrapper = wrapper            # the transformed copy
        self.reference = reference        # the untouched baseline (for info only)
        self.variant = spec
        self.steps = parse_spec(spec)
        self.input_transforms: list[Callable[[Inputs], Inputs]] = []
        self.forward_contexts: list[Callable[[], contextlib.AbstractContextManager]] = []
        self.eager_module: nn.Module = wrapper.module   # the module before compilation
        self.compiled = any(VARIANTS[name].compiles for name in self.steps)
        self.reduced_precision = any(VARIANTS[name].reduced_precision for name in self.steps)
        self.transform_time_s = 0.0
        self.notes: list[str] = []

    def __getattr__(self, name: str):
        if name in ("wrapper", "__setstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.wrapper, name)

    @property
    def tolerance(self) -> Tolerance:
        """The accuracy tolerance that applies (see :func:`infopt.accuracy.tolerance_for`)."""
        return tolerance_for(self.device, self.reduced_precision)

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        inputs = self.wrapper.prepare_input(batch_size, seq_len, seed=seed)
        for convert in self.input_transforms:
            inputs = convert(inputs)
        return inputs

    def forward(self, inputs: Inputs) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            for context in self.forward_contexts:
                stack.enter_context(context())
            return self.wrapper.forward(inputs)

    __call__ = forward

    def to(self, device):
        raise InvalidInputError("A variant is tied to the device it was built on: move the baseline model with "
                                ".to() and apply the variant again.")

    def weight_bytes(self) -> int:
        """Bytes of the transformed weights, packed int8 ones included (tied tensors counted once)."""
        seen: set[tuple] = set()

        def size(value) -> int:
            if isinstance(value, torch.Tensor):
                key = (value.data_ptr(), value.numel(), value.dtype) if not value.is_quantized else (id(value),)
                if key in seen:
                    return 0
                seen.add(key)
                return value.numel() * value.element_size()
            if isinstance(value, (tuple, list)):
                return sum(size(item) for item in value)
            return 0

        return sum(size(value) for value in self.eager_module.state_dict(keep_vars=True).values())

    def info(self, seq_len: int | None = None) -> dict:
        """The baseline's description with the variant's name, dtype and weight size.

        ``flops_per_sample`` is the fp32 reference's: a variant computes the
        same operations, only at another precision or with fused kernels.
        """
        info = dict(self.reference.info(seq_len))
        dtypes = sorted({str(t.dtype).replace("torch.", "") for t in self.eager_module.state_dict().values()
                         if isinstance(t, torch.Tensor) and t.is_floating_point()})
        info.update(variant=self.variant, variant_steps=list(self.steps), weight_bytes=self.weight_bytes(),
                    dtype=", ".join(dtypes) or info.get("dtype"), compiled=self.compiled,
                    tolerance=self.tolerance.describe(), notes=list(self.notes))
        return info

    def __repr__(self) -> str:
        return f"<VariantModel {self.variant} of {self.wrapper.name} size={self.wrapper.size} device={self.wrapper.device}>"


def apply_variant(model: ModelWrapper, spec: str) -> VariantModel:
    """Transform a copy of ``model`` by ``spec`` (e.g. ``"bf16+channels-last"``).

    Raises :class:`VariantNotApplicableError` when a part does not apply to the
    model or its device, and :class:`VariantError` when a transformation
    fails. ``torch.compile`` is lazy: compilation errors surface on the first
    call. The returned model's ``variant`` is the canonical spec.
    """
    if isinstance(model, VariantModel):
        raise InvalidInputError(f"Apply variants to the baseline model, not to the variant '{model.variant}' "
                                "(compose them with '+' instead).")
    if getattr(model, "variant", BASELINE) != BASELINE:
        raise InvalidInputError(f"apply_variant needs an untouched {BASELINE} model, got variant '{model.variant}'.")
    steps = parse_spec(spec)
    reason = unavailable_reason(model, spec)
    if reason:
        raise VariantNotApplicableError(reason)
    result = VariantModel(copy.deepcopy(model), model, "+".join(steps))
    started = time.perf_counter()
    try:
        with torch.no_grad():
            for name in application_order(steps):
                VARIANTS[name].transform(result)
    except Exception as error:  # noqa: BLE001 - re-raised with the variant named
        raise VariantError(f"Variant '{name}' failed on {model.name}: {describe_failure(error)[1]}") from error
    result.transform_time_s = time.perf_counter() - started
    result.variant = "+".join(steps)
    result.wrapper.variant = result.variant
    return result


# -- the transformations ------------------------------------------------------
def _identity(model: VariantModel) -> None:
    """The baseline: nothing changes."""


def _cast_float_inputs(dtype: torch.dtype) -> Callable[[Inputs], Inputs]:
    def convert(inputs: Inputs) -> Inputs:
        return {key: value.to(dtype) if value.is_floating_point() else value for key, value in inputs.items()}
    return convert


def _channels_last(model: VariantModel) -> None:
    model.wrapper.module.to(memory_format=torch.channels_last)

    def convert(inputs: Inputs) -> Inputs:
        return {key: value.contiguous(memory_format=torch.channels_last) if value.dim() == 4 else value
                for key, value in inputs.items()}
    model.input_transforms.append(convert)


def _autocast(dtype: torch.dtype) -> Callable[[VariantModel], None]:
    def transform(model: VariantModel) -> None:
        kind = device_kind(model.device)
        model.forward_contexts.append(lambda: torch.autocast(device_type=kind, dtype=dtype))
    return transform


def _weights_cast(dtype: torch.dtype) -> Callable[[VariantModel], None]:
    def transform(model: VariantModel) -> None:
        model.wrapper.module.to(dtype)
        model.input_transforms.append(_cast_float_inputs(dtype))
    return transform


def _gpt2_conv1d_to_linear(module: nn.Module) -> int:
    """Replace transformers' ``Conv1D`` (GPT-2's projections) by the equivalent ``nn.Linear``.

    ``Conv1D`` computes ``x @ W + b`` with ``W`` stored ``(in, out)``; a Linear
    stores ``W.T``. Without this only GPT-2's LM head would be quantized.
    """
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always provides it today
        return 0
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, Conv1D):
            in_features, out_features = child.weight.shape
            linear = nn.Linear(in_features, out_features, device=child.weight.device, dtype=child.weight.dtype)
            linear.weight.copy_(child.weight.t())
            linear.bias.copy_(child.bias)
            linear.requires_grad_(False)
            setattr(module, name, linear)
            replaced += 1
        else:
            replaced += _gpt2_conv1d_to_linear(child)
    return replaced


def _has_linear(model: ModelWrapper) -> str | None:
    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple[type, ...] = (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (nn.Linear,)
    if not any(isinstance(m, kinds) for m in model.module.modules()):
        return f"int8-dynamic quantizes nn.Linear layers and {model.name} has none."
    if not hasattr(getattr(torch, "ao", None), "quantization") or \
            not hasattr(torch.ao.quantization, "quantize_dynamic"):
        return ("int8-dynamic (deprecated) needs torch.ao.quantization.quantize_dynamic, which this PyTorch no "
                "longer has: use torchao-int8-dynamic.")
    return None


def _int8_dynamic(model: VariantModel) -> None:
    converted = _gpt2_conv1d_to_linear(model.wrapper.module)
    if converted:
        model.notes.append(f"{converted} GPT-2 Conv1D projections converted to nn.Linear before quantization")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.ao.quantization.quantize_dynamic(model.wrapper.module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    if any(issubclass(w.category, DeprecationWarning) for w in caught):
        model.notes.append("deprecated: torch.ao.quantization.quantize_dynamic (torchao-int8-dynamic is its "
                           "successor; both are measured side by side)")
    model.eager_module = model.wrapper.module


def _compile(mode: str | None, *, freezing: bool = False) -> Callable[[VariantModel], None]:
    def transform(model: VariantModel) -> None:
        model.eager_module = model.wrapper.module
        # dynamic=False: one static graph per batch size, each as fast as it can be
        # (automatic dynamic shapes would time a shape-generic graph at the second size).
        # freezing: Inductor treats the weights as constants, folds them and pre-packs them
        # for oneDNN on CPU -- the inference setting PyTorch recommends for CPUs.
        options = {"freezing": True} if freezing else None
        model.wrapper.module = torch.compile(model.wrapper.module, mode=mode, dynamic=False, options=options)
        if freezing:
            model.notes.append("Inductor freezing: weights are compile-time constants (inference only; "
                               "changing them afterwards needs a recompile)")
    return transform


def _has_image_input(model: ModelWrapper) -> str | None:
    """channels-last reorders 4-D image tensors: it applies where the interface says inputs hold one."""
    if not model.has_image_input:
        return (f"channels-last applies to models with 4-D image inputs (vision models); {model.name} "
                f"({model.task}) has none.")
    return None


def _has_attention_switch(model: ModelWrapper) -> str | None:
    if model.attn_implementation is None:  # the model interface: None = no switchable attention
        return f"{model.name} ({model.task}) does not expose a switchable attention implementation."
    return None


def _switches_attention_to(implementation: str) -> Callable[[ModelWrapper], str | None]:
    """Applicability check: the model can switch attention, and is not already on ``implementation``."""
    def check(model: ModelWrapper) -> str | None:
        reason = _has_attention_switch(model)
        if reason is None and model.attn_implementation == implementation:
            reason = (f"{model.name} already uses {implementation} attention, so this variant would time "
                      "the baseline again.")
        return reason
    return check


def _attention(implementation: str) -> Callable[[VariantModel], None]:
    def transform(model: VariantModel) -> None:
        model.wrapper.module.set_attn_implementation(implementation)
        model.wrapper.options["attn_implementation"] = implementation
    return transform


_GPU = ("cuda", "mps")

for _variant in (
    Variant(BASELINE, "the model as loaded: fp32 weights, eager PyTorch, default (sdpa) attention",
            _identity, stage=0),
    Variant("sdpa", "attention through torch.nn.functional.scaled_dot_product_attention (the baseline's default)",
            _attention("sdpa"), stage=0, group="attention", check=_switches_attention_to("sdpa")),
    Variant("eager-attention", "attention as explicit matmul + softmax (transformers' 'eager' implementation)",
            _attention("eager"), stage=0, group="attention", check=_switches_attention_to("eager")),
    Variant("int8-dynamic", "DEPRECATED legacy path: dynamic int8 quantization of every nn.Linear (weights int8, "
            "activations quantized per call; torch.ao.quantization.quantize_dynamic)", _int8_dynamic, stage=1, group="weights",
            devices=("cpu",), device_reason="quantized::linear_dynamic has CPU kernels only",
            reduced_precision=True, check=_has_linear),
    Variant("bf16-weights", "weights and float inputs cast to bfloat16", _weights_cast(torch.bfloat16),
            stage=1, group="weights", reduced_precision=True),
    Variant("fp16-weights", "weights and float inputs cast to float16", _weights_cast(torch.float16),
            stage=1, group="weights", devices=_GPU, reduced_precision=True,
            device_reason="CPUs have no fast fp16 matmul kernels (use bf16)"),
    Variant("bf16", "autocast to bfloat16 (fp32 weights; matmuls/convolutions in bf16)",
            _autocast(torch.bfloat16), stage=3, group="autocast", reduced_precision=True),
    Variant("fp16", "autocast to float16 (fp32 weights; matmuls/convolutions in fp16)", _autocast(torch.float16),
            stage=3, group="autocast", devices=_GPU, reduced_precision=True,
            device_reason="CPUs have no fast fp16 matmul kernels (use bf16)"),
    Variant("channels-last", "NHWC memory layout for weights and images (faster convolutions)", _channels_last,
            stage=2, group="layout", check=_has_image_input),
    Variant("compile", "torch.compile, default mode (Inductor), one static graph per batch size",
            _compile(None), stage=4, group="compile", compiles=True),
    Variant("compile-freezing", "torch.compile (Inductor) with freezing: weights folded in as constants and "
            "pre-packed (oneDNN on CPU), one static graph per batch size", _compile(None, freezing=True),
            stage=4, group="compile", compiles=True),
    Variant("compile-max-autotune", "torch.compile(mode='max-autotune'): autotuned Triton kernels",
            _compile("max-autotune"), stage=4, group="compile", devices=("cuda",), compiles=True,
            device_reason="max-autotune tunes GPU (Triton) kernels"),
    Variant("compile-reduce-overhead", "torch.compile(mode='reduce-overhead'): CUDA graphs",
            _compile("reduce-overhead"), stage=4, group="compile", devices=("cuda",), compiles=True,
            device_reason="reduce-overhead replays CUDA graphs"),
):
    register_variant(_variant)
# torchao quantization and ONNX Runtime (issue #11); their modules import torchao / onnxruntime lazily
from . import onnx_runtime as _onnx_runtime, torchao_variants as _torchao_variants  # noqa: E402
for _variant in _torchao_variants.variants(Variant) + _onnx_runtime.variants(Variant):
    register_variant(_variant)

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


# -- compile warm-up ----------------------------------------------------------
def _compiled_frames() -> int:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def warm_up_compiled(fn: Callable[[], object], *, quiet_calls: int = 2, max_calls: int = 20) -> dict:
    """Call ``fn`` until ``quiet_calls`` calls in a row compile nothing (dynamo's frame counter).

    Returns ``compile_time_s`` (wall time of the calls that compiled) and
    ``compile_calls`` (all calls made). Gives up after ``max_calls`` with
    ``compile_stable=False``.
    """
    compile_s = 0.0
    quiet = 0
    calls = 0
    with torch.inference_mode():
        while calls < max_calls and quiet < quiet_calls:
            before = _compiled_frames()
            started = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - started
            calls += 1
            if _compiled_frames() != before:
                compile_s += elapsed
                quiet = 0
            else:
                quiet += 1
    return {"compile_time_s": compile_s, "compile_calls": calls, "compile_stable": quiet >= quiet_calls}


# -- drift-robust speedup --------------------------------------------------------
#: Rounds of the paired comparison. 10 is the smallest count whose 95% order-statistic CI of the median
#: leaves out the two most extreme rounds (6 is the least that gives any interval).
PAIRED_ROUNDS = 10
#: Fewest rounds when calls are too slow for :data:`PAIRED_ROUNDS` within the time share (6: the least with a CI).
MIN_PAIRED_ROUNDS = 6
#: Share of each point's time cap (``timing.max_time_s``) given to the paired rounds when they run; the
#: unpaired timing of every row gets the rest, so a sweep takes about as long as an unpaired one did.
PAIRED_SHARE = 0.5


def unpaired_timing(timing: TimingConfig, paired_rounds: int) -> TimingConfig:
    """``timing`` with its cap cut to ``1 - PAIRED_SHARE`` of it when paired rounds follow (unchanged otherwise)."""
    if not paired_rounds:
        return timing
    cap = timing.max_time_s * (1 - PAIRED_SHARE)
    return dataclasses.replace(timing, max_time_s=cap, min_time_s=min(timing.min_time_s, cap))


def paired_speedup(baseline, variant, batch_size: int, seq_len: int | None = None, *, rounds: int = PAIRED_ROUNDS,
                   timing: TimingConfig | None = None, block_s: float | None = None) -> dict:
    """Speedup from alternating timing blocks of ``baseline`` and ``variant`` (see module docstring).

    Each side first makes one untimed call and one timed call that sizes its
    blocks to ``block_s`` seconds (default: ``PAIRED_SHARE * timing.max_time_s``
    spread over the ``2 * rounds`` blocks; at least one call). Rounds alternate
    the order (A B, B A, ...), so load drift on a shared machine hits both
    sides of every round alike and the per-round ratios stay comparable when
    absolute latencies do not. When ``block_s`` is derived from ``timing`` and
    one call of each side already overruns the share, the rounds drop toward
    :data:`MIN_PAIRED_ROUNDS` (``paired_rounds`` reports how many ran), so slow
    models keep a default run near its usual length. Returns the ``paired_*``
    columns plus the ``interference`` of the whole paired window.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidInputError(f"paired rounds must be an integer of at least 1, got {rounds!r}.")
    timing = timing or TimingConfig()
    adaptive = block_s is None
    block_s = PAIRED_SHARE * timing.max_time_s / (2 * rounds) if adaptive else block_s
    base_inputs = baseline.prepare_input(batch_size, seq_len)
    variant_inputs = variant.prepare_input(batch_size, seq_len)
    sides = {"base": lambda: baseline.forward(base_inputs), "variant": lambda: variant.forward(variant_inputs)}
    timer = make_timer(baseline.device)
    ratios = []
    with thread_count(timing.num_threads), torch.inference_mode(), gc_paused(), watch(baseline.device) as window:
        calls, round_s = {}, 0.0
        for side, fn in sides.items():
            fn()
            estimate_ms = max(timer.run_block(fn, 1)[0], 1e-4)
            calls[side] = max(1, min(10_000, int(block_s * 1e3 / estimate_ms)))
            round_s += calls[side] * estimate_ms / 1e3
        if adaptive and round_s * rounds > 2 * rounds * block_s and rounds > MIN_PAIRED_ROUNDS:
            rounds = max(MIN_PAIRED_ROUNDS, int(2 * rounds * block_s / round_s))
        for index in range(rounds):
            medians = {}
            for side in (("base", "variant") if index % 2 == 0 else ("variant", "base")):
                medians[side] = statistics.median(timer.run_block(sides[side], calls[side]))
            ratios.append(medians["base"] / medians["variant"])
    low, high = median_ci(ratios)
    return {"paired_speedup": statistics.median(ratios), "paired_speedup_ci_low": low,
            "paired_speedup_ci_high": high, "paired_rounds": rounds, **window.result.columns()}


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


def _reference_outputs(model: ModelWrapper, batch_sizes: list[int], seq_len: int | None) -> dict:
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


def _sweep_variant(model: ModelWrapper, spec: str, sizes: list[int], seq_len: int | None, references: dict,
                   timing: TimingConfig, measure_memory: bool, paired_rounds: int = 0) -> list[dict]:
    """All batch sizes of one variant (protocol of :func:`infopt.sweep.run_points`); never raises for a
    failure inside the variant."""
    points = [Point.of(model, size, seq_len, variant=spec) for size in sizes]
    try:
        variant = model if spec == BASELINE else apply_variant(model, spec)
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
        with recorded_failure(failed):  # compile warm-up and accuracy check, before timing
            inputs = variant.prepare_input(size, seq_len)
            if is_variant and variant.compiled:
                extra.update(warm_up_compiled(lambda: variant.forward(inputs)))
            if is_variant and getattr(variant, "export_time_s", None) is not None:  # ONNX export, like compile
                extra["compile_time_s"] = variant.export_time_s
            with torch.inference_mode():
                output = variant.forward(inputs)
            del inputs
            reference = references.get(size)
            if isinstance(reference, torch.Tensor):
                extra.update(compare_outputs(reference, output, model.task, tolerance))
            else:
                extra["tolerance"] = f"no reference: the {BASELINE} baseline failed ({reference})"
            del output
        if failed["status"] != "ok":
            return {**failed, **extra}
        row = benchmark_point(variant, size, seq_len, timing=unpaired_timing(timing, paired_rounds),
                              measure_memory=measure_memory)
        row.update(extra)
        if paired_rounds and is_variant and row["status"] == "ok":
            unpaired = Interference(bool(row["interference"]), row["interference_detail"])
            try:
                paired = paired_speedup(model, variant, size, seq_len, rounds=paired_rounds, timing=timing)
                pair_window = Interference(paired.pop("interference"), "paired rounds: " +
                                           paired.pop("interference_detail"))
                row.update(paired, **combine([unpaired, pair_window]).columns())
            except InvalidInputError:
                raise
            except Exception as error:  # noqa: BLE001 - the timed row stands; say why the pair is missing
                row["notes"] = f"paired timing failed: {describe_failure(error)[1]}"
        return row

    rows: list[dict] = []
    try:
        rows = run_points(points, measure_point, empty)
    finally:
        if is_variant:
            for row in rows:
                row["notes"] = "; ".join(variant.notes + ([row["notes"]] if row.get("notes") else []))
            compiled = variant.compiled
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
    if isinstance(model, VariantModel) or getattr(model, "variant", BASELINE) != BASELINE:
        raise InvalidInputError(f"run_variant_sweep needs the {BASELINE} baseline model, not a variant.")
    sizes = check_batch_sizes(batch_sizes)
    model.prepare_input(1, seq_len)  # validate seq_len before anything runs
    requested = default_variants(model, include_compile=include_compile) if variants is None else list(variants)
    specs = [BASELINE]
    for spec in requested:
        canonical = canonical_spec(spec)
        if canonical not in specs:
            specs.append(canonical)
    timing = timing or TimingConfig()
    references = _reference_outputs(model, sizes, seq_len)
    rows = []
    for spec in specs:
        rows.extend(_sweep_variant(model, spec, sizes, seq_len, references, timing, measure_memory, paired_rounds))
    df = pd.DataFrame(rows)
    for column in SWEEP_COLUMNS:
        if column not in df:
            df[column] = None
    return add_verdicts(add_speedups(df[list(SWEEP_COLUMNS)]))


def headline_columns(df: pd.DataFrame, by: str = "auto") -> tuple[tuple[str, str, str], str]:
    """``((speedup, ci_low, ci_high), measure name)`` of the headline speedup: paired where measured."""
    if by not in ("auto", "paired", "medians"):
        raise InvalidInputError(f"by must be 'auto', 'paired' or 'medians', got {by!r}.")
    paired = by == "paired" or (by == "auto" and "paired_speedup" in df and df["paired_speedup"].notna().any())
    if paired:
        return ("paired_speedup", "paired_speedup_ci_low", "paired_speedup_ci_high"), "paired rounds"
    return ("speedup_vs_baseline", "speedup_ci_low", "speedup_ci_high"), "ratio of medians"


def speedup_verdict(speedup: float, low: float, high: float) -> str | None:
    """``"faster"``, ``"slower"``, ``"no significant difference"`` (95% CI contains 1) or ``"too few samples"``."""
    if pd.isna(speedup):
        return None
    if pd.isna(low) or pd.isna(high):
        return "too few samples"
    if low <= 1 <= high:
        return "no significant difference"
    return "faster" if low > 1 else "slower"


def add_verdicts(df: pd.DataFrame, by: str = "auto") -> pd.DataFrame:
    """Fill ``speedup_verdict`` from the headline speedup of each variant row (baseline rows stay empty)."""
    df = df.copy()
    (speed, low, high), _ = headline_columns(df, by)
    values = [None if variant == BASELINE else speedup_verdict(*(pd.to_numeric(pd.Series([a, b, c])).tolist()))
              for variant, a, b, c in zip(df["variant"], df[speed], df[low], df[high])]
    df["speedup_verdict"] = pd.Series(values, index=df.index, dtype=object)
    return df


# -- recommendation -------------------------------------------------------------
def _format_speedup(speedup: float, low: float, high: float, median_ms: float, measure: str) -> str:
    interval = "no 95% CI: too few samples" if pd.isna(low) or pd.isna(high) else f"95% CI {low:.2f}-{high:.2f}x"
    return f"{speedup:.2f}x ({measure}; {interval}; median {median_ms:.4g} ms)"


#: Why :func:`recommend` keeps the baseline, in the order they are checked.
REFUSALS = {"busy": "machine busy during measurement", "samples": "not enough samples",
            "none": "no variant beats the baseline"}


def _flagged(frame: pd.DataFrame) -> pd.Series:
    if "interference" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["interference"].map(lambda value: value is True or value == 1 or str(value).lower() == "true")


def qualify(candidates: pd.DataFrame, speed: str, low: str, high: str,
            flagged: pd.Series) -> tuple[pd.DataFrame, str | None]:
    """The refusal rules, shared by :func:`recommend` and the generation recommendation.

    ``candidates``: accurate variant rows with a measured ``speed``;
    ``flagged``: per row, whether interference touched it. Returns the rows
    that may be recommended (not flagged, 95% CI present and above 1), fastest
    first, and ``None``; or no rows and the :data:`REFUSALS` text saying why.
    """
    speeds, lows, flagged = pd.to_numeric(candidates[speed]), pd.to_numeric(candidates[low]), flagged.astype(bool)
    has_ci = lows.notna() & pd.to_numeric(candidates[high]).notna()
    qualified = candidates.assign(_speed=speeds)[~flagged & has_ci & (lows > 1)]
    qualified = qualified.sort_values("_speed", ascending=False).drop(columns="_speed")
    if not qualified.empty:
        return qualified, None
    looks_faster = speeds[speeds > 1].index
    if len(looks_faster) == 0:
        return qualified, REFUSALS["none"]
    if flagged[looks_faster].any():
        return qualified, REFUSALS["busy"]
    if (~has_ci[looks_faster]).any():
        return qualified, REFUSALS["samples"]
    return qualified, REFUSALS["none"]


def recommend(df: pd.DataFrame, by: str = "auto") -> pd.DataFrame:
    """Per model, device and batch size: the fastest variant that is safe to recommend, or the baseline and why.

    A variant qualifies only if it ran (``status="ok"``), passed the accuracy
    guard, was not flagged for interference (nor, for the ratio of medians,
    was its baseline), and its headline speedup's 95% CI lies above 1 (a NaN
    CI or one containing 1 never qualifies). "Headline" is ``paired_speedup``
    where the sweep measured it (``by="auto"`` or ``"paired"``), else
    ``speedup_vs_baseline`` (``by="medians"``); ``speedup_measure`` names it.
    When nothing qualifies the baseline is kept and ``reason`` says why, from
    :data:`REFUSALS`: a faster-looking variant was flagged ("machine busy
    during measurement"), had no CI ("not enough samples"), or none beat the
    baseline. ``runner_up`` names the next qualifying variant.
    """
    (speed, low, high), measure = headline_columns(df, by)
    df = df.copy()
    df["_flagged"] = _flagged(df)
    rows = []
    for (model, device, size), group in df.groupby(["model", "device", "batch_size"], sort=True):
        ran = group["status"] == "ok"
        rejected = int((ran & (group["accuracy_ok"] == False)).sum())  # noqa: E712
        base = {"model": model, "device": device, "batch_size": int(size), "speedup_measure": measure}
        baseline = group[ran & (group["variant"] == BASELINE)]
        baseline_flagged = bool(baseline["_flagged"].any()) and measure == "ratio of medians"
        accurate = group[ran & (group["variant"] != BASELINE) & (group["accuracy_ok"] == True)  # noqa: E712
                         & group[speed].notna()]
        qualified, reason = qualify(accurate, speed, low, high, accurate["_flagged"] | baseline_flagged)
        if qualified.empty:
            kept = BASELINE if not baseline.empty else None
            text = (f"{model} on {device}, batch {size}: keep {BASELINE}; {reason}." if kept else
                    f"{model} on {device}, batch {size}: no variant (not even the baseline) ran and passed the "
                    "accuracy guard.")
            rows.append({**base, "variant": kept, "speedup_vs_baseline": 1.0 if kept else math.nan,
                         "speedup_ci_low": math.nan, "speedup_ci_high": math.nan,
                         "latency_p50_ms": baseline["latency_p50_ms"].iloc[0] if kept else math.nan,
                         "rel_error": math.nan, "cosine_similarity": math.nan, "distinguishable": False,
                         "runner_up": None, "rejected_for_accuracy": rejected, "reason": reason if kept else
                         "nothing ran", "recommendation": text})
            continue
        best = qualified.iloc[0]
        text = (f"{model} on {device}, batch {size}: use {best['variant']}, "
                f"{_format_speedup(best[speed], best[low], best[high], best['latency_p50_ms'], measure)} vs "
                f"{BASELINE}; rel. error {best['rel_error']:.2g}, worst-row cosine {best['cosine_similarity']:.5f}"
                f" ({str(best['tolerance']).split(';')[0]}).")
        rows.append({**base, "variant": best["variant"], "speedup_vs_baseline": best[speed],
                     "speedup_ci_low": best[low], "speedup_ci_high": best[high],
                     "latency_p50_ms": best["latency_p50_ms"], "rel_error": best["rel_error"],
                     "cosine_similarity": best["cosine_similarity"], "distinguishable": True,
                     "runner_up": qualified.iloc[1]["variant"] if len(qualified) > 1 else None,
                     "rejected_for_accuracy": rejected, "reason": None, "recommendation": text})
    return pd.DataFrame(rows)


__all__ = [
    "ACCURACY_COLUMNS", "BASELINE", "DEFAULT_COMBINATIONS", "SPEEDUP_DEFINITION", "SWEEP_COLUMNS", "VARIANTS",
    "VARIANT_COLUMNS", "UnknownVariantError", "Variant", "VariantError", "VariantModel", "VariantNotApplicableError",
    "MIN_PAIRED_ROUNDS", "PAIRED_ROUNDS", "PAIRED_SHARE", "REFUSALS", "add_speedups", "add_verdicts", "headline_columns",
    "speedup_verdict", "apply_variant", "paired_speedup", "unpaired_timing",
    "canonical_spec", "default_variants", "describe_variants", "list_variants",
    "parse_spec", "qualify", "recommend", "register_variant", "run_variant_sweep", "unavailable_reason",
    "unregister_variant", "warm_up_compiled",
]
