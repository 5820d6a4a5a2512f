"""Variants that stay inside eager PyTorch: the baseline, attention kernels, weight casts, autocast, memory
layout and the legacy dynamic int8 path."""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from infopt.devices import device_kind
from infopt.models.base import Inputs, ModelWrapper
from infopt.optimize.applied import VariantModel
from infopt.optimize.registry import BASELINE, Variant

def _identity(model: VariantModel) -> None:
    """The baseline: nothing changes."""


def cast_float_inputs(dtype: torch.dtype) -> Callable[[Inputs], Inputs]:
    """An input transform casting every float tensor to ``dtype`` (integer ids and masks stay as they are)."""
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
        model.input_transforms.append(cast_float_inputs(dtype))
    return transform


def gpt2_conv1d_to_linear(module: nn.Module) -> int:
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
            replaced += gpt2_conv1d_to_linear(child)
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
    converted = gpt2_conv1d_to_linear(model.wrapper.module)
    if converted:
        model.notes.append(f"{converted} GPT-2 Conv1D projections converted to nn.Linear before quantization")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.ao.quantization.quantize_dynamic(model.wrapper.module, {nn.Linear}, dtype=torch.qint8, inplace=True)
    if any(issubclass(w.category, DeprecationWarning) for w in caught):
        model.notes.append("deprecated: torch.ao.quantization.quantize_dynamic (torchao-int8-dynamic is its "
                           "successor; both are measured side by side)")
    model.eager_module = model.wrapper.module


def has_image_input(model: ModelWrapper) -> str | None:
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


GPU_KINDS = ("cuda", "mps")


def variants() -> list[Variant]:
    """This backend's variants, in registry order."""
    return [
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
                stage=1, group="weights", devices=GPU_KINDS, reduced_precision=True,
                device_reason="CPUs have no fast fp16 matmul kernels (use bf16)"),
        Variant("bf16", "autocast to bfloat16 (fp32 weights; matmuls/convolutions in bf16)",
                _autocast(torch.bfloat16), stage=3, group="autocast", reduced_precision=True),
        Variant("fp16", "autocast to float16 (fp32 weights; matmuls/convolutions in fp16)", _autocast(torch.float16),
                stage=3, group="autocast", devices=GPU_KINDS, reduced_precision=True,
                device_reason="CPUs have no fast fp16 matmul kernels (use bf16)"),
        Variant("channels-last", "NHWC memory layout for weights and images (faster convolutions)", _channels_last,
                stage=2, group="layout", check=has_image_input),
    ]


__all__ = ["GPU_KINDS", "cast_float_inputs", "gpt2_conv1d_to_linear", "has_image_input", "variants"]
