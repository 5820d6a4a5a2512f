"""A variant applied: a transformed *copy* of a model wrapper, used exactly like one.

:func:`apply_variant` transforms a copy, so the baseline model is never touched; the benchmark, profiler and
accuracy guard use the returned :class:`VariantModel` like any model wrapper.
"""

from __future__ import annotations

import contextlib
import copy
import time
import weakref
from typing import Callable

import torch
from torch import nn

from infopt.errors import InvalidInputError
from infopt.measure.timing import describe_failure
from infopt.models.base import Inputs, ModelWrapper
from infopt.optimize.accuracy import Tolerance, tolerance_for
from infopt.optimize.registry import (BASELINE, VARIANTS, VariantError, VariantNotApplicableError, application_order,
                                      parse_spec, unavailable_reason)

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
        self.parked = False               # the baseline's weights are in host memory while this variant lives

    def __getattr__(self, name: str):
        if name in ("wrapper", "__setstate__") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.wrapper, name)

    @property
    def tolerance(self) -> Tolerance:
        """The accuracy tolerance that applies (see :func:`infopt.optimize.accuracy.tolerance_for`)."""
        return tolerance_for(self.device, self.reduced_precision)

    def prepare_input(self, batch_size: int, seq_len: int | None = None, *, seed: int | None = None) -> Inputs:
        return self.convert_inputs(self.wrapper.prepare_input(batch_size, seq_len, seed=seed))

    def convert_inputs(self, inputs: Inputs) -> Inputs:
        """The variant's input casts (e.g. float inputs to bf16 for bf16 weights), on any batch."""
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
        """Bytes of the transformed weights as stored (tied tensors counted once).

        A quantized tensor subclass (torchao's int8 / int4 / float8) counts its packed data, scales and
        zero points (``__tensor_flatten__``), not its logical ``numel`` at the float size.
        """
        seen: set[tuple] = set()
        alive: list[torch.Tensor] = []  # ids are keys only while their objects live (``.data`` is a new one each time)

        def size(value) -> int:
            if isinstance(value, torch.Tensor):
                data = value.data if isinstance(value, nn.Parameter) else value
                if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):
                    # A subclass's own storage is counted through its plain inner tensors, deduplicated below.
                    return sum(size(getattr(data, name, None)) for name in data.__tensor_flatten__()[0])
                alive.append(value)
                key = (value.data_ptr(), value.numel(), value.dtype) if not value.is_quantized else (id(value),)
                if key in seen:
                    return 0
                seen.add(key)
                return value.numel() * value.element_size()
            if isinstance(value, (tuple, list)):
                return sum(size(item) for item in value)
            return 0

        return sum(size(value) for value in self.eager_module.state_dict(keep_vars=True).values())

    @contextlib.contextmanager
    def baseline_parked(self, to: str | torch.device = "cpu"):
        """The baseline's weights off the device for the block (then back), e.g. while this variant's peak
        memory is measured: on a GPU the resident fp32 baseline would otherwise count in every variant's peak.
        A no-op when the baseline is already there (or parked for the variant's life by ``park_baseline``)."""
        reference = self.reference
        home = reference.device
        if self.parked or torch.device(to) == torch.device(home):
            yield
            return
        reference.module.to(to)
        try:
            yield
        finally:
            reference.module.to(home)

    @contextlib.contextmanager
    def baseline_resident(self):
        """The baseline back on its device for the block when it is parked (paired rounds need both)."""
        if not self.parked:
            yield
            return
        self.reference.module.to(self.reference.device)
        try:
            yield
        finally:
            self.reference.module.to("cpu")

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


def copy_through_host(model: ModelWrapper, park: bool = False) -> ModelWrapper:
    """A deep copy of ``model`` whose weights are copied into host memory, then moved to the model's device.

    Each parameter and buffer is copied to the CPU (tied ones once, through deepcopy's memo), so no second
    set of weights is allocated on the device by the copy itself; with ``park`` the baseline's weights
    move to the CPU first, so the device holds one model at a time.
    """
    device = torch.device(model.device)
    if device.type == "cpu":
        return copy.deepcopy(model)
    memo: dict[int, object] = {}
    for parameter in model.module.parameters():
        memo[id(parameter)] = nn.Parameter(parameter.detach().to("cpu", copy=True),
                                           requires_grad=parameter.requires_grad)
    for buffer in model.module.buffers():
        memo[id(buffer)] = buffer.detach().to("cpu", copy=True)
    copied = copy.deepcopy(model, memo)
    if park:
        model.module.to("cpu")
    copied.module.to(device)
    return copied


def apply_variant(model: ModelWrapper, spec: str, *, park_baseline: bool = False) -> VariantModel:
    """Transform a copy of ``model`` by ``spec`` (e.g. ``"bf16+channels-last"``).

    The copy's weights pass through host memory (:func:`copy_through_host`). With ``park_baseline`` on a
    GPU, the baseline's weights move to host memory before the copy moves to the device and come back
    when the variant is garbage-collected: the device never holds both (a large model fits once, and the
    variant's peak memory is its own); use :meth:`VariantModel.baseline_resident` around paired rounds.

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
    parks = park_baseline and torch.device(model.device).type != "cpu"
    copied = copy_through_host(model, park=parks)
    result = VariantModel(copied, model, "+".join(steps))
    if parks:
        result.parked = True
        weakref.finalize(result, model.module.to, model.device)  # the baseline returns with the variant's end
    started = time.perf_counter()
    try:
        with torch.no_grad():
            for name in application_order(steps):
                VARIANTS[name].transform(result)
    except Exception as error:  # noqa: BLE001 - re-raised with the variant named
        if parks:
            model.module.to(model.device)
        raise VariantError(f"Variant '{name}' failed on {model.name}: {describe_failure(error)[1]}") from error
    result.transform_time_s = time.perf_counter() - started
    result.variant = "+".join(steps)
    result.wrapper.variant = result.variant
    return result



__all__ = ["VariantModel", "apply_variant", "copy_through_host"]
