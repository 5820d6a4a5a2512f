"""torchao quantization variants: the successor of the deprecated ``torch.ao.quantization.quantize_dynamic``.

Registered by :mod:`infopt.optimize` (group ``weights``, so they never stack
with a cast or the legacy ``int8-dynamic``):

* ``torchao-int8-weight-only``: int8 weights (per-channel), activations stay
  float (``Int8WeightOnlyConfig``); CPU and CUDA.
* ``torchao-int8-dynamic``: int8 weights and int8 activations quantized per
  call (``Int8DynamicActivationInt8WeightConfig``); CPU and CUDA.
* ``torchao-int4-weight-only``: int4 grouped weights on bf16 activations
  (``Int4WeightOnlyConfig``); CUDA only (tinygemm kernels).
* ``torchao-float8``: float8 dynamic activations and weights
  (``Float8DynamicActivationFloat8WeightConfig``); CUDA with compute
  capability 8.9 or newer (Ada/Hopper float8 tensor cores).

torchao is imported only when a variant is checked or applied: a missing or
broken install makes these variants ``n/a`` with the reason, never an import
error at startup. GPT-2's ``Conv1D`` projections are converted to
``nn.Linear`` first, as for ``int8-dynamic``, so both int8 paths quantize the
same layers and their comparison is fair.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
from torch import nn

from infopt.optimize.registry import Variant
from infopt.optimize.torch_variants import cast_float_inputs, gpt2_conv1d_to_linear


#: variant name -> (torchao config class name, config kwargs, device kinds, description)
TORCHAO_VARIANTS: dict[str, tuple[str, dict, tuple[str, ...], str]] = {
    "torchao-int8-weight-only": ("Int8WeightOnlyConfig", {}, ("cpu", "cuda"),
                                 "torchao int8 weight-only quantization of every nn.Linear (activations stay float)"),
    "torchao-int8-dynamic": ("Int8DynamicActivationInt8WeightConfig", {}, ("cpu", "cuda"),
                             "torchao int8 weights + int8 dynamic activations for every nn.Linear (the successor "
                             "of int8-dynamic)"),
    # tile_packed_to_4d: torch's own tinygemm kernel (the "plain" default needs the separate mslk package)
    "torchao-int4-weight-only": ("Int4WeightOnlyConfig", {"group_size": 128, "int4_packing_format": "tile_packed_to_4d"},
                                 ("cuda",),
                                 "torchao int4 grouped (128) weight-only quantization of every nn.Linear, bf16 "
                                 "activations"),
    "torchao-float8": ("Float8DynamicActivationFloat8WeightConfig", {}, ("cuda",),
                       "torchao float8 (e4m3) dynamic activations and weights for every nn.Linear whose sizes are "
                       "multiples of 16 (the others stay float; the notes name them)"),
}

DEVICE_REASONS = {
    "torchao-int4-weight-only": "torchao's int4 weight-only kernels (tinygemm) are CUDA kernels",
    "torchao-float8": "float8 matmuls need CUDA tensor cores of compute capability 8.9 or newer",
}


@functools.lru_cache(maxsize=1)
def torchao_import_error() -> str | None:
    """Why torchao cannot be used here (``None`` when it imports)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao.quantization  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any failure means "not usable", reported as n/a
        return f"torchao is not usable in this environment ({type(error).__name__}: {str(error).splitlines()[0]})"
    return None


def _linear_kinds() -> tuple[type, ...]:
    try:
        from transformers.pytorch_utils import Conv1D
        return (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover - transformers always provides it today
        return (nn.Linear,)


def check(name: str) -> Callable:
    """Applicability of torchao variant ``name`` to a model (beyond the device kind)."""
    def reason(model) -> str | None:
        error = torchao_import_error()
        if error:
            return f"{name}: {error}."
        if not any(isinstance(m, _linear_kinds()) for m in model.module.modules()):
            return f"{name} quantizes nn.Linear layers and {model.name} has none."
        if name == "torchao-float8":
            major, minor = torch.cuda.get_device_capability(model.device)
            if (major, minor) < (8, 9):
                return (f"torchao-float8 needs compute capability 8.9 or newer (Ada/Hopper float8 tensor cores); "
                        f"this GPU is {major}.{minor}.")
        if name == "torchao-int4-weight-only":
            small = [n for n, m in model.module.named_modules() if isinstance(m, nn.Linear) and m.in_features % 128]
            if small and len(small) == sum(isinstance(m, nn.Linear) for m in model.module.modules()):
                return "torchao-int4-weight-only needs nn.Linear input sizes divisible by its group size 128."
        return None
    return reason


def transform(name: str) -> Callable:
    """The in-place transformation of a :class:`infopt.optimize.applied.VariantModel` for torchao variant ``name``."""
    config_name, kwargs, _, _ = TORCHAO_VARIANTS[name]

    def apply(model) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao import quantization as tq  # noqa: PLC0415 - optional dependency, lazy
        converted = gpt2_conv1d_to_linear(model.wrapper.module)
        if converted:
            model.notes.append(f"{converted} GPT-2 Conv1D projections converted to nn.Linear before quantization")
        module = model.wrapper.module
        if name == "torchao-int4-weight-only":  # int4 tinygemm runs on bf16 activations
            module.to(torch.bfloat16)
            model.input_transforms.append(cast_float_inputs(torch.bfloat16))
            filter_fn = lambda m, _fqn: isinstance(m, nn.Linear) and m.in_features % 128 == 0  # noqa: E731
        elif name == "torchao-float8":  # float8 matmuls need both sizes multiples of 16 (gpt2's lm_head is not)
            filter_fn = lambda m, _fqn: (isinstance(m, nn.Linear) and m.in_features % 16 == 0  # noqa: E731
                                         and m.out_features % 16 == 0)
        else:
            filter_fn = None
        config_class = getattr(tq, config_name)
        # never let torchao change torch._inductor's global config: later compiled variants would inherit it
        extra = {"set_inductor_config": False} if "set_inductor_config" in getattr(
            config_class, "__dataclass_fields__", {}) else {}
        tq.quantize_(module, config_class(**kwargs, **extra), filter_fn=filter_fn)
        model.notes.append(f"torchao {config_name}: {converted_layers_note(module)}")
        model.eager_module = module
    return apply


def is_quantized_weight(weight) -> bool:
    """Whether a weight is a torchao tensor subclass (quantized), not a plain float tensor."""
    data = weight.data if isinstance(weight, nn.Parameter) else weight
    return isinstance(data, torch.Tensor) and type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__")


def converted_layers_note(module: nn.Module, named: int = 8) -> str:
    """Which ``nn.Linear`` layers quantization converted: ``"48 of 49 nn.Linear converted; kept float: lm_head"``."""
    linears = [(fqn, m) for fqn, m in module.named_modules() if isinstance(m, nn.Linear)]
    kept = [fqn or "(root)" for fqn, m in linears if not is_quantized_weight(m.weight)]
    text = f"{len(linears) - len(kept)} of {len(linears)} nn.Linear converted"
    if kept:
        text += "; kept float: " + ", ".join(kept[:named]) + (f" and {len(kept) - named} more" if len(kept) > named else "")
    return text


def variants() -> list[Variant]:
    """This backend's variants, in registry order."""
    return [Variant(name, description, transform(name), stage=1, group="weights", devices=devices,
                    device_reason=DEVICE_REASONS.get(name, "torchao has no kernels for it there"),
                    reduced_precision=True, check=check(name))
            for name, (_, _, devices, description) in TORCHAO_VARIANTS.items()]


__all__ = ["DEVICE_REASONS", "TORCHAO_VARIANTS", "check", "converted_layers_note", "is_quantized_weight",
           "torchao_import_error", "transform", "variants"]
